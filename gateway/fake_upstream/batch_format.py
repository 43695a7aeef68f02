"""OpenAI's Files and Batch APIs for the fake upstream: ``POST /v1/files`` (multipart, purpose
batch), ``GET /v1/files/{id}`` and ``/v1/files/{id}/content``, ``POST /v1/batches``, ``GET
/v1/batches`` and ``/v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.

A batch is ``validating`` when created, ``in_progress`` when first asked about, and ends once
``delay_s`` (scripted) has passed since its creation: every line answered as the fake answers a
chat completion for its body's model (the behaviour scripted for that model: its reply and its
usage, a status fault making the line fail), with ``service_tier: "batch"``; the answers in an
output file, the failures in an error file. A cancelled batch ends ``cancelled`` at its next
look, with the first ``cancel_keeps`` lines answered.

``POST /_fake/batches`` scripts the batches made from then on (``reset`` forgets it)::

    {"delay_s": 0.2,                        # seconds from creation to completion
     "fail": ["req-2"],                     # custom_ids answered with a 500
     "usage": {"req-1": {...}},             # a custom_id's usage (else the model's behaviour)
     "status": "failed" | "expired",        # how the whole batch ends instead (no output)
     "cancel_keeps": 1}                     # lines answered before a cancel took effect
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from gateway.fake_upstream.behaviour import STATUS_FAULTS, Behaviour, ReplyPlan, count_input_tokens

__all__ = ["BatchScript", "FakeBatches"]

Resolve = Callable[[str], tuple[Behaviour, ReplyPlan, str | None]]
_JSON = "application/json"
_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type=_JSON)


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    return _json({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}},
                 status)


@dataclass(slots=True)
class BatchScript:
    delay_s: float = 0.0
    fail: frozenset[str] = frozenset()
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str | None = None
    cancel_keeps: int = 0

    @classmethod
    def from_dict(cls, data: Any) -> BatchScript:
        if not isinstance(data, dict) or set(data) - {"delay_s", "fail", "usage", "status", "cancel_keeps"}:
            raise ValueError("batch script fields: delay_s, fail, usage, status, cancel_keeps")
        status = data.get("status")
        if status not in (None, "failed", "expired"):
            raise ValueError("status must be 'failed' or 'expired'")
        return cls(float(data.get("delay_s", 0.0)), frozenset(data.get("fail", ())), dict(data.get("usage", {})),
                   status, int(data.get("cancel_keeps", 0)))


class FakeBatches:
    def __init__(self, resolve: Resolve, log: deque[dict[str, Any]]) -> None:
        self._resolve = resolve  # a model's scripted behaviour, as for its chat completions
        self._log = log  # the server's call log
        self._files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._scripts: dict[str, BatchScript] = {}  # batch id -> the script it was made under
        self.script = BatchScript()

    def reset(self) -> None:
        self._files.clear()
        self._batches.clear()
        self._scripts.clear()
        self.script = BatchScript()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}", self._get_file)
        app.router.add_get("/v1/files/{file_id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{batch_id}", self._get)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self._cancel)
        app.router.add_post("/_fake/batches", self._set_script)

    def _record(self, request: web.Request, body: Any) -> web.Response | None:
        """Log the call; a 401 without a key."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        self._log.append({"path": request.path, "method": request.method, "model": None, "headers": headers,
                          "body": body, "stream": False, "completed": True, "ended": True, "chunks_sent": 0})
        auth = headers.get("authorization", "")
        return None if auth.startswith("Bearer ") and auth[7:].strip() else _error(401, "no API key")

    def _file(self, purpose: str, filename: str, content: bytes) -> dict[str, Any]:
        file_id = f"file-fake-{uuid.uuid4().hex[:16]}"
        meta: dict[str, Any] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                                "filename": filename, "purpose": purpose, "status": "processed"}
        self._files[file_id] = (meta, content)
        return meta

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        content = upload.file.read() if isinstance(upload, web.FileField) else b""
        lines = [orjson.loads(raw) for raw in content.split(b"\n") if raw.strip()]
        refused = self._record(request, {"purpose": purpose, "lines": lines})
        if refused is not None:
            return refused
        if purpose != "batch" or not isinstance(upload, web.FileField):
            return _error(400, "purpose must be 'batch', with a file")
        return _json(self._file("batch", upload.filename, content))

    async def _get_file(self, request: web.Request) -> web.Response:
        refused = self._record(request, None)
        found = self._files.get(request.match_info["file_id"])
        return refused or (_json(found[0]) if found else _error(404, "No such File object"))

    async def _content(self, request: web.Request) -> web.Response:
        refused = self._record(request, None)
        found = self._files.get(request.match_info["file_id"])
        if refused or found is None:
            return refused or _error(404, "No such File object")
        return web.Response(body=found[1], content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read() or b"null")
        refused = self._record(request, body)
        if refused is not None:
            return refused
        if not isinstance(body, dict) or body.get("input_file_id") not in self._files:
            return _error(400, "input_file_id: no such file")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _error(400, "endpoint must be /v1/chat/completions, completion_window 24h")
        now = int(time.time())
        batch = {"id": f"batch_fake_{uuid.uuid4().hex[:16]}", "object": "batch", "endpoint": body["endpoint"],
                 "errors": None, "input_file_id": body["input_file_id"], "completion_window": "24h",
                 "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
                 "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
                 "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
                 "_started": time.monotonic()}
        self._batches[batch["id"]] = batch
        self._scripts[batch["id"]] = self.script
        return _json(self._public(batch))

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    async def _get(self, request: web.Request) -> web.Response:
        refused = self._record(request, None)
        batch = self._batches.get(request.match_info["batch_id"])
        if refused or batch is None:
            return refused or _error(404, "No such Batch object")
        return _json(self._public(self._advance(batch)))

    async def _list(self, request: web.Request) -> web.Response:
        refused = self._record(request, None)
        data = [self._public(self._advance(b)) for b in reversed(self._batches.values())]
        return refused or _json({"object": "list", "data": data, "has_more": False})

    async def _cancel(self, request: web.Request) -> web.Response:
        refused = self._record(request, None)
        batch = self._batches.get(request.match_info["batch_id"])
        if refused or batch is None:
            return refused or _error(404, "No such Batch object")
        batch = self._advance(batch)
        if batch["status"] in _ENDED:
            return _error(409, f"Cannot cancel a batch with status '{batch['status']}'.")
        batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
        return _json(self._public(batch))

    async def _set_script(self, request: web.Request) -> web.Response:
        try:
            self.script = BatchScript.from_dict(orjson.loads(await request.read() or b"{}"))
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return _json({"ok": False, "error": {"message": str(exc)}}, 400)
        return _json({"ok": True})

    def _advance(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch as time has moved it on since its creation."""
        script, now = self._scripts[batch["id"]], int(time.time())
        if batch["status"] == "cancelling":
            self._finish(batch, "cancelled", script, script.cancel_keeps)
        elif batch["status"] not in _ENDED and time.monotonic() - batch["_started"] >= script.delay_s:
            batch["in_progress_at"] = batch["in_progress_at"] or now
            self._finish(batch, script.status or "completed", script, None)
        elif batch["status"] == "validating":
            batch["status"], batch["in_progress_at"] = "in_progress", now
        return batch

    def _finish(self, batch: dict[str, Any], status: str, script: BatchScript, keep: int | None) -> None:
        lines = [orjson.loads(raw) for raw in self._files[batch["input_file_id"]][1].split(b"\n") if raw.strip()]
        answered = [] if status in ("failed", "expired") else lines if keep is None else lines[:keep]
        outputs: list[bytes] = []
        errors: list[bytes] = []
        for n, line in enumerate(answered):
            ok, result = self._answer(n, line, script)
            (outputs if ok else errors).append(orjson.dumps(result))
        if outputs:
            batch["output_file_id"] = self._file("batch_output", "output.jsonl", b"\n".join(outputs) + b"\n")["id"]
        if errors:
            batch["error_file_id"] = self._file("batch_output", "errors.jsonl", b"\n".join(errors) + b"\n")["id"]
        if status == "failed":
            batch["errors"] = {"object": "list", "data": [{"code": "failed", "message": "scripted failure",
                                                            "param": None, "line": None}]}
        batch["request_counts"] = {"total": len(lines), "completed": len(outputs), "failed": len(errors)}
        batch["status"], batch[f"{status}_at"] = status, int(time.time())

    def _answer(self, n: int, line: dict[str, Any], script: BatchScript) -> tuple[bool, dict[str, Any]]:
        """One line's result: (answered, the output or error line)."""
        body, custom_id = line.get("body") or {}, line.get("custom_id")
        behaviour, plan, fault = self._resolve(str(body.get("model")))
        head = {"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": custom_id, "error": None}
        if custom_id in script.fail or fault in STATUS_FAULTS:
            status = int(fault) if fault in STATUS_FAULTS and custom_id not in script.fail else 500
            error = {"message": behaviour.error_message or "simulated failure", "type": "server_error"}
            return False, {**head, "response": {"status_code": status, "request_id": f"req_{n}",
                                                "body": {"error": error}}}
        n_asked = body.get("n")
        choices = n_asked if isinstance(n_asked, int) and n_asked > 0 else 1
        usage = script.usage.get(str(custom_id)) or behaviour.usage
        if usage is None:
            prompt, completion = count_input_tokens(body), plan.n_words * choices
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                     "prompt_tokens_details": {"cached_tokens": 0},
                     "completion_tokens_details": {"reasoning_tokens": 0}}
        answer: dict[str, Any] = {
            "id": f"chatcmpl-fake-batch-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"), "service_tier": "batch", "system_fingerprint": "fp_fake",
            "choices": [{"index": i, "message": {"role": "assistant", "content": plan.text},
                         "finish_reason": plan.finish_reason, "logprobs": None} for i in range(choices)],
        }
        if not behaviour.omit_usage:
            answer["usage"] = usage
        return True, {**head, "response": {"status_code": 200, "request_id": f"req_{n}", "body": answer}}
