"""`gateway spend [--from D] [--to D] [--group-by model|key|team|tier|day] [--source stats|ledger]`
and `gateway spend export --format jsonl|csv [--from D] [--to D] [--out FILE]`: a running
gateway's spend, through its admin API (`/admin/spend`, `/admin/ledger`). Master key and URL as
for `gateway keys`: `--master-key` or GATEWAY_MASTER_KEY, `--url` or GATEWAY_URL."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["add_parser"]


def _master(args: argparse.Namespace) -> str | None:
    master = args.master_key or os.environ.get("GATEWAY_MASTER_KEY")
    if not master:
        print("gateway: set GATEWAY_MASTER_KEY or pass --master-key", file=sys.stderr)
    return master


def _range(args: argparse.Namespace) -> dict[str, str]:
    return {k: v for k, v in (("from", args.from_day), ("to", args.to_day)) if v}


def _show(args: argparse.Namespace, master: str) -> int:
    import httpx

    params = {**_range(args), "group_by": args.group_by, "source": args.source}
    try:
        resp = httpx.get(args.url.rstrip("/") + "/admin/spend", params=params, timeout=30,
                         headers={"Authorization": f"Bearer {master}"})
    except httpx.HTTPError as exc:
        print(f"gateway: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    body = resp.json()
    if args.json or not resp.is_success:
        print(json.dumps(body, indent=2))
        return 0 if resp.is_success else 1
    print(f"spend {body['from']} to {body['to']} by {body['group_by']} ({body['source']})")
    width = max([len(row["group"]) for row in body["data"]] + [len(args.group_by)])
    for row in body["data"]:
        print(f"{row['group']:<{width}}  {row['spend_usd']:>14.6f}")
    if body.get("total_usd") is not None:
        print(f"{'total':<{width}}  {body['total_usd']:>14.6f}")
    return 0


def _export(args: argparse.Namespace, master: str) -> int:
    import httpx

    params = {**_range(args), "format": args.format}
    out = open(args.out, "wb") if args.out else sys.stdout.buffer  # noqa: SIM115
    try:
        with httpx.stream("GET", args.url.rstrip("/") + "/admin/ledger", params=params, timeout=300,
                          headers={"Authorization": f"Bearer {master}"}) as resp:
            if not resp.is_success:
                print(f"gateway: {resp.status_code} {resp.read().decode(errors='replace')}", file=sys.stderr)
                return 1
            for chunk in resp.iter_bytes():
                out.write(chunk)
    except httpx.HTTPError as exc:
        print(f"gateway: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.out:
            out.close()
        else:
            out.flush()
    return 0


def _spend(args: argparse.Namespace) -> int:
    master = _master(args)
    if not master:
        return 2
    return _export(args, master) if args.action == "export" else _show(args, master)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("spend", help="spend by group, or export the spend ledger, from a running gateway")
    p.add_argument("action", nargs="?", choices=["export"], help="export the ledger's records")
    p.add_argument("--from", dest="from_day", help="first UTC day, e.g. 2026-11-01 (default: 29 days before --to)")
    p.add_argument("--to", dest="to_day", help="last UTC day, included (default: today)")
    p.add_argument("--group-by", default="model", choices=["model", "key", "team", "tier", "day"])
    p.add_argument("--source", default="ledger", choices=["stats", "ledger"],
                   help="the spend ledger (default) or the daily aggregates")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.add_argument("--format", default="jsonl", choices=["jsonl", "csv"], help="export format")
    p.add_argument("--out", help="export to this file (default: stdout)")
    p.add_argument("--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:4000"))
    p.add_argument("--master-key", help="default: GATEWAY_MASTER_KEY")
    p.set_defaults(func=_spend)
