"""The adapter registry: one adapter per wire format, keyed by `ModelSpec.wire`."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider
from gateway.providers.litellm_provider import LitellmProvider
from gateway.providers.native import NativeProvider
from gateway.providers.openai import OpenAIProvider
from gateway.providers.transport import HTTPTransport
from gateway.providers.upstream_http import UpstreamPool

__all__ = ["ADAPTERS", "build_native", "build_providers"]

ADAPTERS: MappingProxyType[str, Any] = MappingProxyType({
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "litellm": LitellmProvider,
})


def build_providers(pool: UpstreamPool) -> dict[str, Provider]:
    """One adapter instance per wire format; the HTTP adapters share one connection pool."""
    transport = HTTPTransport(pool)
    return {wire: cls(transport) for wire, cls in ADAPTERS.items()}


def build_native(pool: UpstreamPool) -> NativeProvider:
    """The native pass-through (the client's own Messages or Responses request), on the same pool."""
    return NativeProvider(HTTPTransport(pool))
