"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API, for the anthropic
SDKs, Claude Code (`ANTHROPIC_BASE_URL`) and agent frameworks, with a gateway key sent as
`x-api-key` or `Authorization: Bearer`. Every model and tier serves it: the request is translated
to the chat form (`gateway/formats/messages.py`) and runs through the one pipeline; usage comes
back in Anthropic's convention (cache reads and 5-minute / 1-hour writes outside `input_tokens`)
with `cost` and `cost_details`. Errors in Anthropic's shape."""

from __future__ import annotations

import uuid
from time import perf_counter
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.body import read_body, request_id
from gateway.api.errors import unexpected_error
from gateway.api.sse_response import SSEResponse
from gateway.api.translated import credential, error_response, serve
from gateway.errors import GatewayError, InvalidRequest
from gateway.formats.messages import MessagesStream, chat_to_message, messages_to_chat
from gateway.formats.messages import error_body as anthropic_error_body
from gateway.formats.native import text_only_chat
from gateway.pipeline.exchange import Caller
from gateway.pipeline.request import Native, chat_request, decode_object
from gateway.providers.native import FORWARDED_HEADERS
from gateway.state import AppState

__all__ = ["COUNT_PATH", "PATH", "Messages", "count_tokens", "create_message"]

PATH = "/v1/messages"
COUNT_PATH = "/v1/messages/count_tokens"


class Messages:
    """One Messages request on its way through the chat pipeline."""

    native: Native | None

    @staticmethod
    def error_body(exc: GatewayError) -> bytes:
        return anthropic_error_body(exc)

    def __init__(self, body: dict[str, Any], headers: Headers, native_only: bool = False) -> None:
        try:
            self.chat = messages_to_chat(body)
        except InvalidRequest:
            messages, limit = body.get("messages"), body.get("max_tokens")
            if not (native_only and isinstance(messages, list) and messages and isinstance(limit, int)):
                raise  # (what Anthropic would refuse too is refused here)
            self.chat = text_only_chat(body, body.get("max_tokens"))  # Anthropic will read it as sent
        forwarded = {h: headers[h] for h in FORWARDED_HEADERS if h in headers}
        self.native = Native("messages", body, forwarded)  # as sent, for an Anthropic model
        self._model = str(body["model"])
        self._id = "msg_" + uuid.uuid4().hex[:24]

    @classmethod
    async def open(cls, body: dict[str, Any], headers: Headers, state: AppState, caller: Caller) -> Messages:
        """A request for an Anthropic model by name goes as sent: what only Anthropic understands
        (server tools, documents, ...) is not refused by the translation."""
        spec = state.settings.models.get(str(body.get("model")))
        return cls(body, headers, spec is not None and spec.native_api == "messages")

    def answer(self, completion: dict[str, Any]) -> dict[str, Any]:
        return chat_to_message(completion, str(completion.get("model") or self._model))

    def stream(self) -> MessagesStream:
        return MessagesStream(self._model, self._id)

    async def finished(self, state: AppState, answer: dict[str, Any], model: str, native: bool) -> None:
        pass  # nothing is kept: the Messages API is stateless


async def create_message(request: Request) -> Response | SSEResponse:
    return await serve(request, Messages, PATH)


async def count_tokens(request: Request) -> Response:
    """The prompt's input tokens as the gateway counts them for the model or tier named, calling
    no paid model (one request against the key's RPM, as an estimate)."""
    state: AppState = request.app.state.gw
    arrived = perf_counter()
    rid = request.state.request_id = request_id(request)
    authorization = credential(request)
    try:
        grant = await state.access.authenticate(authorization)
        raw = await read_body(request, state.settings.max_body_bytes)
        body = decode_object(raw)  # (a count request has no max_tokens; the translation wants one)
        translated = messages_to_chat({**body, "max_tokens": 1, "stream": False})
        forwarded = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        chat = chat_request(translated, len(raw), None, Native("messages", body, forwarded))
        tokens = await state.pipeline.count_prompt(chat, Caller(rid, grant, authorization, arrived))
    except GatewayError as exc:
        return error_response(Messages, state, rid, exc)
    except Exception as exc:
        return error_response(Messages, state, rid, unexpected_error(state.errors, COUNT_PATH, exc))
    return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json",
                    headers={"x-request-id": rid})
