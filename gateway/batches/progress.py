"""A batch followed to its end: its upstream batches asked for their state (by the poller every
`batches.poll_interval_s`, one process per interval, and whenever a client GETs the batch), and,
once every one has ended (completed, failed, expired or cancelled), settled exactly once: the
results downloaded, priced and booked line by line (`books.py`), the budget hold settled with
their sum, and the gateway's own output and error files written.

Exactly once, with any number of processes and replicas polling: the settlement is claimed in
the store (one holder at a time, for `_LEASE_S`), and the settled record says so; settling runs
as background work, so neither a client that goes away nor a shutdown cuts it off half-way.
Were a process to die mid-way, another settles the batch after the lease: the budget's
settlement is idempotent (per hold), the ledger rows written before the crash would be written
again (see docs/batches.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.batches.books import BatchBooks
from gateway.batches.records import TERMINAL, BatchRecord, FileRecord, Part, new_id
from gateway.batches.store import BatchStore
from gateway.batches.upstream import UpstreamBatches
from gateway.config.settings import ModelSpec, Settings
from gateway.errors import GatewayError, InvalidRequest
from gateway.runtime.background import Background

__all__ = ["Progress", "final_status", "running_status"]

log = logging.getLogger("gateway.batches")

_LEASE_S = 600.0  # a settlement's claim: another process may take over after this


def running_status(record: BatchRecord) -> str:
    """The batch's status while a part still runs (or it awaits its settlement: finalizing)."""
    statuses = {p.status for p in record.parts}
    if record.cancel_requested:
        return "cancelling"
    if statuses <= {"validating"}:
        return "validating"
    if statuses & {"validating", "in_progress"}:
        return "in_progress"
    return "cancelling" if "cancelling" in statuses else "finalizing"


def final_status(record: BatchRecord) -> str:
    statuses = {p.status for p in record.parts}
    if record.cancel_requested or "cancelled" in statuses:
        return "cancelled"
    if "expired" in statuses:
        return "expired"
    return "completed" if "completed" in statuses else "failed"


class Progress:
    def __init__(self, settings: Settings, store: BatchStore, upstream: UpstreamBatches, books: BatchBooks,
                 background: Background) -> None:
        self._settings = settings
        self._config = settings.batches
        self._store = store
        self._upstream = upstream
        self._books = books
        self._background = background

    def _spec(self, part: Part) -> ModelSpec:
        spec = self._settings.models.get(part.model)
        if spec is None:
            raise GatewayError(f"model '{part.model}' of an upstream batch is no longer configured")
        return spec

    @staticmethod
    def update(part: Part, data: dict[str, Any]) -> None:
        """`part` as the upstream's Batch object `data` says."""
        status = data.get("status")
        if isinstance(status, str):
            part.status = status
        counts = data.get("request_counts")
        if isinstance(counts, dict):
            part.total, part.completed, part.failed = (int(counts.get(k) or 0) for k in ("total", "completed",
                                                                                        "failed"))
        for name in ("output_file_id", "error_file_id"):
            value = data.get(name)
            if isinstance(value, str) and value:
                setattr(part, name, value)
        errors = data.get("errors")
        if isinstance(errors, dict) and isinstance(errors.get("data"), list):
            part.errors = [{k: e.get(k) for k in ("code", "message", "param", "line")}
                           for e in errors["data"] if isinstance(e, dict)]

    def advance(self, record: BatchRecord) -> None:
        """The record's running status and its times, from its parts."""
        status, now = running_status(record), int(time.time())
        record.status = status
        record.times.setdefault("expires_at", record.created_at + int(record.completion_window[:-1]) * 3600)
        if status in ("in_progress", "finalizing", "cancelling"):
            record.times.setdefault("in_progress_at", now)
        if status in ("finalizing", "cancelling"):
            record.times.setdefault(f"{status}_at", now)

    async def refresh(self, record: BatchRecord) -> BatchRecord:
        """Ask the upstream how the batch's parts are doing; settle it once they have all ended."""
        if record.settled:
            return record
        for part in record.parts:
            if not part.done:
                self.update(part, await self._upstream.get(self._spec(part), part.upstream_batch_id))
        if all(part.done for part in record.parts):
            return await self._finish(record)
        before = record.status
        self.advance(record)
        if before == record.status:
            return record
        written = await self._store.write(record)
        return written or await self._store.get(record.id) or record  # (written meanwhile: the newer one)

    async def cancel(self, record: BatchRecord) -> BatchRecord:
        """Cancel the parts still running; what they answered before is settled when they end.
        A batch that has ended (or whose parts all just did: then settled now) is a 400."""
        if not record.settled and record.status not in TERMINAL:
            for part in record.parts:
                if not part.done:
                    self.update(part, await self._upstream.get(self._spec(part), part.upstream_batch_id))
            if all(part.done for part in record.parts):
                record = await self._finish(record)
        if record.settled or record.status in TERMINAL or all(part.done for part in record.parts):
            raise InvalidRequest(f"Cannot cancel a batch with status '{record.status}'.", param="batch_id")
        await self.cancel_parts([p for p in record.parts if not p.done], strict=True)
        for _ in range(5):  # (compare-and-set: a refresh may have written the batch meanwhile)
            record.cancel_requested = True
            self.advance(record)
            written = await self._store.write(record)
            if written is not None:
                return written
            fresh = await self._store.get(record.id)
            if fresh is None or fresh.settled:
                return fresh or record
            fresh.parts, record = record.parts, fresh
        return record

    async def cancel_parts(self, parts: list[Part], strict: bool = False) -> None:
        """Cancel upstream batches: a submission undone (failures logged), or a batch cancelled
        (`strict`: a part that could not be cancelled and has not ended either is an error)."""
        for part in parts:
            spec = self._spec(part)
            try:
                self.update(part, await self._upstream.cancel(spec, part.upstream_batch_id))
            except GatewayError as exc:
                if strict:
                    self.update(part, await self._upstream.get(spec, part.upstream_batch_id))
                    if not part.done:
                        raise
                log.warning("upstream batch %s not cancelled: %s", part.upstream_batch_id, exc.message)

    async def _finish(self, record: BatchRecord) -> BatchRecord:
        """Every part has ended: settle the batch, unless another process is settling it."""
        token = await self._store.claim(record.id, _LEASE_S)
        if token is None:  # (being settled by another process)
            record.status = "finalizing"
            return record
        await asyncio.shield(self._background.spawn(self._settle(record, token)))
        return await self._store.get(record.id) or record

    async def _settle(self, record: BatchRecord, token: str) -> None:
        try:
            current = await self._store.get(record.id)
            if current is None or current.settled:
                return
            current.parts = record.parts
            results = []
            for part in current.parts:
                spec = self._spec(part)
                output = await self._upstream.content(spec, part.output_file_id) if part.output_file_id else b""
                errors = await self._upstream.content(spec, part.error_file_id) if part.error_file_id else b""
                results.append((part, output, errors))
            booked = await self._books.book(current, results)
            current.output_file_id = await self._file(current, "output", booked.output)
            current.error_file_id = await self._file(current, "errors", booked.errors)
            current.status = final_status(current)
            current.times.setdefault(f"{current.status}_at", int(time.time()))
            current.completed, current.failed = len(booked.output), len(booked.errors)
            current.cost, current.usage, current.settled = booked.cost, booked.usage, True
            await self._store.write(current, force=True)
            log.info("batch %s %s: %d lines answered, %d failed", current.id, current.status, current.completed,
                     current.failed)
        finally:
            await self._store.unclaim(record.id, token)

    async def _file(self, record: BatchRecord, kind: str, lines: list[bytes]) -> str | None:
        if not lines:
            return None
        now, content = int(time.time()), b"".join(line + b"\n" for line in lines)
        file = FileRecord(new_id("file-"), record.owner, f"{record.id}_{kind}.jsonl", "batch_output", len(content),
                          now, now + self._config.file_ttl_s)
        await self._store.put_file(file, content)
        return file.id

    async def run(self) -> None:
        """Follow every unsettled batch, every `poll_interval_s`, until cancelled."""
        interval = self._config.poll_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                if await self._store.poll_turn(interval):
                    await self.poll()
            except Exception:  # a poller that stopped would leave batches unsettled: log, go on
                log.exception("batch poll failed")

    async def poll(self) -> None:
        for batch_id in await self._store.pending():
            record = await self._store.get(batch_id)
            if record is None or record.settled:
                continue
            try:
                await self.refresh(record)
            except GatewayError as exc:
                log.warning("batch %s: not refreshed (%s)", batch_id, exc.message)
