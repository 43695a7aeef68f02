"""Read litellm's bundled price table WITHOUT importing litellm (which costs seconds and ~200 MB).

The table is per-token USD floats; they are converted once, at start-up, to exact pico-USD via
their shortest decimal representation (`repr`), so 7.5e-08 becomes exactly 75,000 pico-USD.
"""

from __future__ import annotations

import importlib.util
import re
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from gateway.money.pricing import PICO_PER_USD, Price, Rates, scale

__all__ = ["SERVICE_SUFFIXES", "PriceTable", "load_price_table"]

_TABLE_FILE = "model_prices_and_context_window_backup.json"
_TIER_KEY = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")
# The table's key suffix of each service tier's prices (`input_cost_per_token_flex`, ...).
SERVICE_SUFFIXES = MappingProxyType({"flex": "_flex", "priority": "_priority", "batch": "_batches"})


def _table_path() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / _TABLE_FILE
    return path if path.exists() else None


def _pico(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int((Decimal(repr(value)) * PICO_PER_USD).to_integral_value())


class PriceTable:
    """Model id -> litellm entry; lookups try `provider/model` then `model`."""

    def __init__(self, entries: dict[str, Any]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, provider: str, model: str) -> dict[str, Any] | None:
        for key in (f"{provider}/{model}", model):
            found = self._entries.get(key)
            if isinstance(found, dict):
                return found
        return None

    def price(self, provider: str, model: str) -> Price | None:
        entry = self.entry(provider, model)
        return price_from_entry(entry) if entry else None


def _rates(entry: dict[str, Any], suffix: str, fallback: Rates | None) -> Rates | None:
    inp = _pico(entry.get(f"input_cost_per_token{suffix}"))
    out = _pico(entry.get(f"output_cost_per_token{suffix}"))
    if fallback is None and (inp is None or out is None):
        return None
    if fallback is not None:
        inp = fallback.input if inp is None else inp
        out = fallback.output if out is None else out
    assert inp is not None and out is not None
    cached = _pico(entry.get(f"cache_read_input_token_cost{suffix}"))
    write = _pico(entry.get(f"cache_creation_input_token_cost{suffix}"))
    write_1h = _pico(entry.get(f"cache_creation_input_token_cost_above_1hr{suffix}"))
    reasoning = _pico(entry.get("output_cost_per_reasoning_token")) if not suffix else None
    base = fallback
    cached = cached if cached is not None else (base.cached_input if base else inp)
    write = write if write is not None else (base.cache_write_5m if base else inp)
    write_1h = write_1h if write_1h is not None else (base.cache_write_1h if base else write)
    if reasoning is None:  # reasoning follows the output price unless priced separately
        reasoning = base.reasoning if base and base.reasoning != base.output else out
    audio_in = _pico(entry.get(f"input_cost_per_audio_token{suffix}"))
    audio_out = _pico(entry.get(f"output_cost_per_audio_token{suffix}"))
    return Rates(inp, cached, write, write_1h, out, reasoning,
                 audio_in if audio_in is not None else (base.audio_input if base else None),
                 audio_out if audio_out is not None else (base.audio_output if base else None))


def _service_price(entry: dict[str, Any], price: Price, suffix: str) -> Price | None:
    """The model's price at one service tier, or None when the table gives it none. A bucket the
    tier does not price (often cache reads and writes) is the default tier's, scaled by the
    tier's input (or output) ratio: the discount stacks."""
    inp = _pico(entry.get(f"input_cost_per_token{suffix}"))
    out = _pico(entry.get(f"output_cost_per_token{suffix}"))
    if inp is None or out is None:
        return None
    base = _rates(entry, suffix, price.base.scaled(inp, out))
    assert base is not None
    tiers = []
    for threshold, rates in price.tiers:  # long-context rates at this tier: given, else scaled alike
        scaled = rates.scaled(scale(rates.input, base.input, price.base.input),
                              scale(rates.output, base.output, price.base.output))
        tiers.append((threshold, _rates(entry, f"_above_{threshold // 1000}k_tokens{suffix}", scaled) or scaled))
    return Price(base=base, tiers=tuple(tiers))


def price_from_entry(entry: dict[str, Any]) -> Price | None:
    base = _rates(entry, "", None)
    if base is None:
        return None
    tiers: list[tuple[int, Rates]] = []
    for key in entry:
        match = _TIER_KEY.match(key)
        if match:
            suffix = key[len("input_cost_per_token") :]
            tier = _rates(entry, suffix, base)
            if tier is not None:
                tiers.append((int(match.group(1)) * 1000, tier))
    price = Price(base=base, tiers=tuple(sorted(tiers, key=lambda t: t[0])))
    services = tuple((name, found) for name, suffix in SERVICE_SUFFIXES.items()
                     if (found := _service_price(entry, price, suffix)) is not None)
    return Price(base=price.base, tiers=price.tiers, services=services) if services else price


def load_price_table(path: Path | None = None) -> PriceTable:
    """Load the table from litellm's package (or `path`); empty if litellm is not installed."""
    path = path or _table_path()
    if path is None:
        return PriceTable({})
    data = orjson.loads(path.read_bytes())
    return PriceTable({k: v for k, v in data.items() if isinstance(v, dict)})
