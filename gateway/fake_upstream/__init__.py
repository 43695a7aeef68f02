"""A scripted fake upstream LLM provider (OpenAI Chat Completions + Anthropic Messages) on loopback."""

from __future__ import annotations

from gateway.fake_upstream.behaviour import Behaviour
from gateway.fake_upstream.server import FakeUpstream, FakeUpstreamThread

__all__ = ["Behaviour", "FakeUpstream", "FakeUpstreamThread"]
