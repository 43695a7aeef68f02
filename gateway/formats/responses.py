"""The OpenAI Responses API over the pipeline's Chat Completions form.

A pure translator (no I/O): `responses_to_chat` turns a `POST /v1/responses` body into a chat body,
`chat_to_response` turns the pipeline's `chat.completion` into a `Response`, and `ResponsesStream`
turns its `chat.completion.chunk` stream into the Responses event stream that the openai SDK's
`responses.stream()` accumulates. Output item ids derive from the response id (`resp_X` gives
`msg_X` and `fc_X_<i>`), so a streamed and a non-streamed answer name their items alike.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson

from gateway.errors import GatewayError, InvalidRequest

__all__ = ["ResponsesStream", "chat_to_response", "response_to_chat_messages", "responses_to_chat", "responses_usage"]

_ROLES = MappingProxyType({"user": "user", "system": "system", "developer": "system", "assistant": "assistant"})
_TEXT_PARTS = frozenset({"input_text", "output_text"})
# chat finish_reason -> Response incomplete_details.reason
_INCOMPLETE = MappingProxyType({"length": "max_output_tokens", "content_filter": "content_filter"})
# `Response.error.code` is a closed set in the SDK's types; anything else is reported as server_error.
_FAILED_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})
_NATIVE_ONLY = "only available on OpenAI models served natively"


def responses_to_chat(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Responses request body as a chat body; `history` (earlier turns, as chat messages) goes
    after the system message and before this request's input."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    _refuse_unsupported(body)
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages += history or []
    messages += _input_messages(body.get("input"))
    chat: dict[str, Any] = {"model": model, "messages": messages}
    tools = _chat_tools(body["tools"]) if body.get("tools") is not None else []
    choice = _chat_tool_choice(body["tool_choice"]) if body.get("tool_choice") is not None else None
    if tools:  # chat APIs refuse tool_choice and parallel_tool_calls without tools
        chat["tools"] = tools
        for key, value in (("tool_choice", choice), ("parallel_tool_calls", body.get("parallel_tool_calls"))):
            if value is not None:
                chat[key] = value
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    for key in ("temperature", "top_p", "user", "stream"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    if body.get("stream") is True:
        chat["stream_options"] = {"include_usage": True}
    return chat


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("background"):
        raise InvalidRequest("background responses are not supported by the gateway", param="background")
    if body.get("top_logprobs") is not None:
        raise InvalidRequest("'top_logprobs' is not supported for this model", param="top_logprobs")
    for key in ("conversation", "prompt"):  # state kept on OpenAI's servers
        if body.get(key) is not None:
            raise InvalidRequest(f"'{key}' is {_NATIVE_ONLY}", param=key)


def _input_messages(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise InvalidRequest("'input' is required: a string or a list of input items", param="input")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{param} must be an object", param=param)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(item, param))
        elif kind == "function_call":
            _add_call(messages, item, param)
        elif kind == "function_call_output":
            messages.append(_call_output(item, param))
        elif kind != "reasoning":  # reasoning items are the model's own; chat models cannot take them back
            raise InvalidRequest(f"{param}: input item type {kind!r} is not supported for this model", param=param)
    return messages


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = _ROLES.get(str(item.get("role")))
    if role is None:
        raise InvalidRequest(f"{param}.role must be user, system, developer or assistant", param=f"{param}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest(f"{param}.content must be a string or a list of parts", param=f"{param}.content")
    parts = [_part(part, f"{param}.content[{j}]") for j, part in enumerate(content)]
    if role == "user":
        return {"role": role, "content": parts}
    if any(part["type"] != "text" for part in parts):
        raise InvalidRequest(f"{param}: only user messages may carry images", param=f"{param}.content")
    return {"role": role, "content": "\n".join(part["text"] for part in parts)}


def _part(part: Any, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in _TEXT_PARTS or kind == "refusal":
        text = part.get("refusal" if kind == "refusal" else "text")
        if not isinstance(text, str):
            raise InvalidRequest(f"{param}.text must be a string", param=param)
        return {"type": "text", "text": text}
    if kind == "input_image":
        if part.get("file_id"):
            raise InvalidRequest(f"{param}: images by file_id are {_NATIVE_ONLY}; send image_url", param=param)
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise InvalidRequest(f"{param}.image_url must be a URL or a data: URL", param=param)
        image = {"url": url} if part.get("detail") is None else {"url": url, "detail": part["detail"]}
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        raise InvalidRequest(f"{param}: input_file parts are {_NATIVE_ONLY}", param=param)
    raise InvalidRequest(f"{param}: content part type {kind!r} is not supported", param=param)


def _add_call(messages: list[dict[str, Any]], item: dict[str, Any], param: str) -> None:
    """A function_call item joins the assistant message just before it (text or earlier calls)."""
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise InvalidRequest(f"{param}: a function_call needs call_id and name", param=param)
    if not isinstance(arguments, str):
        raise InvalidRequest(f"{param}.arguments must be a JSON string", param=f"{param}.arguments")
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    if messages and messages[-1]["role"] == "assistant":
        messages[-1].setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _call_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{param}: a function_call_output needs call_id", param=f"{param}.call_id")
    if isinstance(output, list):
        parts = [_part(part, f"{param}.output[{j}]") for j, part in enumerate(output)]
        if any(part["type"] != "text" for part in parts):
            raise InvalidRequest(f"{param}.output: only text is supported for this model", param=f"{param}.output")
        output = "\n".join(part["text"] for part in parts)
    if not isinstance(output, str):
        raise InvalidRequest(f"{param}.output must be a string or a list of parts", param=f"{param}.output")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _chat_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be a list", param="tools")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise InvalidRequest(f"tool type {kind!r} is {_NATIVE_ONLY}", param=f"tools[{i}]")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise InvalidRequest(f"tools[{i}].name is required", param=f"tools[{i}].name")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _chat_tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else choice
    if kind == "function" and isinstance(choice, dict) and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest(f"tool_choice {kind!r} is {_NATIVE_ONLY}", param="tool_choice")


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt.get("name"), str) and isinstance(fmt.get("schema"), dict):
        keys = ("name", "schema", "strict", "description")
        return {"type": "json_schema", "json_schema": {k: fmt[k] for k in keys if fmt.get(k) is not None}}
    raise InvalidRequest("text.format must be text, json_object or json_schema (with name and schema)",
                         param="text.format")


def responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI chat usage (with the gateway's cost) in the Responses convention."""
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    prompt_details = usage.get("prompt_tokens_details") or {}
    input_details = {  # the SDK's types require both counts
        "cached_tokens": int(prompt_details.get("cached_tokens") or 0),
        "cache_write_tokens": int(prompt_details.get("cache_write_tokens") or 0),
    }
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    out: dict[str, Any] = {
        "input_tokens": prompt,
        "input_tokens_details": input_details,
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }
    for key in ("cost", "cost_details"):
        if key in usage:
            out[key] = usage[key]
    return out


def chat_to_response(
    completion: dict[str, Any], request: dict[str, Any], response_id: str, created_at: int
) -> dict[str, Any]:
    """The first choice of a `chat.completion` as the complete `Response` to `request`."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        output.append(_message_item(_message_id(response_id, 0), message["content"], "completed"))
    for i, call in enumerate(message.get("tool_calls") or ()):
        fn = call.get("function") or {}
        call_id = str(call.get("id") or f"call_{i}")
        name, arguments = str(fn.get("name") or ""), str(fn.get("arguments") or "")
        output.append(_call_item(_call_item_id(response_id, i), call_id, name, arguments, "completed"))
    finish = choice.get("finish_reason")
    if output and finish in _INCOMPLETE:
        output[-1]["status"] = "incomplete"
    response = _shell(request, response_id, created_at, str(completion.get("model") or request.get("model") or ""))
    usage = completion.get("usage")
    return _finish(response, output, finish, usage if isinstance(usage, dict) else None)


def response_to_chat_messages(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored Response's output as the assistant chat message of that turn (none if it said nothing)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in response.get("output") or ():
        if item.get("type") == "message":
            texts += [str(p.get("text") or "") for p in item.get("content") or () if p.get("type") == "output_text"]
        elif item.get("type") == "function_call":
            fn = {"name": item.get("name"), "arguments": item.get("arguments") or ""}
            calls.append({"id": item.get("call_id"), "type": "function", "function": fn})
    if not texts and not calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _message_id(response_id: str, n: int) -> str:
    return f"msg_{response_id.removeprefix('resp_')}" + (f"_{n}" if n else "")


def _call_item_id(response_id: str, index: int) -> str:
    return f"fc_{response_id.removeprefix('resp_')}_{index}"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": [_text_part(text)]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def _shell(request: dict[str, Any], response_id: str, created_at: int, model: str) -> dict[str, Any]:
    """An in-progress Response echoing the request's settings, as OpenAI's own responses do."""
    echoed = ("instructions", "max_output_tokens", "previous_response_id", "reasoning", "temperature", "top_p", "user")
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": "in_progress",
        "error": None, "incomplete_details": None, "model": model, "output": [],
        **{key: request.get(key) for key in echoed},
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "store": request.get("store") is not False,
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "metadata": request.get("metadata") or {},
        "usage": None,
    }


def _finish(
    response: dict[str, Any], output: list[dict[str, Any]], finish: Any, usage: dict[str, Any] | None
) -> dict[str, Any]:
    reason = _INCOMPLETE.get(finish) if isinstance(finish, str) else None
    response.update(
        status="incomplete" if reason else "completed",
        incomplete_details={"reason": reason} if reason else None,
        output=output,
        usage=responses_usage(usage) if usage is not None else None,
    )
    return response


class ResponsesStream:
    """Translates the pipeline's chat chunk stream into Responses SSE events as it goes: one open
    output item at a time (a message, or a function call), closed when the next one starts or at
    the end, each event numbered from 0."""

    def __init__(self, request: dict[str, Any], response_id: str, created_at: int) -> None:
        self._request = request
        self._id = response_id
        self._created_at = created_at
        self._model = str(request.get("model") or "")
        self._response = _shell(request, response_id, created_at, self._model)
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the item being streamed (also the last of _output)
        self._text: list[str] = []  # pieces of the open message's text
        self._calls: dict[int, int] = {}  # chat tool call index -> output index
        self._messages = 0
        self._finish: str | None = None
        self._sequence = 0
        self._buffer = b""
        self._started = False
        self._closed = False

    @property
    def response(self) -> dict[str, Any]:
        """The Response as it stands: complete (or incomplete, or failed) once the stream has ended."""
        return self._response

    def feed(self, events: bytes) -> bytes:
        """One or more SSE-framed `chat.completion.chunk` events in, the Responses events they make out."""
        if self._closed:
            return b""
        payloads = self._payloads(events)
        out: list[bytes] = []
        if not self._started:
            self._model = next((p["model"] for p in payloads if isinstance(p.get("model"), str) and p["model"]),
                               self._model)
        self._start(out)
        for payload in payloads:
            if self._closed:
                break
            self._chunk(payload, out)
        return b"".join(out)

    def end(self, usage: dict[str, Any]) -> bytes:
        """Closes the open item and emits `response.completed` (or `response.incomplete`)."""
        if self._closed:
            return b""
        out: list[bytes] = []
        self._start(out)
        incomplete = self._finish in _INCOMPLETE
        self._close(out, "incomplete" if incomplete else "completed")
        self._closed = True
        self._response["model"] = self._model
        _finish(self._response, self._output, self._finish, usage)
        kind = "response.incomplete" if incomplete else "response.completed"
        self._emit(out, kind, response=self._response)
        return b"".join(out)

    def error(self, exc: GatewayError) -> bytes:
        """Emits an `error` event, then `response.failed` with what was produced so far."""
        if self._closed:
            return b""
        out: list[bytes] = []
        self._start(out)
        self._fail(out, exc.code, exc.message, exc.param)
        return b"".join(out)

    def _payloads(self, events: bytes) -> list[dict[str, Any]]:
        self._buffer += events.replace(b"\r\n", b"\n")
        *frames, self._buffer = self._buffer.split(b"\n\n")
        payloads: list[dict[str, Any]] = []
        for frame in frames:
            data = b"\n".join(line[5:].strip() for line in frame.split(b"\n") if line.startswith(b"data:"))
            if data and data != b"[DONE]":
                payload = orjson.loads(data)
                if isinstance(payload, dict):
                    payloads.append(payload)
        return payloads

    def _emit(self, out: list[bytes], kind: str, **fields: Any) -> None:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")

    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        self._response["model"] = self._model
        self._emit(out, "response.created", response=self._response)
        self._emit(out, "response.in_progress", response=self._response)

    def _chunk(self, payload: dict[str, Any], out: list[bytes]) -> None:
        error = payload.get("error")
        if error is not None:  # a failure reported in-band by the pipeline
            error = error if isinstance(error, dict) else {"message": str(error)}
            code, param = error.get("code"), error.get("param")
            self._fail(out, code if isinstance(code, str) else None, str(error.get("message") or "upstream error"),
                       param if isinstance(param, str) else None)
            return
        if isinstance(payload.get("model"), str) and payload["model"]:
            self._model = payload["model"]
        for choice in payload.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._text_delta(delta["content"], out)
            for call in delta.get("tool_calls") or ():
                self._call_delta(call, out)
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])

    def _open_item(self, item: dict[str, Any], out: list[bytes]) -> int:
        self._close(out, "completed")
        self._output.append(item)
        self._open = item
        self._emit(out, "response.output_item.added", output_index=len(self._output) - 1, item=item)
        return len(self._output) - 1

    def _text_delta(self, piece: str, out: list[bytes]) -> None:
        item = self._open
        if item is None or item["type"] != "message":
            item = {"type": "message", "id": _message_id(self._id, self._messages), "status": "in_progress",
                    "role": "assistant", "content": []}
            self._messages += 1
            index = self._open_item(item, out)
            self._emit(out, "response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                       part=_text_part(""))
        self._text.append(piece)
        self._emit(out, "response.output_text.delta", item_id=item["id"], output_index=len(self._output) - 1,
                   content_index=0, delta=piece, logprobs=[])

    def _call_delta(self, call: dict[str, Any], out: list[bytes]) -> None:
        index = int(call.get("index") or 0)
        fn = call.get("function") or {}
        if index not in self._calls:
            call_id, name = str(call.get("id") or f"call_{index}"), str(fn.get("name") or "")
            item = _call_item(_call_item_id(self._id, index), call_id, name, "", "in_progress")
            self._calls[index] = self._open_item(item, out)
        item = self._output[self._calls[index]]
        piece = fn.get("arguments")
        if isinstance(piece, str) and piece:
            item["arguments"] += piece  # a late piece for an already closed call still reaches the final Response
            if item is self._open:
                self._emit(out, "response.function_call_arguments.delta", item_id=item["id"],
                           output_index=self._calls[index], delta=piece)

    def _close(self, out: list[bytes], status: str) -> None:
        item, index = self._open, len(self._output) - 1
        if item is None:
            return
        self._open = None
        if item["type"] == "message":
            text, self._text = "".join(self._text), []
            item["content"] = [_text_part(text)]
            self._emit(out, "response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                       text=text, logprobs=[])
            self._emit(out, "response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                       part=item["content"][0])
        else:
            self._emit(out, "response.function_call_arguments.done", item_id=item["id"], output_index=index,
                       arguments=item["arguments"])
        item["status"] = status
        self._emit(out, "response.output_item.done", output_index=index, item=item)

    def _fail(self, out: list[bytes], code: str | None, message: str, param: str | None) -> None:
        self._closed = True
        if self._open is not None:
            if self._open["type"] == "message":
                self._open["content"] = [_text_part("".join(self._text))]
            self._open["status"] = "incomplete"
            self._open = None
        self._emit(out, "error", code=code or "server_error", message=message, param=param)
        failed = {"code": code if code in _FAILED_CODES else "server_error", "message": message}
        self._response.update(status="failed", error=failed, output=self._output, model=self._model)
        self._emit(out, "response.failed", response=self._response)
