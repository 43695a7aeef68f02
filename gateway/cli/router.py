"""`gateway router train` and `gateway router eval`: the learned `auto` tier's model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def _prices(values: list[str]) -> dict[str, tuple[str, str]]:
    prices = {}
    for value in values:
        model, _, pair = value.partition("=")
        inp, _, out = pair.partition(",")
        if not (model and inp and out):
            raise SystemExit(f"gateway: --price takes MODEL=IN,OUT (USD per million tokens), got '{value}'")
        prices[model.lower()] = (inp, out)
    return prices


def _load(args: argparse.Namespace) -> list[Any]:
    from gateway.money.price_table import load_price_table
    from gateway.routing.auto.data import load_outcomes

    table = load_price_table()
    return [load_outcomes(Path(f), table, (args.strong, args.weak), _prices(args.price)) for f in args.data]


def _pct(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "unreachable"
    text = f"{100 * value:5.1f} %"
    return text + (f" [{100 * interval[0]:.1f}-{100 * interval[1]:.1f}]" if interval else "")


def print_table(document: dict[str, Any]) -> None:
    for d in document["datasets"]:
        print(f"\n{d['file']}: {d['n']} prompts, reference {d['reference']}")
        print("  share of the reference's cost to reach its quality (95 % bootstrap interval)")
        print(f"  {'':10} {'90 %':>24} {'95 %':>24} {'99 %':>24}")
        for method in ("learned", "static", "random", "oracle"):
            cells = [_pct(d[method][lv], d["intervals"][method][lv]) for lv in ("0.90", "0.95", "0.99")]
            print(f"  {method:10} " + " ".join(f"{c:>24}" for c in cells))
        print(f"  quality floor {d['floor']:g}: reached {_pct(d['floor_reached'], d['floor_reached_interval'])} "
              f"of the reference's quality for {_pct(d['cost_at_floor']).strip()} of its cost")
        if d.get("in_training"):
            print("  (in-sample: the router was trained on this file; its held-out figures, measured in training:")
            held = d.get("held_out") or {}
            for method in ("learned", "random", "oracle"):
                cells = [_pct((held.get(method) or {}).get(lv)) for lv in ("0.90", "0.95", "0.99")]
                print(f"  {method:10} " + " ".join(f"{c:>24}" for c in cells))
            if held.get("floor_reached") is not None:
                reached = _pct(held["floor_reached"]).strip()
                print(f"  quality floor {held.get('floor', d['floor']):g}: reached {reached})")


def train(args: argparse.Namespace) -> int:
    import numpy as np

    from gateway.routing.auto.data import read_prompts
    from gateway.routing.auto.options import TrainingConfig
    from gateway.routing.auto.train import train
    from gateway.tokens.counter import TokenCounter

    try:
        sets = _load(args)
        excluded = {prompt for f in args.exclude for prompt in read_prompts(Path(f))}
    except (OSError, ValueError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    sets = [s.subset(np.array([i for i, p in enumerate(s.prompts) if p not in excluded], dtype=np.int64))
            for s in sets]
    config = TrainingConfig(folds=args.folds, seed=args.seed, min_count=args.min_count, reg_head=args.reg_head,
                            reg_generic=args.reg_generic)
    model, held_out = train(sets, TokenCounter(), config, lambda line: print(line, file=sys.stderr),
                            Path(args.held_out) if args.held_out else None)
    model.save(Path(args.out))
    print(f"wrote {args.out} ({Path(args.out).stat().st_size:,} bytes); figures on held-out folds:")
    print(json.dumps(held_out, indent=2) if args.json else "", end="")
    if not args.json:
        print_table(held_out)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from gateway.routing.auto.evaluate import evaluate
    from gateway.tokens.counter import TokenCounter
    from routing_policies.learned.model import SHIPPED, RouterModel

    try:
        model = RouterModel.load(Path(args.router) if args.router else SHIPPED)
        sets = _load(args)
        document = evaluate(model, sets, TokenCounter(), args.seed, args.floor)
    except (OSError, ValueError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print_table(document)
    return 0


def add_parser(sub: Any) -> None:
    from gateway.routing.auto.options import TrainingConfig

    router = sub.add_parser("router", help="train or evaluate the learned router of the auto tier")
    commands = router.add_subparsers(dest="router_command", required=True)
    for name, func, text in (("train", train, "fit the router on per-prompt outcome files (held-out folds)"),
                             ("eval", evaluate, "replay the router as shipped on per-prompt outcome files")):
        p = commands.add_parser(name, help=text)
        p.add_argument("--data", action="append", required=True, help="an outcome file (csv or csv.gz); repeatable")
        p.add_argument("--json", action="store_true", help="print the figures as JSON")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--strong", default="gpt-4-1106-preview", help="the strong model of a q_strong/q_weak file")
        p.add_argument("--weak", default="mixtral-8x7b-instruct-v0.1", help="the weak model of such a file")
        p.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT",
                       help="USD per million tokens for a model the price table lacks")
        p.set_defaults(func=func)
    commands.choices["train"].add_argument("--out", default="router.npz", help="where to write the router file")
    commands.choices["train"].add_argument("--held-out", metavar="FILE",
                                           help="also write the held-out predictions (npz), for analysis")
    commands.choices["train"].add_argument("--exclude", action="append", default=[], metavar="FILE",
                                           help="leave out the rows whose prompt is in this outcome file")
    defaults = TrainingConfig()
    train_options = commands.choices["train"]
    train_options.add_argument("--folds", type=int, default=defaults.folds)
    train_options.add_argument("--min-count", type=int, default=defaults.min_count,
                               help="prompts a feature must appear in to be kept")
    train_options.add_argument("--reg-head", type=float, default=defaults.reg_head,
                               help="L2 strength of each model's own head (lower for a small data set)")
    train_options.add_argument("--reg-generic", type=float, default=defaults.reg_generic,
                               help="L2 strength of the generic head")
    commands.choices["eval"].add_argument("--router", help="a router file (default: the one shipped)")
    commands.choices["eval"].add_argument("--floor", type=float, default=0.95, help="the quality floor to check")
