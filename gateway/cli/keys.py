"""`gateway keys create|list|get|update|revoke` and `gateway teams set|list`: the admin API of a
running gateway, from the command line. The master key comes from `--master-key` or
GATEWAY_MASTER_KEY, the gateway from `--url` or GATEWAY_URL (default http://127.0.0.1:4000)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["add_parsers"]

_FIELDS = (("alias", str), ("team", str), ("user", str), ("budget-usd", str), ("budget-period", str),
           ("rpm", int), ("tpm", int), ("expires-at", str))


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    import httpx

    master = args.master_key or os.environ.get("GATEWAY_MASTER_KEY")
    if not master:
        print("gateway: set GATEWAY_MASTER_KEY or pass --master-key", file=sys.stderr)
        return 2
    try:
        resp = httpx.request(method, args.url.rstrip("/") + path, json=body, timeout=10,
                             headers={"Authorization": f"Bearer {master}"})
    except httpx.HTTPError as exc:
        print(f"gateway: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(resp.json(), indent=2))
    return 0 if resp.is_success else 1


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag, _ in _FIELDS:
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            out[flag.replace("-", "_")] = value
    for name in ("models", "tiers"):
        value = getattr(args, name)
        if value is not None:
            out[name] = [v for v in value.split(",") if v]
    return out


def _keys(args: argparse.Namespace) -> int:
    action = args.action
    if action == "create":
        return _call(args, "POST", "/admin/keys", _fields(args))
    if action == "list":
        return _call(args, "GET", "/admin/keys")
    if not args.id:
        print(f"gateway: 'keys {action}' needs a key id", file=sys.stderr)
        return 2
    if action == "update":
        return _call(args, "PATCH", f"/admin/keys/{args.id}", _fields(args))
    return _call(args, "DELETE" if action == "revoke" else "GET", f"/admin/keys/{args.id}")


def _teams(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _call(args, "GET", "/admin/teams")
    body = {"budget_usd": args.budget_usd, "budget_period": args.budget_period or "total"}
    return _call(args, "PUT", f"/admin/teams/{args.name}", body)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:4000"))
    p.add_argument("--master-key", help="default: GATEWAY_MASTER_KEY")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("keys", help="manage virtual keys through a running gateway's admin API")
    p.add_argument("action", choices=["create", "list", "get", "update", "revoke"])
    p.add_argument("id", nargs="?", help="key id (get, update, revoke)")
    for flag, kind in _FIELDS:
        p.add_argument(f"--{flag}", type=kind)
    p.add_argument("--models", help="comma-separated model names the key may use")
    p.add_argument("--tiers", help="comma-separated tier names the key may use")
    _common(p)
    p.set_defaults(func=_keys)
    p = sub.add_parser("teams", help="set or list team budgets through a running gateway's admin API")
    p.add_argument("action", choices=["set", "list"])
    p.add_argument("name", nargs="?")
    p.add_argument("--budget-usd")
    p.add_argument("--budget-period", choices=["daily", "weekly", "monthly", "total"])
    _common(p)
    p.set_defaults(func=_teams)
