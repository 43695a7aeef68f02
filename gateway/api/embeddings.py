"""POST /v1/embeddings: OpenAI's embeddings API for embedding models by name (OpenAI-compatible
upstreams forwarded, others through litellm), priced per input token by the pricing core, with
`usage.cost` in the body. Errors in OpenAI's shape."""

from __future__ import annotations

from time import perf_counter

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.body import gateway_headers, read_body, request_id
from gateway.api.errors import error_response, unexpected_error
from gateway.errors import GatewayError
from gateway.pipeline.embedding_request import parse_embedding_request
from gateway.pipeline.exchange import Caller
from gateway.state import AppState

__all__ = ["PATH", "create_embeddings"]

PATH = "/v1/embeddings"


async def create_embeddings(request: Request) -> Response:
    state: AppState = request.app.state.gw
    arrived = perf_counter()
    rid = request.state.request_id = request_id(request)
    authorization = request.headers.get("authorization") or ""
    try:
        grant = await state.access.authenticate(authorization)
        raw = await read_body(request, state.settings.max_body_bytes)
        embedding = parse_embedding_request(raw, gateway_headers(request).cache)
    except GatewayError as exc:
        state.metrics.child(state.metrics.requests, "none", "", str(exc.status_code)).inc()
        return error_response(rid, exc, state.redact)
    try:
        answer = await state.embeddings.embed(embedding, Caller(rid, grant, authorization, arrived))
    except GatewayError as exc:
        return error_response(rid, exc, state.redact)
    except Exception as exc:
        return error_response(rid, unexpected_error(state.errors, PATH, exc), state.redact)
    answer.headers["x-gateway-cost-usd"] = answer.cost.header_value()
    return Response(orjson.dumps(answer.body), media_type="application/json", headers=answer.headers)
