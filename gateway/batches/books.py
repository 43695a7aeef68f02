"""A finished batch's results, priced and booked line by line: each answered line's usage is
priced at the model's batch rates by the pricing core (`price_usage` with `service_tier:
"batch"`) and gets its `usage.cost` and `usage.cost_details` in the gateway's output file, one
ledger row (`request_id` `<batch id>:<custom_id>`, `service_tier` batch), its spend in the daily
aggregates and in `gateway_spend_usd_total{service_tier="batch"}`. A line the upstream reports no
usage for is billed from the gateway's own count (`gateway_usage_estimated_total`). Failed lines
cost nothing and go to the error file (their messages redacted).

The budget is then settled once, against the batch's hold, with the exact sum of the lines:
the key's spend grows by exactly what its ledger rows add up to, and the rest of the hold goes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.access.budgets import Budgets
from gateway.batches.records import BatchRecord, Part
from gateway.config.settings import ModelSpec, Settings
from gateway.ledger.spend_stats import SpendStats
from gateway.ledger.store import Ledger, LedgerRecord, iso
from gateway.money.pricing import Cost, Usage, price_usage
from gateway.observability.metrics import Metrics
from gateway.redaction import Redactor
from gateway.tokens.counter import TokenCounter

__all__ = ["BatchBooks", "Booked", "ledger_row"]

log = logging.getLogger("gateway.batches")

_COSTS = ("input", "cached_input", "cache_write", "output", "reasoning", "audio")
_TOKENS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning", "audio_input",
           "audio_output")


@dataclass(slots=True)
class Booked:
    """What a batch's results came to."""

    output: list[bytes] = field(default_factory=list)  # the gateway's output file, a line each
    errors: list[bytes] = field(default_factory=list)  # its error file
    cost: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COSTS, 0))  # pico-USD per bucket
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TOKENS, 0))

    @property
    def total(self) -> int:
        return sum(self.cost.values())

    def add(self, usage: Usage, cost: Cost) -> None:
        for name in _COSTS:
            self.cost[name] += getattr(cost, name)
        for name in _TOKENS:
            self.usage[name] += getattr(usage, name)


def ledger_row(record: BatchRecord, custom_id: str, spec: ModelSpec, usage: Usage, cost: Cost, at: datetime,
               latency_ms: float) -> LedgerRecord:
    """One batch line's ledger row."""
    return LedgerRecord(
        time=iso(at), request_id=f"{record.id}:{custom_id}", key_id=record.key_id, key_alias=record.key_alias,
        team=record.team, model=spec.name, provider=spec.provider, tier=record.tier, input_tokens=usage.input,
        cached_input_tokens=usage.cached_input, cache_write_tokens=usage.cache_write_5m + usage.cache_write_1h,
        output_tokens=usage.output, reasoning_tokens=usage.reasoning, cost_input_pico=cost.input,
        cost_cached_input_pico=cost.cached_input, cost_cache_write_pico=cost.cache_write,
        cost_output_pico=cost.output, cost_reasoning_pico=cost.reasoning, cost_pico=cost.total, cache="bypass",
        route="", status="200", latency_ms=latency_ms, audio_tokens=usage.audio_input + usage.audio_output,
        cost_audio_pico=cost.audio, service_tier=cost.service_tier,
    )


def _items(content: bytes) -> Iterator[dict[str, Any]]:
    for raw in content.split(b"\n"):
        if raw.strip():
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError:
                log.error("a batch result line is not JSON: %r", raw[:200])
                continue
            if isinstance(item, dict):
                yield item


class BatchBooks:
    def __init__(self, settings: Settings, tokens: TokenCounter, metrics: Metrics, ledger: Ledger, stats: SpendStats,
                 budgets: Budgets, redact: Redactor) -> None:
        self._settings = settings
        self._tokens = tokens
        self._metrics = metrics
        self._ledger = ledger
        self._stats = stats
        self._budgets = budgets
        self._redact = redact

    async def book(self, record: BatchRecord, results: list[tuple[Part, bytes, bytes]]) -> Booked:
        """Price and book every answered line of `results` (per part: its output file and its error
        file), then settle the batch's budget hold with their sum."""
        booked, at = Booked(), datetime.now(UTC)
        latency_ms = round(max(time.time() - record.created_at, 0) * 1000, 3)
        for part, output, errors in results:
            for item in _items(output):
                await self._line(record, part, item, booked, at, latency_ms)
            booked.errors.extend(self._error_line(item) for item in _items(errors))
        hold = record.get_hold()
        if hold is not None:  # (idempotent per hold: a settlement retried after a crash is not counted twice)
            await self._budgets.settle(hold, booked.total, at)
        return booked

    def _spec(self, record: BatchRecord, part: Part, custom_id: str) -> tuple[ModelSpec | None, int]:
        route = record.routes.get(custom_id)
        models = self._settings.models
        if route is not None and route[0] in models:
            return models[route[0]], int(route[1])
        log.error("batch %s: result line %r not routed by the gateway: billed as model '%s'", record.id, custom_id,
                  part.model)
        return models.get(part.model), 0

    async def _line(self, record: BatchRecord, part: Part, item: dict[str, Any], booked: Booked, at: datetime,
                    latency_ms: float) -> None:
        response, custom_id = item.get("response"), str(item.get("custom_id"))
        body = response.get("body") if isinstance(response, dict) else None
        if not isinstance(response, dict) or response.get("status_code") != 200 or not isinstance(body, dict):
            booked.errors.append(self._error_line(item))
            return
        spec, prompt = self._spec(record, part, custom_id)
        if spec is None:
            log.error("batch %s: line %r answered by an unknown model: not billed", record.id, custom_id)
            booked.output.append(orjson.dumps(item))
            return
        usage, usage_dict = self._usage(spec, body, prompt)
        cost = price_usage(usage, spec.price)
        body["usage"] = {**usage_dict, **cost.usage_fields()}
        booked.output.append(orjson.dumps(item))
        booked.add(usage, cost)
        self._metrics.record_usage(spec.name, spec.provider, record.tier, record.team, usage, cost)
        self._ledger.add(ledger_row(record, custom_id, spec, usage, cost, at, latency_ms))
        await self._stats.add(at, cost.total, model=spec.name, tier=record.tier, key=record.key_id, team=record.team)

    def _usage(self, spec: ModelSpec, body: dict[str, Any], prompt: int) -> tuple[Usage, dict[str, Any]]:
        """The line's usage at the batch tier: the upstream's, else the gateway's own count."""
        reported = body.get("usage")
        if isinstance(reported, dict):
            return Usage.from_openai(reported, "batch"), reported
        choices = body.get("choices")
        text = "".join(str((c.get("message") or {}).get("content") or "") for c in choices
                       if isinstance(c, dict)) if isinstance(choices, list) else ""
        usage = Usage(input=prompt, output=self._tokens.count_text(text, spec.upstream_model), service_tier="batch")
        self._metrics.child(self._metrics.usage_estimated, spec.name, "missing").inc()
        return usage, usage.to_openai()

    def _error_line(self, item: dict[str, Any]) -> bytes:
        return self._redact(orjson.dumps(item).decode()).encode()
