"""The Batch API's operations, for one caller: files (upload, get, content, list, delete) and
batches (create, get, list, cancel), each visible to its owner only (another key gets 404).

Creating a batch:

    parse     the input file, line by line (`lines.py`: a 400 names the line)
    route     by name: the key may use the model, whose upstream must speak OpenAI's format (only
              those have a Batch API the gateway can use); by tier: each line ranked by the router
              like a chat request, among the tier's OpenAI-format models the key may use
    hold      the worst case of every line at the model's batch prices (its max_tokens, else the
              model's maximum output, else `budgets.default_max_output_tokens`, that bound then
              sent upstream), reserved at once against the key's and team's budgets (429 if they
              cannot pay it) for `batches.hold_ttl_s`
    submit    one upstream batch per upstream and key (`Part`): its input file rewritten with the
              upstream's model ids, uploaded, and the batch created; a failure cancels what was
              created and releases the hold

What follows (polling, settlement, cancel) is `progress.py`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from typing import Any

from gateway.access.budgets import Hold, hold_amount, new_hold
from gateway.access.gate import Access, Grant
from gateway.batches.books import BatchBooks
from gateway.batches.lines import CHAT_URL, Line, Routed, parse_lines, upstream_file
from gateway.batches.multipart import Form
from gateway.batches.progress import Progress
from gateway.batches.records import BatchRecord, FileRecord, Part, new_id
from gateway.batches.store import BatchStore
from gateway.batches.upstream import UpstreamBatches
from gateway.config.settings import Settings, TierSpec
from gateway.errors import GatewayError, InvalidRequest, NotFound, RequestTooLarge
from gateway.pipeline.exchange import Caller
from gateway.routing.router import Router, unfit_reason
from gateway.runtime.background import Background
from gateway.tokens.counter import encoding_name_for
from gateway.tokens.pool import CountingPool

__all__ = ["BatchService", "owner_of"]

log = logging.getLogger("gateway.batches")


def owner_of(caller: Caller) -> str:
    """Whose batches and files these are: the virtual key's, else the bearer token's (hashed)."""
    key = caller.grant.key
    return f"key:{key.id}" if key is not None else caller.tenant()


def _text(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' is required and must be a string", param=name)
    return value


def _at_line(line: Line, exc: GatewayError) -> GatewayError:
    """`exc` (its class, so its status) with the line it is about."""
    exc.message = f"line {line.number} of the input file: {exc.message}"
    return exc


class BatchService:
    def __init__(self, settings: Settings, router: Router, access: Access, counting: CountingPool,
                 store: BatchStore, books: BatchBooks, background: Background) -> None:
        self._settings = settings
        self._config = settings.batches
        self._router = router
        self._access = access
        self._counting = counting
        self.store = store
        self.upstream = UpstreamBatches()
        self.progress = Progress(settings, store, self.upstream, books, background)

    async def run(self) -> None:
        """The poller, while the app serves (returns at once when batches are off)."""
        if self._config.enabled:
            await self.progress.run()

    async def close(self) -> None:
        await self.upstream.close()

    # ------------------------------------------------------------------ files
    async def upload(self, caller: Caller, form: Form) -> dict[str, Any]:
        if form.fields.get("purpose") != "batch":
            raise InvalidRequest("'purpose' must be 'batch': the gateway keeps files for the Batch API only",
                                 param="purpose")
        if form.file is None:
            raise InvalidRequest("'file' is required (the batch's JSONL input)", param="file")
        if len(form.file) > self._config.max_file_bytes:
            raise RequestTooLarge(f"the file is {len(form.file)} bytes; the limit is {self._config.max_file_bytes}")
        parse_lines(form.file, self._config.max_lines, self._settings.limits.max_n)  # a bad line: 400 now
        return (await self._keep(owner_of(caller), form.filename or "input.jsonl", "batch", form.file)).to_openai()

    async def _keep(self, owner: str, filename: str, purpose: str, content: bytes) -> FileRecord:
        now = int(time.time())
        record = FileRecord(new_id("file-"), owner, filename, purpose, len(content), now,
                            now + self._config.file_ttl_s)
        await self.store.put_file(record, content)
        return record

    async def file(self, caller: Caller, file_id: str) -> FileRecord:
        record = await self.store.get_file(file_id)
        if record is None or record.owner != owner_of(caller):
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return record

    async def content(self, caller: Caller, file_id: str) -> bytes:
        record = await self.file(caller, file_id)
        content = await self.store.file_content(record.id)
        if content is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return content

    async def files(self, caller: Caller, purpose: str | None, limit: int) -> dict[str, Any]:
        found = await self.store.list_files(owner_of(caller), limit)
        data = [f.to_openai() for f in found if purpose is None or f.purpose == purpose]
        return {"object": "list", "data": data, "has_more": False,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    async def delete_file(self, caller: Caller, file_id: str) -> dict[str, Any]:
        await self.store.delete_file(await self.file(caller, file_id))
        return {"id": file_id, "object": "file", "deleted": True}

    # ------------------------------------------------------------------ batches
    async def batch(self, caller: Caller, batch_id: str, refresh: bool = True) -> BatchRecord:
        """The caller's batch, brought up to date with its upstream batches (and settled if they
        ended); if the upstream cannot be asked now, as last known."""
        record = await self.store.get(batch_id)
        if record is None or record.owner != owner_of(caller):
            raise NotFound(f"No such Batch object: {batch_id}", param="batch_id")
        if not refresh or record.settled:
            return record
        try:
            return await self.progress.refresh(record)
        except GatewayError as exc:
            log.warning("batch %s: not refreshed (%s)", batch_id, exc.message)
            return record

    async def batches(self, caller: Caller, after: str | None, limit: int) -> dict[str, Any]:
        records, more = await self.store.list_batches(owner_of(caller), after, limit)
        data = [r.to_openai() for r in records]
        return {"object": "list", "data": data, "has_more": more,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    async def cancel(self, caller: Caller, batch_id: str) -> BatchRecord:
        return await self.progress.cancel(await self.batch(caller, batch_id, refresh=False))

    async def create(self, caller: Caller, body: dict[str, Any]) -> BatchRecord:
        endpoint = _text(body, "endpoint")
        if endpoint != CHAT_URL:
            raise InvalidRequest(f"'endpoint' must be '{CHAT_URL}': the gateway batches chat completions",
                                 param="endpoint")
        window = _text(body, "completion_window", self._config.completion_window)
        if window != self._config.completion_window:
            raise InvalidRequest(f"'completion_window' must be '{self._config.completion_window}'",
                                 param="completion_window")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidRequest("'metadata' must be an object", param="metadata")
        file = await self.file(caller, _text(body, "input_file_id"))
        if file.purpose != "batch":
            raise InvalidRequest(f"file {file.id} is not a batch input file", param="input_file_id")
        lines = parse_lines(await self.content(caller, file.id), self._config.max_lines,
                            self._settings.limits.max_n)
        tier = self._router.tier(lines[0].request.model)
        routed = await (self._by_tier(caller, tier, lines) if tier is not None else self._by_name(caller, lines))
        batch_id = new_id("batch_")
        routed, hold, held = await self._hold(caller.grant, batch_id, routed)
        key, parts = caller.grant.key, []
        try:
            parts = await self._submit(batch_id, routed, window)
            record = BatchRecord(
                batch_id, owner_of(caller), key.id if key else "", (key.alias or "") if key else "", caller.team,
                lines[0].request.model, tier.name if tier is not None else "", endpoint, window, file.id,
                int(time.time()), metadata, {r.line.custom_id: [r.spec.name, r.input_tokens] for r in routed},
                parts, hold=asdict(hold) if hold is not None else None, held_pico=held)
            self.progress.advance(record)
            return await self.store.add(record)
        except BaseException:  # nothing kept: nothing may run upstream, nothing stays held
            await self.progress.cancel_parts(parts)
            if hold is not None:  # (a zero hold was never reserved: releasing it changes nothing)
                await self._access.budgets.release(hold)
            raise

    async def _by_name(self, caller: Caller, lines: list[Line]) -> list[Routed]:
        spec = self._settings.resolve_model(lines[0].request.model)
        self._access.check(caller.grant, spec.name, None)
        if spec.mode != "chat":
            raise InvalidRequest(f"model '{spec.name}' is an embedding model: batches are chat completions",
                                 param="model")
        if spec.wire != "openai":
            raise InvalidRequest(f"model '{spec.name}' (provider {spec.provider}) has no Batch API the gateway can "
                                 "use: batches go to OpenAI-format upstreams", param="model")
        enc, routed = encoding_name_for(spec.upstream_model), []
        for line in lines:
            request = line.request
            tokens = (await self._counting.count(request.messages, request.tools, (enc,), request.size))[enc]
            unfit = unfit_reason(spec, tokens, request.max_output) or (
                "it has no audio price" if "audio" in request.needs and "audio" not in spec.capabilities else None)
            if unfit is not None:
                raise _at_line(line, InvalidRequest(f"model '{spec.name}' cannot serve this request: {unfit}",
                                                    param="body.messages"))
            routed.append(Routed(line, spec, tokens, None))
        return routed

    async def _by_tier(self, caller: Caller, tier: TierSpec, lines: list[Line]) -> list[Routed]:
        """Each line routed as a chat request to the tier would be, among the models a batch can go to."""
        grant = caller.grant
        self._access.check(grant, None, tier.name)
        mine = grant.key.models if grant.key is not None else None
        allowed = [name for name, spec in self._settings.models.items()
                   if spec.wire == "openai" and (mine is None or name in mine)]
        encodings, routed = self._router.encodings(tier), []
        for line in lines:
            request = line.request
            counts = await self._counting.count(request.messages, request.tools, encodings, request.size)
            try:
                first = (await self._router.plan(tier, request, counts, caller, 1, allowed,
                                                 service_tier="batch")).first
            except GatewayError as exc:
                raise _at_line(line, exc) from None
            routed.append(Routed(line, self._settings.models[first.model], first.input_tokens, None))
        return routed

    async def _hold(self, grant: Grant, batch_id: str, routed: list[Routed]) -> tuple[list[Routed], Hold | None, int]:
        """The batch's hold: every line's worst case at batch prices (a zero hold, never reserved,
        for a key without a budget: its spend is still booked against it), and the lines with the
        output bound the hold assumed."""
        key, team, config = grant.key, grant.team, self._settings.budgets
        if key is None:
            return routed, None, 0
        amounts = [hold_amount(key, team, r.spec.price.for_service("batch"), r.input_tokens,
                               r.line.request.max_output, r.spec.max_output_tokens, config, r.line.request.n)
                   for r in routed]
        if amounts[0] is None:
            return routed, replace(new_hold(key, team, 0), id=f"batch:{batch_id}"), 0
        total = sum(a or 0 for a in amounts)
        hold = await self._access.budgets.reserve(key, team, total, self._config.hold_ttl_s)
        bound = config.default_max_output_tokens
        return [r._replace(bound=bound) if r.line.request.max_output is None and r.spec.max_output_tokens is None
                else r for r in routed], hold, total

    async def _submit(self, batch_id: str, routed: list[Routed], window: str) -> list[Part]:
        """One upstream batch per (api_base, key): uploaded and created; undone on a failure."""
        groups: dict[tuple[str | None, str | None], list[Routed]] = {}
        for r in routed:
            groups.setdefault((r.spec.api_base, r.spec.api_key), []).append(r)
        parts: list[Part] = []
        try:
            for i, rows in enumerate(groups.values()):
                spec = rows[0].spec
                file_id = await self.upstream.upload(spec, f"{batch_id}-{i}.jsonl", upstream_file(rows))
                data = await self.upstream.create(spec, file_id, CHAT_URL, window, {"gateway_batch_id": batch_id})
                part = Part(spec.name, file_id, str(data["id"]))
                self.progress.update(part, data)
                parts.append(part)
        except BaseException:
            await self.progress.cancel_parts(parts)
            raise
        return parts
