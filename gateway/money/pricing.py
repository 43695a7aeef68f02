"""The pricing core: the ONE place where money is computed.

Every figure the gateway reports (response body, header, stream usage chunk, metrics, and later
routing estimates, budgets and the ledger) comes from `price_usage`. Money is integer pico-USD
(1e-12 USD): any per-million-token price with up to six decimals is exact, and sums never drift.

Usage is normalised into disjoint billing buckets, so every token is billed exactly once:
uncached input, cached input (read), 5-minute cache write, 1-hour cache write, output excluding
reasoning, reasoning, and audio in and out (spoken tokens cost several times text ones).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any

__all__ = [
    "PICO_PER_USD", "SERVICE_TIERS", "Cost", "FlatRates", "Price", "Rates", "Usage", "cache_effect", "estimate_cost",
    "price_usage", "scale", "service_tier_of", "usd_text", "worst_case_cost",
]

PICO_PER_USD = 10**12
_PICO_PER_USD_PER_MTOK = 10**6  # $1 per million tokens == 1e6 pico-USD per token


def per_mtok_to_pico(per_mtok: Decimal) -> int:
    """Price in USD per million tokens -> integer pico-USD per token."""
    return int((per_mtok * _PICO_PER_USD_PER_MTOK).to_integral_value())


# The service tiers a provider may bill a request at. OpenAI reports `default`, `flex`,
# `priority` (and `scale`, legacy reserved capacity, billed as default); Anthropic reports
# `standard`, `priority` and, for Message Batches, `batch`.
SERVICE_TIERS = ("default", "flex", "priority", "batch")
_SERVICE_NAMES = MappingProxyType({"flex": "flex", "priority": "priority", "batch": "batch"})


def service_tier_of(reported: Any) -> str:
    """The service tier a response reports, as one of `SERVICE_TIERS` (a bounded metric label):
    anything else (`standard`, `scale`, `auto`, missing) is the default tier."""
    return _SERVICE_NAMES.get(reported, "default") if isinstance(reported, str) else "default"


def scale(value: int, new: int, old: int) -> int:
    """`value` x new / old, to the nearest integer (`value` itself when `old` is 0)."""
    return (value * new + old // 2) // old if old else value


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class Usage:
    input: int = 0  # uncached input tokens
    cached_input: int = 0  # cache reads
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    output: int = 0  # completion tokens excluding reasoning and audio
    reasoning: int = 0
    audio_input: int = 0  # uncached audio input tokens
    audio_output: int = 0
    service_tier: str = "default"  # what the provider billed it at: one of SERVICE_TIERS

    @property
    def prompt_tokens(self) -> int:
        return self.input + self.cached_input + self.cache_write_5m + self.cache_write_1h + self.audio_input

    @property
    def completion_tokens(self) -> int:
        return self.output + self.reasoning + self.audio_output

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any], service_tier: Any = None) -> Usage:
        """OpenAI convention: cached (and any cache-write) tokens are INSIDE prompt_tokens,
        reasoning tokens are INSIDE completion_tokens. `service_tier`: what the response reports
        (OpenAI puts it beside `usage`, not in it)."""
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details") or {}
        cached = _int(details.get("cached_tokens")) or _int(usage.get("prompt_cache_hit_tokens"))
        write = _int(details.get("cache_write_tokens")) or _int(details.get("cache_creation_tokens"))
        out_details = usage.get("completion_tokens_details") or {}
        reasoning = _int(out_details.get("reasoning_tokens"))
        cached = min(cached, prompt)
        write = min(write, prompt - cached)
        reasoning = min(reasoning, completion)
        audio_in, audio_out = details.get("audio_tokens"), out_details.get("audio_tokens")
        if audio_in or audio_out:  # (rare: most usage has no audio, or says 0)
            audio_in = min(_int(audio_in), prompt - cached - write)
            audio_out = min(_int(audio_out), completion - reasoning)
        else:
            audio_in = audio_out = 0
        return cls(
            input=prompt - cached - write - audio_in,
            cached_input=cached,
            cache_write_5m=write,
            output=completion - reasoning - audio_out,
            reasoning=reasoning,
            audio_input=audio_in,
            audio_output=audio_out,
            service_tier=service_tier_of(service_tier) if service_tier else "default",
        )

    @classmethod
    def from_anthropic(cls, usage: Mapping[str, Any]) -> Usage:
        """Anthropic convention: cache reads and writes are OUTSIDE input_tokens; writes may be
        split into 5-minute and 1-hour lifetimes in `cache_creation`; the tier billed is
        `usage.service_tier` (standard | priority | batch)."""
        write_total = _int(usage.get("cache_creation_input_tokens"))
        split = usage.get("cache_creation") or {}
        write_1h = _int(split.get("ephemeral_1h_input_tokens"))
        write_5m = _int(split.get("ephemeral_5m_input_tokens"))
        write_5m += max(write_total - write_1h - write_5m, 0)  # unsplit writes are 5-minute
        return cls(
            input=_int(usage.get("input_tokens")),
            cached_input=_int(usage.get("cache_read_input_tokens")),
            cache_write_5m=write_5m,
            cache_write_1h=write_1h,
            output=_int(usage.get("output_tokens")),
            service_tier=service_tier_of(usage.get("service_tier")),
        )

    def to_openai(self) -> dict[str, Any]:
        """What clients always get: the OpenAI usage convention."""
        prompt_details: dict[str, int] = {"cached_tokens": self.cached_input}
        writes = self.cache_write_5m + self.cache_write_1h
        if writes:
            prompt_details["cache_write_tokens"] = writes
            if self.cache_write_1h:  # (the 1-hour part: what an Anthropic-format answer reports apart)
                prompt_details["cache_write_1h_tokens"] = self.cache_write_1h
        completion_details = {"reasoning_tokens": self.reasoning}
        if self.audio_input:
            prompt_details["audio_tokens"] = self.audio_input
        if self.audio_output:
            completion_details["audio_tokens"] = self.audio_output
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": prompt_details,
            "completion_tokens_details": completion_details,
        }


@dataclass(frozen=True, slots=True)
class Rates:
    """Integer pico-USD per token for each billing bucket."""

    input: int
    cached_input: int
    cache_write_5m: int
    cache_write_1h: int
    output: int
    reasoning: int
    audio_input: int | None = None  # None: the model takes no audio (a request with audio is refused)
    audio_output: int | None = None

    @property
    def audio(self) -> bool:
        return self.audio_input is not None and self.audio_output is not None

    def scaled(self, input_rate: int, output_rate: int) -> Rates:
        """These rates at another service tier whose input and output rates are given: every
        other bucket scaled by the same ratio (an input-side bucket by input_rate / input, an
        output-side one by output_rate / output), so a batch discount stacks with cache reads
        and writes. Rounded to the nearest pico-USD per token."""
        inp, out, a_in, a_out = self.input, self.output, self.audio_input, self.audio_output
        return Rates(input_rate, scale(self.cached_input, input_rate, inp), scale(self.cache_write_5m, input_rate, inp),
                     scale(self.cache_write_1h, input_rate, inp), output_rate, scale(self.reasoning, output_rate, out),
                     None if a_in is None else scale(a_in, input_rate, inp),
                     None if a_out is None else scale(a_out, output_rate, out))


@dataclass(frozen=True, slots=True)
class Price:
    base: Rates
    # Long-context tiers: (above_prompt_tokens, rates), ascending. A request whose prompt is
    # longer than the threshold is billed entirely at that tier's rates.
    tiers: tuple[tuple[int, Rates], ...] = field(default=())
    # The other service tiers' prices (flex, priority, batch), where the model has them: a
    # usage billed at a tier with no price of its own is billed at this (the default) price.
    services: tuple[tuple[str, Price], ...] = field(default=())

    def for_service(self, service_tier: str) -> Price:
        """The price at `service_tier` (one of SERVICE_TIERS); this one for `default` or for a
        tier the model has no price for."""
        for name, price in self.services:
            if name == service_tier:
                return price
        return self

    def has_service(self, service_tier: str) -> bool:
        return any(name == service_tier for name, _ in self.services)

    def rates_for(self, prompt_tokens: int) -> Rates:
        if not self.tiers:
            return self.base
        rates = self.base
        for threshold, tier_rates in self.tiers:
            if prompt_tokens > threshold:
                rates = tier_rates
        return rates


def usd_text(pico: int) -> str:
    """The exact decimal USD string of a pico-USD amount, e.g. '0.00000396' (no float, no Decimal)."""
    if not pico:
        return "0"
    digits = str(abs(pico)).rjust(13, "0")  # at least one digit before the 12 decimals
    whole, frac = digits[:-12], digits[-12:].rstrip("0")
    return ("-" if pico < 0 else "") + (f"{whole}.{frac}" if frac else whole)


def _usd(pico: int) -> float:
    # int / int is correctly rounded in Python: the same float as float(Decimal(pico) / 10**12).
    return pico / PICO_PER_USD


@dataclass(slots=True)
class Cost:
    """Integer pico-USD per bucket. Treat it as read-only. (Not `frozen`: a frozen dataclass
    costs ~1.7 us more to build, and every request builds one, a routed one two.)"""

    input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    audio: int = 0
    service_tier: str = "default"  # the tier it was priced at (SERVICE_TIERS)

    @property
    def total(self) -> int:
        return self.input + self.cached_input + self.cache_write + self.output + self.reasoning + self.audio

    @property
    def usd(self) -> Decimal:
        return Decimal(self.total).scaleb(-12)

    def header_value(self) -> str:
        """Exact decimal USD string, e.g. '0.000123'."""
        return usd_text(self.total)

    def usage_fields(self) -> dict[str, Any]:
        """`usage.cost` and `usage.cost_details`, in USD numbers (`audio` only when there was some;
        `service_tier` only when it was not the default tier)."""
        details = {
            "input": _usd(self.input),
            "cached_input": _usd(self.cached_input),
            "cache_write": _usd(self.cache_write),
            "output": _usd(self.output),
            "reasoning": _usd(self.reasoning),
        }
        if self.audio:
            details["audio"] = _usd(self.audio)
        if self.service_tier != "default":
            details["service_tier"] = self.service_tier  # type: ignore[assignment]
        return {"cost": _usd(self.total), "cost_details": details}


def estimate_cost(price: Price, input_tokens: int, output_tokens: int, cached: int = 0, write: int = 0,
                  reasoning: int = 0) -> int:
    """The cost in pico-USD of a prompt of `input_tokens` of which `cached` are expected to be
    read from the provider's prompt cache and `write` written to it (5-minute), plus
    `output_tokens` output and `reasoning` reasoning tokens: what `price_usage` returns for that
    usage, without building the per-bucket breakdown (routing prices every candidate of every
    request with it)."""
    r = price.rates_for(input_tokens)
    return ((input_tokens - cached - write) * r.input + cached * r.cached_input + write * r.cache_write_5m
            + output_tokens * r.output + reasoning * r.reasoning)


class FlatRates:
    """Models priced without long-context tiers, for ranking by estimated cost: input tokens x
    input rate + expected output tokens x output rate, as `estimate_cost` computes it with
    nothing cached. Each estimate is a line in the input token count, so an order found for one
    prompt length holds over a whole range of lengths, which `cheapest` returns with it."""

    @classmethod
    def of(cls, prices: Sequence[Price]) -> FlatRates | None:
        """None if any of the prices has long-context tiers (then price each with `estimate_cost`)."""
        return None if any(p.tiers for p in prices) else cls(prices)

    def __init__(self, prices: Sequence[Price]) -> None:
        self._rates = tuple((p.base.input, p.base.output) for p in prices)

    def estimate(self, i: int, input_tokens: int, output_tokens: int) -> int:
        """Model `i`'s estimated cost in pico-USD."""
        rate_in, rate_out = self._rates[i]
        return input_tokens * rate_in + output_tokens * rate_out

    def cheapest(self, input_tokens: int, outputs: Sequence[int], limit: int | None) -> tuple[list[int], int, int]:
        """The indices of the `limit` cheapest models, cheapest first (equal costs keep the
        models' order), and the range of input token counts (lo, hi) over which the same
        models come first, in the same order, for the same `outputs`."""
        n, rates = input_tokens, self._rates
        costs = [n * a + o * b for (a, b), o in zip(rates, outputs, strict=True)]
        order = sorted(range(len(costs)), key=costs.__getitem__)  # stable: ties keep index order
        top = order[:limit]
        # Each model must stay ahead of the next in `top`, and the last of `top` ahead of the
        # rest: p before q while n' * (a_p - a_q) + (k_p - k_q) <= 0 (< 0 if q has the lower
        # index), k being the output part. Exact integer bounds on n'.
        pairs = [*zip(top, top[1:], strict=False), *((top[-1], r) for r in order[len(top):] if top)]
        lo, hi = 0, sys.maxsize
        for p, q in pairs:
            (a_p, b_p), (a_q, b_q) = rates[p], rates[q]
            slope, gap, slack = a_p - a_q, outputs[p] * b_p - outputs[q] * b_q, 0 if p < q else -1
            if slope > 0:
                hi = min(hi, (slack - gap) // slope)
            elif slope < 0:
                lo = max(lo, -((gap - slack) // slope))
        return top, lo, hi


def worst_case_cost(price: Price, input_tokens: int, output_tokens: int) -> int:
    """The most `input_tokens` of prompt and `output_tokens` of completion can cost: every input
    token at the dearest input bucket (plain, or a 5-minute or 1-hour cache write) and every
    output token at the dearer of output and reasoning. What budgets reserve."""
    r = price.rates_for(input_tokens)
    return (input_tokens * max(r.input, r.cache_write_5m, r.cache_write_1h, r.audio_input or 0)
            + output_tokens * max(r.output, r.reasoning, r.audio_output or 0))


def cache_effect(usage: Usage, price: Price) -> tuple[int, int]:
    """(read savings, write premium) in pico-USD of the prompt-cache tokens in `usage`: what the
    cached reads would have cost as plain input minus what they cost, and what the cache writes
    cost minus what they would have cost as plain input."""
    actual = price_usage(usage, price)
    plain_reads = price_usage(replace(usage, input=usage.input + usage.cached_input, cached_input=0), price)
    writes = usage.cache_write_5m + usage.cache_write_1h
    plain_writes = price_usage(replace(usage, input=usage.input + writes, cache_write_5m=0, cache_write_1h=0), price)
    return (plain_reads.input - actual.input - actual.cached_input,
            actual.input + actual.cache_write - plain_writes.input)


def price_usage(usage: Usage, price: Price) -> Cost:
    """Price one usage record for one model, at the service tier it was billed at. The only
    function that computes money."""
    if usage.service_tier != "default":
        price = price.for_service(usage.service_tier)
    r = price.rates_for(usage.prompt_tokens) if price.tiers else price.base
    audio = 0
    if usage.audio_input or usage.audio_output:  # unpriced audio (never asked for) at the text rates
        audio = (usage.audio_input * (r.input if r.audio_input is None else r.audio_input)
                 + usage.audio_output * (r.output if r.audio_output is None else r.audio_output))
    return Cost(  # input, cached_input, cache_write, output, reasoning, audio, tier (positional: cheaper)
        usage.input * r.input,
        usage.cached_input * r.cached_input,
        usage.cache_write_5m * r.cache_write_5m + usage.cache_write_1h * r.cache_write_1h,
        usage.output * r.output,
        usage.reasoning * r.reasoning,
        audio,
        usage.service_tier,
    )
