"""POST /v1/responses, GET and DELETE /v1/responses/{id}: OpenAI's Responses API for every model
and tier, translated to the chat form (`gateway/formats/responses.py`) and run through the one
pipeline; usage (input, cached input, output, reasoning) with `cost` and `cost_details` in the
body and on the final event. Errors in OpenAI's shape.

`previous_response_id`: the gateway keeps each response it produced (unless `store: false`) with
the conversation so far (`gateway/conversations/`), scoped to the caller's team, key or bearer
token; a continuation replays that conversation and goes to the model that produced the previous
response when the request names a tier (a request naming a model gets that model).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.api.body import request_id
from gateway.api.sse_response import SSEResponse
from gateway.api.translated import credential, error_response, serve
from gateway.conversations.store import StoredResponse
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.formats.native import text_only_chat
from gateway.formats.responses import ResponsesStream, chat_to_response, response_to_chat_messages, responses_to_chat
from gateway.pipeline.exchange import Caller
from gateway.pipeline.request import Native
from gateway.state import AppState

__all__ = ["PATH", "Responses", "create_response", "router"]

PATH = "/v1/responses"

router = APIRouter()


class Responses:
    """One Responses request on its way through the chat pipeline."""

    native: Native | None

    @staticmethod
    def error_body(exc: GatewayError) -> bytes:
        return exc.body_bytes()

    def __init__(self, body: dict[str, Any], tenant: str, history: list[dict[str, Any]], native: bool,
                 native_only: bool = False) -> None:
        try:
            self.chat = responses_to_chat(body, history)
        except InvalidRequest:
            given = body.get("input")
            if not (native and native_only and (isinstance(given, str) or isinstance(given, list) and given)):
                raise  # (what OpenAI would refuse too is refused here)
            self.chat = text_only_chat(body, body.get("max_output_tokens"))  # OpenAI will read it as sent
        self.native = Native("responses", body, {}) if native else None
        self._body = body
        self._tenant = tenant
        self._history = history
        self._id = "resp_" + uuid.uuid4().hex
        self._created = int(time.time())

    @classmethod
    async def open(cls, body: dict[str, Any], headers: Headers, state: AppState, caller: Caller) -> Responses:
        """A continuation replays the conversation the gateway kept, unless the previous response
        came from OpenAI itself (then OpenAI keeps it: the request goes there as it is)."""
        tenant = caller.tenant()
        previous_id = body.get("previous_response_id")
        spec = state.settings.models.get(str(body.get("model")))
        native_only = spec is not None and spec.native_api == "responses"  # (built-in tools: OpenAI's to read)
        if previous_id is None:
            return cls(body, tenant, [], True, native_only)
        if not isinstance(previous_id, str) or not previous_id:
            raise InvalidRequest("'previous_response_id' must be a response id", param="previous_response_id")
        previous = await state.conversations.get(tenant, previous_id)
        if previous is None:  # not the gateway's: only OpenAI itself may know it
            if not native_only:
                raise InvalidRequest(f"Previous response with id '{previous_id}' not found.",
                                     param="previous_response_id", code="previous_response_not_found")
            return cls(body, tenant, [], True, native_only)
        if state.router.tier(str(body.get("model"))) is not None:  # a tier: stay with the model that answered
            body = {**body, "model": previous.model}
        return cls(body, tenant, previous.messages, previous.native, native_only and previous.native)

    def answer(self, completion: dict[str, Any]) -> dict[str, Any]:
        return chat_to_response(completion, self._body, self._id, self._created)

    def stream(self) -> ResponsesStream:
        return ResponsesStream(self._body, self._id, self._created)

    async def finished(self, state: AppState, answer: dict[str, Any], model: str, native: bool) -> None:
        """Keep the response (its id, its model, the conversation so far) for a continuation or a
        GET, unless `store: false`. (A native one is also kept by OpenAI, which continues it.)"""
        if self._body.get("store") is False:
            return
        asked = self.chat["messages"]  # (this request's instructions, first, are not carried over)
        conversation = [*(asked[1:] if self._body.get("instructions") else asked), *response_to_chat_messages(answer)]
        await state.conversations.put(self._tenant, StoredResponse(answer, conversation, model, native))


async def create_response(request: Request) -> Response | SSEResponse:
    return await serve(request, Responses, PATH)


async def _stored(request: Request, response_id: str) -> tuple[AppState, str, str]:
    """The caller's tenant (after authentication) and the request id."""
    state: AppState = request.app.state.gw
    rid = request.state.request_id = request_id(request)
    authorization = credential(request)
    grant = await state.access.authenticate(authorization)
    return state, Caller(rid, grant, authorization, 0.0).tenant(), rid


@router.get(PATH + "/{response_id}")
async def get_response(request: Request, response_id: str) -> Response:
    state, tenant, rid = await _stored(request, response_id)
    found = await state.conversations.get(tenant, response_id)
    if found is None:
        return error_response(Responses, state, rid, NotFound(f"No response found with id '{response_id}'."))
    return JSONResponse(found.response, headers={"x-request-id": rid})


@router.delete(PATH + "/{response_id}")
async def delete_response(request: Request, response_id: str) -> Response:
    state, tenant, rid = await _stored(request, response_id)
    if not await state.conversations.delete(tenant, response_id):
        return error_response(Responses, state, rid, NotFound(f"No response found with id '{response_id}'."))
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True},
                        headers={"x-request-id": rid})
