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

from gateway.tokens.counter import TokenCounter

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


def prompt_parts(counter: TokenCounter, body: Mapping[str, Any], encoding: str) -> list[tuple[Any, array[int]]]:
    """The prompt in provider order as (part key, tokens): the tool definitions, then each message
    opened by its role marker. The key identifies a part's content (for memoising)."""
    parts: list[tuple[Any, array[int]]] = []
    if body.get("tools"):
        text = orjson.dumps(body["tools"], option=orjson.OPT_SORT_KEYS).decode()
        parts.append((("tools", text), array("I", [_TOOLS_ID]) + counter.token_ids(text, encoding)))
    for message in body.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        tokens = array("I", [_ROLE_IDS.get(str(message.get("role")), _OTHER_ROLE)])
        content = message.get("content")
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, Mapping):
                continue
            if item.get("type") == "text":
                tokens.extend(counter.token_ids(str(item.get("text") or ""), encoding))
            elif item.get("type") == "image_url":
                tokens.append(_IMAGE_ID)
        if message.get("tool_calls"):
            tokens.extend(counter.token_ids(orjson.dumps(message["tool_calls"]).decode(), encoding))
        simple = isinstance(content, str) and len(message) <= 2
        key = (str(message.get("role")), content) if simple else orjson.dumps(message, option=orjson.OPT_SORT_KEYS)
        parts.append((key, tokens))
    return parts


def _layout(counter: TokenCounter, body: Mapping[str, Any], encoding: str) -> tuple[array[int], int]:
    """The prompt's token stream and where its last message starts."""
    stream: array[int] = array("I")
    stable = 0
    parts = prompt_parts(counter, body, encoding)
    for i, (_, tokens) in enumerate(parts):
        if i == len(parts) - 1 and body.get("messages"):
            stable = len(stream)
        stream.extend(tokens)
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
