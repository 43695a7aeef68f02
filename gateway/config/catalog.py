"""The built-in catalog served when no config file is given.

Prices, context windows and capabilities come from litellm's bundled price table; keys come from
each provider's usual environment variable. A model whose key is missing is listed as unavailable.
Default quality scores come from LMArena's 2025-12-11 text leaderboard (overall rating), each
with its source row.
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any

from gateway.config.schema import GatewayConfig, parse_config

__all__ = ["BUILTIN_MODELS", "DEFAULT_TIERS", "builtin_config"]

_ARENA = ("LMArena text leaderboard, category 'full', 2025-12-11 "
          "(shared/data/quality/lmarena_text_categories_2025-12-11.csv)")


def _arena(row: str, rating: float, note: str = "") -> tuple[float, str]:
    """Quality 0-100 from an arena rating: (rating - 1000) / 5, so 1500 -> 100 and 1250 -> 50."""
    return round((rating - 1000) / 5, 1), f"{_ARENA}: '{row}' {rating:g}{note}"


# (provider, name, (quality, where the quality comes from)). Every model here is priced in
# litellm's bundled table; models with an arena score but no price there (Gemini 3, Grok 4) are
# left out: a model with no price cannot be billed. Arena rows were matched to provider ids by
# hand; where the row is a variant (a reasoning effort, a dated release), the note says so.
BUILTIN_MODELS: tuple[tuple[str, str, tuple[float | None, str]], ...] = (
    ("openai", "gpt-5.1", _arena("gpt-5.1", 1420.8)),
    ("openai", "gpt-5", _arena("gpt-5-high", 1407.3, " (high effort; the API's default is medium)")),
    ("openai", "gpt-5-mini", _arena("gpt-5-mini-high", 1375.2, " (high effort; the API's default is medium)")),
    ("openai", "gpt-5-nano", _arena("gpt-5-nano-high", 1320.7, " (high effort; the API's default is medium)")),
    ("openai", "gpt-4.1", _arena("gpt-4.1-2025-04-14", 1382.4)),
    ("openai", "gpt-4.1-mini", _arena("gpt-4.1-mini-2025-04-14", 1340.5)),
    ("openai", "gpt-4o-mini", _arena("gpt-4o-mini-2024-07-18", 1287.2)),
    ("openai", "o3", _arena("o3-2025-04-16", 1410.8)),
    ("openai", "o4-mini", _arena("o4-mini-2025-04-16", 1354.0)),
    ("anthropic", "claude-opus-4-5", _arena("claude-opus-4-5-20251101", 1446.4)),
    ("anthropic", "claude-sonnet-4-5", _arena("claude-sonnet-4-5-20250929", 1426.6)),
    ("anthropic", "claude-haiku-4-5", _arena("claude-haiku-4-5-20251001", 1384.2)),
    ("deepseek", "deepseek-chat", _arena("deepseek-v3.2", 1416.8, " (the API's deepseek-chat is V3.2)")),
    ("deepseek", "deepseek-reasoner", _arena("deepseek-v3.2-thinking", 1417.3,
                                             " (the API's deepseek-reasoner is V3.2 thinking)")),
    ("mistral", "mistral-large-latest", _arena("mistral-large-3", 1431.7)),
    ("mistral", "mistral-medium-latest", _arena("mistral-medium-2508", 1430.4)),
    ("mistral", "mistral-small-latest", _arena("mistral-small-2506", 1339.4)),
    ("gemini", "gemini-2.5-pro", _arena("gemini-2.5-pro", 1464.5)),
    ("gemini", "gemini-2.5-flash", _arena("gemini-2.5-flash", 1415.1)),
)

# Each tier has candidates from several providers: economy (60) from all five, standard (75)
# gpt-5-mini, gpt-4.1, Claude Haiku 4.5 and up, premium (84) GPT-5.1, Claude Sonnet and Opus 4.5,
# Mistral Large 3 and Gemini 2.5 Pro.
DEFAULT_TIERS = MappingProxyType({"economy": 60.0, "standard": 75.0, "premium": 84.0})


def builtin_config() -> GatewayConfig:
    models: list[dict[str, Any]] = [
        {"name": name, "provider": provider, "quality": quality, "quality_source": source}
        for provider, name, (quality, source) in BUILTIN_MODELS
    ]
    data: dict[str, Any] = {"models": models, "tiers": {t: {"min_quality": q} for t, q in DEFAULT_TIERS.items()}}
    if os.environ.get("GATEWAY_MASTER_KEY"):
        data["master_key"] = os.environ["GATEWAY_MASTER_KEY"]
    return parse_config(data, "built-in catalog")
