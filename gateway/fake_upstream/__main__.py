"""CLI: ``python -m gateway.fake_upstream --host 127.0.0.1 --port 9000 [--script FILE.json]``.

The script file is either an object ``{"<model>": {behaviour...}, ...}`` or a list of
``{"model": "<model>", ...behaviour}`` objects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import orjson

from gateway.fake_upstream.behaviour import Behaviour
from gateway.fake_upstream.server import FakeUpstream


def load_script(path: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse a script file into (model, behaviour-dict) pairs."""
    with open(path, "rb") as fh:
        data = orjson.loads(fh.read())
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = []
        for entry in data:
            if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
                raise ValueError("each script list entry needs a string 'model'")
            fields = dict(entry)
            items.append((fields.pop("model"), fields))
    else:
        raise ValueError("script file must hold a JSON object or list")
    for model, fields in items:
        if not isinstance(fields, dict):
            raise ValueError(f"behaviour for {model!r} must be an object")
    return items


async def serve(host: str, port: int, script: list[tuple[str, dict[str, Any]]]) -> None:
    upstream = FakeUpstream(host, port)
    for model, fields in script:
        upstream.script(model, fields)
    await upstream.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"fake upstream listening on {upstream.url}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await upstream.stop()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.fake_upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--script", metavar="FILE.json", help="behaviour script to preload")
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script) if args.script else []
        for _model, fields in script:  # validate before binding
            Behaviour.from_dict(fields)
    except (OSError, ValueError) as exc:
        parser.error(f"bad --script: {exc}")
    with contextlib.suppress(KeyboardInterrupt):
        _run(serve(args.host, args.port, script))
    return 0


if __name__ == "__main__":
    sys.exit(main())
