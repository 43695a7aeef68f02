"""The built-in catalog served when no config file is given.

Prices, context windows and capabilities come from litellm's bundled price table; keys come from
each provider's usual environment variable. A model whose key is missing is listed as unavailable.
Default quality scores come from a public leaderboard snapshot, each with its source; models
newer than the snapshot have none (they are served by name, and join tiers once given a score).
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any

from gateway.config.schema import GatewayConfig, parse_config

__all__ = ["BUILTIN_MODELS", "DEFAULT_TIERS", "builtin_config"]

_ARENA = "LMArena text leaderboard snapshot 2025-08-04 (shared/data/quality)"


def _arena(entry: str, score: int) -> tuple[float, str]:
    """Quality 0-100 from an arena score: (score - 1000) / 5, so 1500 -> 100 and 1250 -> 50."""
    return round((score - 1000) / 5, 1), f"{_ARENA}: '{entry}' {score}"


_NO_SCORE = (None, "no public score in the bundled snapshots (newer than 2025-08-04); set quality to route to it")

# (provider, name, (quality, where the quality comes from))
BUILTIN_MODELS: tuple[tuple[str, str, tuple[float | None, str]], ...] = (
    ("openai", "gpt-5", _NO_SCORE),
    ("openai", "gpt-5-mini", _NO_SCORE),
    ("openai", "gpt-5-nano", _NO_SCORE),
    ("openai", "gpt-4.1", _arena("GPT-4.1-2025-04-14", 1380)),
    ("openai", "gpt-4.1-mini", _arena("GPT-4.1-mini-2025-04-14", 1336)),
    ("openai", "gpt-4.1-nano", _arena("GPT-4.1-nano-2025-04-14", 1287)),
    ("openai", "gpt-4o", _arena("GPT-4o-2024-08-06", 1285)),
    ("openai", "gpt-4o-mini", _arena("GPT-4o-mini-2024-07-18", 1288)),
    ("openai", "o3", _arena("o3-2025-04-16", 1428)),
    ("openai", "o4-mini", _arena("o4-mini-2025-04-16", 1362)),
    ("anthropic", "claude-opus-4-5", _NO_SCORE),
    ("anthropic", "claude-sonnet-4-5", _NO_SCORE),
    ("anthropic", "claude-haiku-4-5", _NO_SCORE),
    ("deepseek", "deepseek-chat", _arena("DeepSeek-V3-0324", 1376)),
    ("deepseek", "deepseek-reasoner", _arena("DeepSeek-R1-0528", 1427)),
    ("mistral", "mistral-large-latest", _arena("Mistral-Large-2411", 1268)),
    ("mistral", "mistral-small-latest", _arena("Mistral-Small-2506", 1335)),
    ("gemini", "gemini-2.5-pro", _arena("Gemini-2.5-Pro", 1470)),
    ("gemini", "gemini-2.5-flash", _arena("Gemini-2.5-Flash", 1411)),
)

DEFAULT_TIERS = MappingProxyType({"economy": 55.0, "standard": 70.0, "premium": 85.0})


def builtin_config() -> GatewayConfig:
    models: list[dict[str, Any]] = [
        {"name": name, "provider": provider, "quality": quality, "quality_source": source}
        for provider, name, (quality, source) in BUILTIN_MODELS
    ]
    data: dict[str, Any] = {"models": models, "tiers": {t: {"min_quality": q} for t, q in DEFAULT_TIERS.items()}}
    if os.environ.get("GATEWAY_MASTER_KEY"):
        data["master_key"] = os.environ["GATEWAY_MASTER_KEY"]
    return parse_config(data, "built-in catalog")
