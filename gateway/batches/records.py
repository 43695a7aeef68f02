"""A batch and a file as the gateway keeps them (JSON in the store), and the OpenAI objects a
client gets for them (`Batch`, `FileObject`), under the gateway's own ids.

A batch (`BatchRecord`) belongs to one owner (the virtual key that created it, else the caller's
bearer token, hashed): another owner asking for its id gets 404, as for an id that never existed.
It keeps what it asked for (a model or a tier), where each line went (`routes`: custom_id ->
gateway model and counted prompt), the upstream batches it was sent as (`parts`: one per
upstream and key), the budget hold taken at submission and, once settled, its exact cost.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.access.budgets import Hold
from gateway.money.pricing import Cost, usd_text

__all__ = ["ACTIVE", "TERMINAL", "BatchRecord", "FileRecord", "Part", "new_id"]

# OpenAI's batch statuses: the ones a batch can still leave, and the ones it ends in.
ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_TIMES = ("in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
          "cancelling_at", "cancelled_at")
_COST_FIELDS = ("input", "cached_input", "cache_write", "output", "reasoning", "audio")


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


@dataclass(slots=True)
class FileRecord:
    """A file a client uploaded (`purpose: batch`), or one the gateway wrote (`batch_output`)."""

    id: str
    owner: str
    filename: str
    purpose: str
    size: int  # bytes
    created_at: int
    expires_at: int

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": self.size, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "expires_at": self.expires_at, "status_details": None}

    def encode(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def decode(cls, raw: bytes) -> FileRecord:
        return cls(**orjson.loads(raw))


@dataclass(slots=True)
class Part:
    """One upstream batch: the lines that go to one upstream (api_base) with one key."""

    model: str  # a gateway model of that upstream: its api_base and api_key are the part's
    upstream_file_id: str
    upstream_batch_id: str
    status: str = "validating"
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None  # why the upstream refused the batch, if it did

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclass(slots=True)
class BatchRecord:
    id: str
    owner: str  # "key:<id>", or "bearer:<sha256>" for an anonymous caller
    key_id: str  # for the ledger rows ("" when anonymous)
    key_alias: str
    team: str
    model: str  # the model or tier the lines asked for
    tier: str  # the tier, when `model` is one ("" by name)
    endpoint: str
    completion_window: str
    input_file_id: str
    created_at: int
    metadata: dict[str, Any] | None = None
    routes: dict[str, list[Any]] = field(default_factory=dict)  # custom_id -> [gateway model, prompt tokens]
    parts: list[Part] = field(default_factory=list)
    status: str = "validating"
    times: dict[str, int] = field(default_factory=dict)  # in_progress_at, completed_at, ... (unix seconds)
    hold: dict[str, Any] | None = None  # the budget hold (a zero one for a key without a budget)
    held_pico: int = 0  # what the hold reserved: the worst case of every line at batch prices
    cancel_requested: bool = False
    settled: bool = False  # priced, booked and the hold settled: exactly once
    cost: dict[str, int] = field(default_factory=dict)  # pico-USD per bucket, once settled
    usage: dict[str, int] = field(default_factory=dict)  # tokens, once settled
    completed: int = 0  # lines answered, once settled
    failed: int = 0
    output_file_id: str | None = None  # the gateway's own result files
    error_file_id: str | None = None
    version: int = 0  # the store's version when read (compare-and-set)

    def get_hold(self) -> Hold | None:
        return Hold(**self.hold) if self.hold is not None else None

    def total_cost(self) -> Cost:
        return Cost(**{f: self.cost.get(f, 0) for f in _COST_FIELDS}, service_tier="batch")

    def encode(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def decode(cls, raw: bytes, version: int) -> BatchRecord:
        data = orjson.loads(raw)
        data["parts"] = [Part(**p) for p in data.get("parts", ())]
        data["version"] = version
        return cls(**{k: v for k, v in data.items() if k in _BATCH_FIELDS})

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's Batch object, plus the exact money: `usage.cost` (USD) once settled, and
        `gateway` (`held_usd`, `cost_usd`: exact decimals; the lines each model took)."""
        counts = {"total": len(self.routes), "completed": self.completed, "failed": self.failed}
        if not self.settled:
            counts["completed"] = sum(p.completed for p in self.parts)
            counts["failed"] = sum(p.failed for p in self.parts)
        routed: dict[str, int] = {}
        for model, _ in self.routes.values():
            routed[model] = routed.get(model, 0) + 1
        body: dict[str, Any] = {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "errors": self._errors(), "model": self.model,
            "input_file_id": self.input_file_id, "completion_window": self.completion_window,
            "status": self.status, "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "created_at": self.created_at, **{name: self.times.get(name) for name in _TIMES},
            "request_counts": counts, "metadata": self.metadata, "usage": self._usage(),
            "gateway": {"held_usd": usd_text(self.held_pico),
                        "cost_usd": usd_text(self.total_cost().total) if self.settled else None,
                        "tier": self.tier or None, "routed": routed},
        }
        return body

    def _errors(self) -> dict[str, Any] | None:
        found = [e for p in self.parts for e in p.errors or ()]
        return {"object": "list", "data": found} if found else None

    def _usage(self) -> dict[str, Any] | None:
        if not self.settled:
            return None
        u = self.usage
        prompt = sum(u.get(k, 0) for k in ("input", "cached_input", "cache_write_5m", "cache_write_1h", "audio_input"))
        completion = u.get("output", 0) + u.get("reasoning", 0) + u.get("audio_output", 0)
        return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": u.get("cached_input", 0)},
                "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": u.get("reasoning", 0)},
                "total_tokens": prompt + completion, **self.total_cost().usage_fields()}


_BATCH_FIELDS = frozenset(f.name for f in dataclasses.fields(BatchRecord))
