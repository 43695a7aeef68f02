"""How each provider caches prompt prefixes, and what that predicts for one request.

- OpenAI caches by itself: prompts from 1,024 tokens, in 128-token increments, and reports the
  cached tokens inside `prompt_tokens`.
- Anthropic caches only up to a `cache_control` breakpoint, from a minimum length per model
  (1,024 tokens; 2,048 for the Haiku 3 family; 4,096 for Opus 4.5 and Haiku 4.5). A breakpoint
  writes the prefix (1.25x the input price) the first time and reads it (0.1x) within 5 minutes.
- Other providers: no prediction (their cached tokens, if reported, are still billed exactly).

The gateway adds one breakpoint, at the end of the stable prefix (everything but the last
message), when it is allowed to (`cache_control: auto` and that prefix was sent to the model
before, within the TTL, so the write will be repaid; or `always`), and never when the client
placed its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.cache.prefix_blocks import BLOCK_TOKENS, PromptBlocks
from gateway.cache.prefix_index import Warmth
from gateway.config.settings import ModelSpec

__all__ = ["Prediction", "anthropic_min_tokens", "client_marked", "predict", "with_breakpoint"]

OPENAI_MIN_TOKENS = 1024


@dataclass(frozen=True, slots=True)
class Prediction:
    cached: int = 0  # prompt tokens expected to be read from the provider's cache
    write: int = 0  # prompt tokens expected to be written to it (the breakpoint the gateway adds)
    breakpoint: bool = False  # the gateway adds an Anthropic cache_control breakpoint


NOTHING = Prediction()


def anthropic_min_tokens(upstream_model: str) -> int:
    name = upstream_model.lower()
    if any(tag in name for tag in ("opus-4-5", "haiku-4-5", "opus-4.5", "haiku-4.5")):
        return 4096
    if "haiku" in name:
        return 2048
    return 1024


def min_tokens(spec: ModelSpec) -> int | None:
    """The shortest prompt the model's provider can cache; None if we do not predict it."""
    if spec.wire == "anthropic":
        return anthropic_min_tokens(spec.upstream_model)
    if spec.provider in ("openai", "azure"):
        return OPENAI_MIN_TOKENS
    return None


def predict(spec: ModelSpec, blocks: PromptBlocks, warmth: Warmth, mode: str, marked_by_client: bool) -> Prediction:
    least = min_tokens(spec)
    if least is None:
        return NOTHING
    if spec.wire != "anthropic":
        warm = min(warmth.blocks * BLOCK_TOKENS, blocks.tokens)
        return Prediction(cached=warm) if warm >= least else NOTHING
    stable = blocks.stable_tokens
    if mode == "off" or marked_by_client or stable < least:
        return NOTHING
    sent_before = warmth.blocks >= stable // BLOCK_TOKENS
    if warmth.marked:
        return Prediction(cached=stable, breakpoint=True)
    if mode == "always" or sent_before:
        return Prediction(write=stable, breakpoint=True)
    return NOTHING


def client_marked(body: dict[str, Any]) -> bool:
    """Did the client place cache_control breakpoints itself? Then the gateway adds none."""
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content):
            return True
    return False


def with_breakpoint(messages: list[Any]) -> list[Any] | None:
    """`messages` with a cache_control breakpoint on the last text of the message before the last
    (the end of the stable prefix); None if that message has no text to mark."""
    if len(messages) < 2 or not isinstance(messages[-2], dict):
        return None
    message = messages[-2]
    content = message.get("content")
    if isinstance(content, str) and content:
        parts: list[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        parts = list(content)
    else:
        return None
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        if isinstance(part, dict) and part.get("type") == "text":
            parts[i] = {**part, "cache_control": {"type": "ephemeral"}}
            return [*messages[:-2], {**message, "content": parts}, messages[-1]]
    return None
