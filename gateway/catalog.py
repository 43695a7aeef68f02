"""The built-in catalog served when no config file is given.

Prices, context windows and capabilities come from litellm's bundled price table; keys come from
each provider's usual environment variable. A model whose key is missing is listed as unavailable.
Quality scores and default tiers arrive with cost-aware routing.
"""

from __future__ import annotations

import os
from typing import Any

from gateway.config import GatewayConfig, parse_config

__all__ = ["BUILTIN_MODELS", "builtin_config"]

BUILTIN_MODELS: tuple[tuple[str, str], ...] = (
    ("openai", "gpt-5"),
    ("openai", "gpt-5-mini"),
    ("openai", "gpt-5-nano"),
    ("openai", "gpt-4.1"),
    ("openai", "gpt-4.1-mini"),
    ("openai", "gpt-4.1-nano"),
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "o3"),
    ("openai", "o4-mini"),
    ("anthropic", "claude-opus-4-5"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("deepseek", "deepseek-chat"),
    ("deepseek", "deepseek-reasoner"),
    ("mistral", "mistral-large-latest"),
    ("mistral", "mistral-small-latest"),
    ("gemini", "gemini-2.5-pro"),
    ("gemini", "gemini-2.5-flash"),
)


def builtin_config() -> GatewayConfig:
    models: list[dict[str, Any]] = [{"name": name, "provider": provider} for provider, name in BUILTIN_MODELS]
    data: dict[str, Any] = {"models": models}
    if os.environ.get("GATEWAY_MASTER_KEY"):
        data["master_key"] = os.environ["GATEWAY_MASTER_KEY"]
    return parse_config(data, "built-in catalog")
