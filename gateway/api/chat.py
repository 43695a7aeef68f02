"""POST /v1/chat/completions: validate, resolve the model, call its provider, price the usage."""

from __future__ import annotations

import hashlib
from time import perf_counter
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.errors import error_response, unexpected_error
from gateway.api.sse_response import SSEResponse
from gateway.cache.prefix_cache import add_breakpoint
from gateway.cache.response_cache import lookup, serve_hit, store
from gateway.cache.response_key import cache_key, cache_policy
from gateway.config.settings import ModelSpec
from gateway.errors import GatewayError
from gateway.pipeline.exchange import Call, read_body, request_id
from gateway.pipeline.failover import fail_over, first_attempt
from gateway.pipeline.relay import start_stream
from gateway.pipeline.request import parse_chat_request
from gateway.pipeline.settle import settle
from gateway.providers.base import Provider
from gateway.state import AppState

__all__ = ["PATH", "chat_completions"]

PATH = "/v1/chat/completions"


def _completion_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    for choice in body.get("choices") or ():
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            parts.append(message["content"])
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {}
            parts.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))
    return "".join(parts)


def _tenant(call: Call, request: Request) -> str:
    """Whose cache entries these are: the key's team, else the key, else the caller's own bearer
    token (hashed), so two tenants never see each other's answers."""
    key = call.grant.key
    if key is not None:
        return f"team:{key.team}" if key.team else f"key:{key.id}"
    credential = request.headers.get("authorization", "")
    return "bearer:" + hashlib.sha256(credential.encode()).hexdigest()


async def chat_completions(request: Request) -> Response | SSEResponse:
    """POST /v1/chat/completions, dispatched by `gateway.app.GatewayASGI` (not a FastAPI route,
    to keep the framework's per-request cost off the hot path). Never raises: failures become
    OpenAI-shaped error responses here."""
    state: AppState = request.app.state.gw
    call = Call(state, request_id(request))
    request.state.request_id = call.request_id
    try:
        call.grant = await state.access.authenticate(request.headers.get("authorization"))
        call.team = call.grant.team_label
        body = parse_chat_request(await read_body(request, state.settings.max_body_bytes))
        return await _dispatch(call, request, body)
    except GatewayError as exc:
        call.failed(exc)
        return error_response(call.request_id, exc, state.secrets)
    except Exception:
        internal = unexpected_error(PATH)
        call.failed(internal)
        return error_response(call.request_id, internal, state.secrets)


async def _dispatch(call: Call, request: Request, body: dict[str, Any]) -> Response | SSEResponse:
    """By name: one attempt. By tier: the plan's candidates in turn. Access checks come first."""
    state, grant, access = call.state, call.grant, call.state.access
    stream = bool(body.get("stream"))
    policy = cache_policy(body, request.headers.get("x-gateway-cache"))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    inputs: dict[str, int] = {}  # counted input tokens per model, for budget holds (only with a key)

    async def attempt(spec: ModelSpec, deadline: float | None = None) -> Response | SSEResponse:
        call.spec, call.body = spec, {**body, "model": spec.upstream_model}
        add_breakpoint(call.prefix, spec, call.body)
        if state.response_cache is not None and (policy.read or policy.write):
            call.cache_key, call.cache_write = cache_key(_tenant(call, request), spec.name, body), policy.write
            entry = await lookup(call) if policy.read else None
            if entry is not None:
                return serve_hit(call, entry, stream, include_usage)
        await access.reserve(grant, spec, inputs.get(spec.name, 0), max_tokens)
        provider = state.providers[spec.wire]
        try:
            return await (start_stream(call, provider, deadline) if stream else _complete(call, provider, deadline))
        except BaseException:
            await access.release(grant)
            raise

    tier = state.router.tier(body["model"])
    if tier is None:
        spec = state.resolve_model(body["model"])
        access.check(grant, spec.name, None)
        if grant.key is not None:
            inputs[spec.name] = state.tokens.count_messages(body["messages"], spec.upstream_model, body.get("tools"))
            access.admit(grant, inputs[spec.name] + (max_tokens or state.settings.routing.default_output_tokens))
        call.prefix = await state.prefix.plan([spec], body)
        return await attempt(spec)
    access.check(grant, None, tier.name)
    call.tier = tier.name
    allowed = grant.key.models if grant.key is not None else None
    plan = await state.router.plan(tier, body, state.settings.routing.max_attempts, allowed)
    if grant.key is not None:  # budget holds count the prompt per model; rate limits the first estimate
        inputs.update((c.model, c.input_tokens) for c in plan.ranked)
        access.admit(grant, plan.first.input_tokens + plan.first.expected_output_tokens)
    call.baseline, call.prefix = plan.baseline, plan.prefix
    spec, deadline = first_attempt(call, plan)
    try:
        return await attempt(spec, deadline)
    except GatewayError as exc:
        return await fail_over(call, plan, attempt, exc, deadline)


async def _complete(call: Call, provider: Provider, deadline: float | None) -> Response:
    spec, body = call.spec, call.body
    assert spec is not None
    call.upstream_started = perf_counter()
    completion = await provider.complete(spec, body, deadline)
    upstream_time = perf_counter() - call.upstream_started
    settled = settle(
        call, completion.usage, completion.usage_dict, lambda: _completion_text(completion.body), "missing"
    )
    completion.body["usage"] = settled.client_usage()
    store(call, completion.body, settled.cost)
    headers = call.headers()
    headers["x-gateway-cost-usd"] = settled.cost.header_value()
    response = Response(orjson.dumps(completion.body), media_type="application/json", headers=headers)
    call.record("200", upstream_time)
    return response
