"""The prefix index's two backends behave alike (leading warm run, expiry, size cap, marker),
block hashing is a prefix property, and the Anthropic rules follow the configured mode."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.cache.prefix_blocks import BLOCK_TOKENS, prompt_blocks
from gateway.cache.prefix_hasher import BlockHasher
from gateway.cache.prefix_index import MemoryPrefixIndex, RedisPrefixIndex, Warmth
from gateway.cache.prefix_rules import Prediction, predict, with_breakpoint
from gateway.cache.response_store import CacheUnavailable
from gateway.config.settings import ModelSpec
from gateway.tokens.counter import TokenCounter

CHAIN = [bytes([i]) * 16 for i in range(10)]


async def _exercise(index: Any) -> None:
    await index.record("m", CHAIN[:6], b"mark", 0.5)
    assert await index.lookup(["m", "other"], CHAIN, b"mark") == {"m": Warmth(6, True), "other": Warmth(0, False)}
    assert (await index.lookup(["m"], CHAIN[:3], b""))["m"] == Warmth(3, False)
    await index.record("m", CHAIN[:2], b"", 5.0)  # a shorter prompt refreshes only its own blocks
    await asyncio.sleep(0.6)
    assert (await index.lookup(["m"], CHAIN, b"mark"))["m"] == Warmth(2, False)  # the rest expired
    await index.record("capped", CHAIN, b"", 5.0)
    assert (await index.lookup(["capped"], CHAIN, b""))["capped"].blocks == 8  # cap 8: the chain's tail went first


def test_memory_index() -> None:
    asyncio.run(_exercise(MemoryPrefixIndex(max_entries=8)))


def test_redis_index(redis_url: str) -> None:
    async def run() -> None:
        client = aioredis.from_url(redis_url)
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        try:
            await _exercise(RedisPrefixIndex(client, prefix, max_entries=8))
            keys = [k async for k in client.scan_iter(f"{prefix}:*")]
            assert keys
            for key in keys:
                assert b"{gw-prefix}" in key and await client.pttl(key) > 0
        finally:
            await client.aclose()

    asyncio.run(run())


def test_redis_outage_is_cache_unavailable() -> None:
    async def run() -> None:
        client = aioredis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
        index = RedisPrefixIndex(client, "x", 8)
        with pytest.raises(CacheUnavailable):
            await index.lookup(["m"], CHAIN, b"")
        with pytest.raises(CacheUnavailable):
            await index.record("m", CHAIN, b"", 1.0)
        await client.aclose()

    asyncio.run(run())


def test_block_hashes_are_shared_exactly_by_shared_prefixes() -> None:
    counter = TokenCounter()
    system = {"role": "system", "content": "shared instructions " * 400}
    a = prompt_blocks(counter, {"messages": [system, {"role": "user", "content": "question one"}]}, "o200k_base")
    b = prompt_blocks(counter, {"messages": [system, {"role": "user", "content": "another question"}]}, "o200k_base")
    shared = a.stable_tokens // BLOCK_TOKENS
    assert a.stable_hash == b.stable_hash and a.stable_tokens == b.stable_tokens
    assert a.hashes[:shared] == b.hashes[:shared] and len(a.hashes) == a.tokens // BLOCK_TOKENS
    edited = {"role": "system", "content": "Shared instructions " + "shared instructions " * 399}
    c = prompt_blocks(counter, {"messages": [edited, {"role": "user", "content": "question one"}]}, "o200k_base")
    assert c.hashes[0] != a.hashes[0] and c.stable_hash != a.stable_hash  # first token differs: nothing shared


def _spec(wire: str, upstream: str = "claude-sonnet-4") -> Any:
    return ModelSpec(name="m", provider=wire, wire=wire, upstream_model=upstream, api_base=None, api_key=None,
                     price=None, timeout_s=1)  # type: ignore[arg-type]


def test_anthropic_modes_and_minimums() -> None:
    counter = TokenCounter()
    body = {"messages": [{"role": "system", "content": "rules " * 1500}, {"role": "user", "content": "q"}]}
    blocks = prompt_blocks(counter, body, "o200k_base")
    stable, full = blocks.stable_tokens, blocks.stable_tokens // BLOCK_TOKENS
    claude = _spec("anthropic")
    assert predict(claude, blocks, Warmth(0, False), "auto", False) == Prediction()  # never sent: no write
    assert predict(claude, blocks, Warmth(full, False), "auto", False) == Prediction(write=stable, breakpoint=True)
    assert predict(claude, blocks, Warmth(full, True), "auto", False) == Prediction(cached=stable, breakpoint=True)
    assert predict(claude, blocks, Warmth(0, False), "always", False) == Prediction(write=stable, breakpoint=True)
    assert predict(claude, blocks, Warmth(full, True), "off", False) == Prediction()
    assert predict(claude, blocks, Warmth(full, True), "auto", True) == Prediction()  # the client's own breakpoints
    assert predict(_spec("anthropic", "claude-opus-4-5"), blocks, Warmth(full, False), "always", False) == Prediction()
    openai = _spec("openai", "gpt-4o")
    assert predict(openai, blocks, Warmth(full, False), "off", False) == Prediction(cached=full * BLOCK_TOKENS)
    assert predict(openai, blocks, Warmth(7, False), "auto", False) == Prediction()  # 896 tokens: under 1,024


def test_breakpoint_goes_on_the_last_text_before_the_last_message() -> None:
    messages: list[Any] = [{"role": "system", "content": "s"},
                           {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                           {"role": "user", "content": "now"}]
    marked = with_breakpoint(messages)
    assert marked is not None and marked[1]["content"][1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in messages[1]["content"][1]  # the client's request is not changed in place
    assert with_breakpoint([{"role": "user", "content": "only"}]) is None


def test_memoised_block_hasher_gives_exactly_the_reference_blocks() -> None:
    counter = TokenCounter()
    hasher = BlockHasher(counter, max_chars=20_000)  # small: entries get evicted along the way
    turn = "The quarterly report covers revenue, churn, hiring and the roadmap. "
    history: list[Any] = [{"role": "system", "content": turn * 60}]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    for i in range(12):  # a conversation growing turn by turn, resent each time
        history.append({"role": "user" if i % 2 else "assistant", "content": f"{i} " + turn * (i * 7 % 30)})
        for body in ({"messages": history}, {"messages": history, "tools": tools},
                     {"messages": [*history[:-1], {"role": "user", "content": [{"type": "text", "text": "x"}]}]}):
            assert hasher.blocks(body, "o200k_base") == prompt_blocks(counter, body, "o200k_base")
    assert hasher._chars <= 20_000
