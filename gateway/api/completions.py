"""POST /v1/completions: OpenAI's legacy Completions API (the openai SDK's `completions.create`)
for every model and tier. The one text prompt is translated to a chat request with one user
message (`gateway/formats/completions.py`) and runs through the one pipeline (keys, budgets,
limits, routing, caches, ledger, metrics, one pricing core); the answer comes back as a
`text_completion`, its usage with `cost` and `cost_details`. Errors in OpenAI's shape."""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.sse_response import SSEResponse
from gateway.api.translated import serve
from gateway.errors import GatewayError
from gateway.formats.completions import CompletionsStream, chat_to_completion, completions_to_chat, wants_usage
from gateway.pipeline.exchange import Caller
from gateway.pipeline.request import Native
from gateway.state import AppState

__all__ = ["PATH", "Completions", "create_completion"]

PATH = "/v1/completions"


class Completions:
    """One Completions request on its way through the chat pipeline (always translated: no model
    is sent a Completions request as it is)."""

    native: Native | None = None

    @staticmethod
    def error_body(exc: GatewayError) -> bytes:
        return exc.body_bytes()

    def __init__(self, body: dict[str, Any]) -> None:
        self.chat = completions_to_chat(body)
        self._model = str(body["model"])
        self._include_usage = wants_usage(body)
        self._id = "cmpl-" + uuid.uuid4().hex
        self._created = int(time.time())

    @classmethod
    async def open(cls, body: dict[str, Any], headers: Headers, state: AppState, caller: Caller) -> Completions:
        return cls(body)

    def answer(self, completion: dict[str, Any]) -> dict[str, Any]:
        return chat_to_completion(completion)

    def stream(self) -> CompletionsStream:
        return CompletionsStream(self._model, self._include_usage, self._id, self._created)

    async def finished(self, state: AppState, answer: dict[str, Any], model: str, native: bool) -> None:
        pass  # nothing is kept: the Completions API is stateless


async def create_completion(request: Request) -> Response | SSEResponse:
    return await serve(request, Completions, PATH)
