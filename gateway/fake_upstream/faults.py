"""The part of answering a request that both wire formats share: the scripted delay, status
faults, hangs, hand-off to the format's streamer, dropped connections and malformed bodies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.fake_upstream.behaviour import STATUS_FAULTS, Turn, pause

__all__ = ["run_faults"]

Streamer = Callable[[web.Request, Turn], Awaitable[web.StreamResponse | None]]


async def run_faults(
    request: web.Request, turn: Turn, fault_response: Callable[[Turn], web.Response], stream: Streamer
) -> tuple[bool, web.StreamResponse | None]:
    """(True, answer) when this already answered (answer None: connection dropped on purpose);
    (False, None) when the format should build its normal non-streaming body."""
    b = turn.behaviour
    await pause(b.latency_ms)
    if b.fault_service_tier is not None and turn.body.get("service_tier") != b.fault_service_tier:
        turn.fault = None  # the fault is for another service tier's calls
    fault = turn.fault
    if fault in STATUS_FAULTS:
        return True, fault_response(turn)
    if fault == "timeout":
        await pause(b.hang_s * 1000.0)
    if turn.body.get("stream"):
        return True, await stream(request, turn)
    if fault == "drop":
        if request.transport is not None:
            request.transport.close()
        return True, None
    if fault == "malformed":
        return True, web.Response(body=b'{"not json', content_type="application/json")
    return False, None
