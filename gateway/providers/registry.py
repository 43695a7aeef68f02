"""The adapter registry: one adapter per wire format, keyed by `ModelSpec.wire`."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import aiohttp

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider
from gateway.providers.litellm_provider import LitellmProvider
from gateway.providers.openai import OpenAIProvider

__all__ = ["ADAPTERS", "build_providers"]

ADAPTERS: MappingProxyType[str, Any] = MappingProxyType({
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "litellm": LitellmProvider,
})


def build_providers(session: aiohttp.ClientSession) -> dict[str, Provider]:
    """One adapter instance per wire format, sharing the pooled HTTP session."""
    return {wire: cls(session) for wire, cls in ADAPTERS.items()}
