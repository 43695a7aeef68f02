"""A prompt as a chain of fixed-size token blocks, the unit providers cache prefixes in.

The prompt is laid out in the order providers read it (tools, then messages: system first),
each message opened by a role marker. Block i's hash is the digest of every token up to the end
of block i: two prompts share the first k block hashes exactly when they share their first k
blocks of tokens. The "stable prefix" is everything but the last message
(what a conversation's next turn resends unchanged); its own hash marks where an Anthropic
cache breakpoint would go.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import blake2b
from types import MappingProxyType
from typing import Any

import orjson

from gateway.tokens import TokenCounter

__all__ = ["BLOCK_TOKENS", "PromptBlocks", "likely_tokens_at_least", "prompt_blocks"]

BLOCK_TOKENS = 128  # OpenAI caches in 128-token increments (from 1,024); a fine grid for others
_DIGEST = 16
# Markers outside every encoding's id range: they separate the prompt's parts.
_ROLE_IDS = MappingProxyType({"system": 1 << 30, "developer": 1 << 30, "user": (1 << 30) + 1,
                              "assistant": (1 << 30) + 2, "tool": (1 << 30) + 3, "function": (1 << 30) + 3})
_OTHER_ROLE, _TOOLS_ID, _IMAGE_ID = (1 << 30) + 4, (1 << 30) + 5, (1 << 30) + 6


@dataclass(frozen=True, slots=True)
class PromptBlocks:
    hashes: tuple[bytes, ...]  # one chained hash per complete block
    tokens: int  # tokens in the laid-out prompt
    stable_tokens: int  # tokens before the last message
    stable_hash: bytes  # hash of exactly those tokens ("" if there are none)


def likely_tokens_at_least(body: Mapping[str, Any], tokens: int) -> bool:
    """A cheap pre-check before laying out a prompt: could it reach `tokens` tokens? (A token
    is at least one character for all practical text, so fewer characters cannot.)"""
    chars = len(orjson.dumps(body["tools"])) if body.get("tools") else 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(p.get("text") or "")) for p in content if isinstance(p, Mapping))
        if chars >= tokens:
            return True
    return chars >= tokens


def _layout(counter: TokenCounter, body: Mapping[str, Any], encoding: str) -> tuple[array[int], int]:
    """The prompt's token stream and where its last message starts."""
    stream: array[int] = array("I")
    if body.get("tools"):
        stream.append(_TOOLS_ID)
        stream.extend(counter.token_ids(orjson.dumps(body["tools"], option=orjson.OPT_SORT_KEYS).decode(), encoding))
    messages = [m for m in body.get("messages") or () if isinstance(m, Mapping)]
    stable = len(stream)
    for i, message in enumerate(messages):
        if i == len(messages) - 1:
            stable = len(stream)
        stream.append(_ROLE_IDS.get(str(message.get("role")), _OTHER_ROLE))
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "text":
                stream.extend(counter.token_ids(str(part.get("text") or ""), encoding))
            elif part.get("type") == "image_url":
                stream.append(_IMAGE_ID)
        if message.get("tool_calls"):
            stream.extend(counter.token_ids(orjson.dumps(message["tool_calls"]).decode(), encoding))
    return stream, stable


def prompt_blocks(counter: TokenCounter, body: Mapping[str, Any], encoding: str) -> PromptBlocks:
    stream, stable = _layout(counter, body, encoding)
    data = memoryview(stream.tobytes())
    width = BLOCK_TOKENS * stream.itemsize
    running = blake2b(digest_size=_DIGEST)  # block i's hash: the digest of everything up to its end
    hashes: list[bytes] = []
    for start in range(0, len(stream) // BLOCK_TOKENS * width, width):
        running.update(data[start:start + width])
        hashes.append(running.copy().digest())
    stable_hash = b""
    if stable:  # the last block hash before it, plus the tokens after that block
        full = stable // BLOCK_TOKENS
        head = hashes[full - 1] if full else b""
        stable_hash = blake2b(head + data[full * width: stable * stream.itemsize], digest_size=_DIGEST,
                              person=b"stable").digest()
    return PromptBlocks(tuple(hashes), len(stream), stable, stable_hash)
