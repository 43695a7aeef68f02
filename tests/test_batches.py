"""The Batch API through the gateway, driven by the official openai client against the fake
upstream's Files and Batch endpoints: a batch's worst case at batch prices held at submission,
each result line priced at batch rates when it completes, one ledger row per line, and the
key's spend, the ledger and `gateway_spend_usd_total{service_tier="batch"}` all equal to the sum
of the lines, to the pico-dollar."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import orjson
import pytest
from conftest import UPSTREAM_KEY, Gateway, model

from gateway.fake_upstream import FakeUpstreamThread
from gateway.tokens.counter import TokenCounter

MASTER = "sk-master-batches-0123456789"
OTHER_KEY = "sk-upstream-second-key-0123456789"
# Per token, in pico-USD: default and batch prices of the test models.
A_IN, A_OUT, A_BATCH_IN, A_BATCH_CACHED, A_BATCH_OUT = 2_500_000, 10_000_000, 1_250_000, 625_000, 5_000_000
B_BATCH_IN, B_BATCH_OUT = 2_000_000, 8_000_000
MAX_TOKENS = 100


def config(upstream: FakeUpstreamThread, **extra: Any) -> dict[str, Any]:
    a_price = {"input_per_mtok": 2.5, "output_per_mtok": 10, "cached_input_per_mtok": 1.25,
               "service_tiers": {"batch": {"input_per_mtok": 1.25, "output_per_mtok": 5,
                                           "cached_input_per_mtok": 0.625}}}
    b_price = {"input_per_mtok": 4, "output_per_mtok": 16,
               "service_tiers": {"batch": {"input_per_mtok": 2, "output_per_mtok": 8}}}
    return {
        "master_key": MASTER, "require_keys": True, "cache": {"response": {"enabled": False}},
        "models": [
            model("batch-a", "openai", upstream, upstream_model="batch-a-up", quality=80, capabilities=[],
                  pricing=a_price),
            model("batch-b", "openai", upstream, upstream_model="batch-b-up", quality=80, capabilities=["tools"],
                  api_key=OTHER_KEY, pricing=b_price),  # another key: another upstream batch
            model("batch-claude", "anthropic", upstream, upstream_model="batch-claude-up", quality=80,
                  capabilities=["tools"], pricing={"input_per_mtok": 0.1, "output_per_mtok": 0.1}),
        ],
        "tiers": {"batchy": {"min_quality": 75}},
        "batches": {"poll_interval_s": 3600},  # the tests' own GETs move batches on, unless they say otherwise
        **extra,
    }


def chat_line(custom_id: str, text: str, model_name: str = "batch-a", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model_name, "messages": [{"role": "user", "content": text}], **body}}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def tokens(text: str, upstream_model: str) -> int:
    return TokenCounter().count_messages([{"role": "user", "content": text}], upstream_model)


def held(prompt: int, output: int, rate_in: int, rate_out: int) -> int:
    """A line's worst case: its counted prompt plus the 10 % margin, and its output bound."""
    return (prompt + -(-prompt * 10 // 100)) * rate_in + output * rate_out


def usd(pico: int) -> str:
    """The exact decimal USD text of `pico` (as the gateway writes it)."""
    whole, frac = divmod(pico, 10**12)
    return f"{whole}.{frac:012d}".rstrip("0").rstrip(".")


def script_batches(upstream: FakeUpstreamThread, **script: Any) -> None:
    httpx.post(f"{upstream.url}/_fake/batches", json=script).raise_for_status()


async def new_key(gw: Any, **fields: Any) -> str:
    resp = await gw.client.post("/admin/keys", json=fields, headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


async def spend(gw: Any, key: str) -> dict[str, Any]:
    resp = await gw.client.get("/v1/spend", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def ledger(gw: Any) -> list[dict[str, Any]]:
    resp = await gw.client.get("/admin/ledger", headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status_code == 200, resp.text
    return [orjson.loads(line) for line in resp.content.splitlines() if line.strip()]


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """The first truthy result of `check`, polled until `timeout` (the work itself, no fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def finished(client: openai.AsyncOpenAI, batch_id: str, status: str = "completed") -> Any:
    async def check() -> Any:
        batch = await client.batches.retrieve(batch_id)
        return batch if batch.status == status else None

    return await until(check)


async def submit(client: openai.AsyncOpenAI, lines: list[dict[str, Any]], **extra: Any) -> Any:
    file = await client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return await client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                       completion_window="24h", **extra)


def message(exc: openai.APIStatusError) -> str:
    assert isinstance(exc.body, dict)
    return str(exc.body["message"])


def results(content: bytes) -> dict[str, dict[str, Any]]:
    return {item["custom_id"]: item for item in map(orjson.loads, content.splitlines()) if item}


LONG = "Summarise the history of Rome in one paragraph. " * 30
TEXTS = {"req-1": LONG, "req-2": "What is two plus two?", "req-3": "Name three primary colours."}


@pytest.mark.anyio
async def test_a_batch_by_model_name_is_held_then_priced_at_batch_rates_line_by_line(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    n = {cid: tokens(text, "batch-a-up") for cid, text in TEXTS.items()}
    out, cached = {"req-1": 60, "req-2": 5, "req-3": 12}, {"req-1": 128, "req-2": 0, "req-3": 0}
    script_batches(upstream, delay_s=0.2, usage={cid: {
        "prompt_tokens": n[cid], "completion_tokens": out[cid], "prompt_tokens_details": {"cached_tokens": cached[cid]},
    } for cid in TEXTS})
    lines = [chat_line("req-1", LONG, max_tokens=MAX_TOKENS),
             chat_line("req-2", TEXTS["req-2"], max_tokens=MAX_TOKENS),
             chat_line("req-3", TEXTS["req-3"])]  # no max_tokens: the hold's default output, sent upstream
    hold = (held(n["req-1"], MAX_TOKENS, A_BATCH_IN, A_BATCH_OUT)
            + held(n["req-2"], MAX_TOKENS, A_BATCH_IN, A_BATCH_OUT)
            + held(n["req-3"], 4096, A_BATCH_IN, A_BATCH_OUT))
    cost = {cid: (n[cid] - cached[cid]) * A_BATCH_IN + cached[cid] * A_BATCH_CACHED + out[cid] * A_BATCH_OUT
            for cid in TEXTS}
    total = sum(cost.values())
    async with in_process(config(upstream)) as gw:
        key = await new_key(gw, budget_usd="1")
        client = gw.openai(api_key=key)
        batch = await submit(client, lines, metadata={"job": "nightly"})
        assert (batch.status, batch.model, batch.request_counts.total) == ("validating", "batch-a", 3)
        assert batch.metadata == {"job": "nightly"} and batch.model_extra["gateway"]["held_usd"] == usd(hold)
        position = await spend(gw, key)
        assert (position["reserved_usd"], position["spend_usd"]) == (hold / 10**12, 0)  # the exact worst case
        sent = next(c for c in upstream.calls() if c["path"] == "/v1/files")["body"]["lines"]
        assert [line["body"]["model"] for line in sent] == ["batch-a-up"] * 3
        assert [line["body"].get("max_tokens") for line in sent] == [MAX_TOKENS, MAX_TOKENS, 4096]

        done = await finished(client, batch.id)
        assert done.request_counts.model_dump() == {"total": 3, "completed": 3, "failed": 0}
        assert done.usage.model_extra["cost"] == total / 10**12 and done.usage.input_tokens_details.cached_tokens == 128
        assert (done.usage.input_tokens, done.usage.output_tokens) == (sum(n.values()), sum(out.values()))
        assert done.model_extra["gateway"]["cost_usd"] == usd(total)
        answers = results((await client.files.content(done.output_file_id)).content)
        for cid in TEXTS:
            usage = answers[cid]["response"]["body"]["usage"]
            assert usage["cost"] == cost[cid] / 10**12 and usage["cost_details"]["service_tier"] == "batch"
        details = answers["req-1"]["response"]["body"]["usage"]["cost_details"]
        assert details["cached_input"] == 128 * A_BATCH_CACHED / 10**12
        await gw.drain()
        position = await spend(gw, key)
        assert (position["spend_usd"], position["reserved_usd"]) == (total / 10**12, 0)
        rows = await ledger(gw)
        assert sorted(r["request_id"] for r in rows) == [f"{batch.id}:{cid}" for cid in sorted(TEXTS)]
        assert {(r["model"], r["service_tier"]) for r in rows} == {("batch-a", "batch")}
        assert sum(r["cost_pico"] for r in rows) == total and {r["cost_pico"] for r in rows} == set(cost.values())
        assert gw.metric("gateway_spend_usd_total", service_tier="batch") == total / 10**12
        assert (await client.batches.retrieve(batch.id)).status == "completed"  # settled once: nothing more
        assert len(await ledger(gw)) == 3 and (await spend(gw, key))["spend_usd"] == total / 10**12


@pytest.mark.anyio
async def test_a_tier_batch_routes_each_line_to_an_openai_format_model(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    usage = {"prompt_tokens": 40, "completion_tokens": 10}
    script_batches(upstream, usage={"plain-1": usage, "plain-2": usage, "tools": usage})
    lines = [chat_line("plain-1", "Hello there.", "batchy", max_tokens=MAX_TOKENS),
             chat_line("tools", "Look it up.", "batchy", max_tokens=MAX_TOKENS, tools=[tool]),
             chat_line("plain-2", "Good morning.", "batchy", max_tokens=MAX_TOKENS)]
    async with in_process(config(upstream)) as gw:
        key = await new_key(gw, budget_usd="1")
        client = gw.openai(api_key=key)
        batch = await submit(client, lines)
        # the cheapest model (Anthropic) has no Batch API here; batch-a has no tools; so:
        assert batch.model_extra["gateway"] == {
            "held_usd": batch.model_extra["gateway"]["held_usd"], "cost_usd": None, "tier": "batchy",
            "routed": {"batch-a": 2, "batch-b": 1}}
        uploads = [c for c in upstream.calls() if c["path"] == "/v1/files"]  # one upstream batch per key
        assert sorted([line["custom_id"], line["body"]["model"], c["headers"]["authorization"]]
                      for c in uploads for line in c["body"]["lines"]) == [
            ["plain-1", "batch-a-up", f"Bearer {UPSTREAM_KEY}"], ["plain-2", "batch-a-up", f"Bearer {UPSTREAM_KEY}"],
            ["tools", "batch-b-up", f"Bearer {OTHER_KEY}"]]
        done = await finished(client, batch.id)
        a_cost, b_cost = 40 * A_BATCH_IN + 10 * A_BATCH_OUT, 40 * B_BATCH_IN + 10 * B_BATCH_OUT
        answers = results((await client.files.content(done.output_file_id)).content)
        assert {cid: a["response"]["body"]["usage"]["cost"] for cid, a in answers.items()} == {
            "plain-1": a_cost / 1e12, "plain-2": a_cost / 1e12, "tools": b_cost / 1e12}
        await gw.drain()
        rows = await ledger(gw)
        assert sorted((r["model"], r["tier"], r["cost_pico"]) for r in rows) == [
            ("batch-a", "batchy", a_cost), ("batch-a", "batchy", a_cost), ("batch-b", "batchy", b_cost)]
        assert (await spend(gw, key))["spend_usd"] == (2 * a_cost + b_cost) / 10**12


@pytest.mark.anyio
async def test_cancel_settles_what_was_answered_and_releases_the_rest(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    script_batches(upstream, delay_s=3600, cancel_keeps=1,
                   usage={"req-1": {"prompt_tokens": 30, "completion_tokens": 3}})
    lines = [chat_line(f"req-{i}", f"Question number {i}?", max_tokens=MAX_TOKENS) for i in (1, 2, 3)]
    async with in_process(config(upstream)) as gw:
        key = await new_key(gw, budget_usd="1")
        client = gw.openai(api_key=key)
        batch = await submit(client, lines)
        assert (await spend(gw, key))["reserved_usd"] > 0
        cancelling = await client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        done = await finished(client, batch.id, "cancelled")
        assert done.request_counts.completed == 1 and done.cancelled_at is not None
        line_cost = 30 * A_BATCH_IN + 3 * A_BATCH_OUT
        await gw.drain()
        assert (await spend(gw, key))["spend_usd"] == line_cost / 10**12
        assert (await spend(gw, key))["reserved_usd"] == 0  # the rest of the hold is gone
        assert [r["cost_pico"] for r in await ledger(gw)] == [line_cost]
        with pytest.raises(openai.BadRequestError):
            await client.batches.cancel(batch.id)  # it has ended


@pytest.mark.anyio
async def test_a_failed_line_costs_nothing_and_goes_to_the_error_file(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    script_batches(upstream, fail=["req-2"], usage={"req-1": {"prompt_tokens": 30, "completion_tokens": 3}})
    lines = [chat_line("req-1", "First?", max_tokens=MAX_TOKENS), chat_line("req-2", "Second?", max_tokens=MAX_TOKENS)]
    async with in_process(config(upstream)) as gw:
        key = await new_key(gw)  # no budget: the spend is still booked against the key
        client = gw.openai(api_key=key)
        done = await finished(client, (await submit(client, lines)).id)
        assert done.request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 1}
        errors = results((await client.files.content(done.error_file_id)).content)
        assert list(errors) == ["req-2"] and errors["req-2"]["response"]["status_code"] == 500
        assert list(results((await client.files.content(done.output_file_id)).content)) == ["req-1"]
        await gw.drain()
        assert (await spend(gw, key))["spend_usd"] == (30 * A_BATCH_IN + 3 * A_BATCH_OUT) / 10**12
        assert len(await ledger(gw)) == 1


@pytest.mark.anyio
async def test_a_batch_the_upstream_fails_releases_its_hold(in_process: Any, upstream: FakeUpstreamThread) -> None:
    script_batches(upstream, status="failed")
    async with in_process(config(upstream)) as gw:
        key = await new_key(gw, budget_usd="1")
        client = gw.openai(api_key=key)
        done = await finished(client, (await submit(client, [chat_line("a", "hi", max_tokens=MAX_TOKENS)])).id,
                              "failed")
        assert done.errors is not None and done.errors.data[0].message == "scripted failure"
        assert done.output_file_id is None and done.failed_at is not None
        assert done.model_extra["gateway"]["cost_usd"] == "0"
        await gw.drain()
        position = await spend(gw, key)
        assert (position["spend_usd"], position["reserved_usd"]) == (0, 0)
        assert await ledger(gw) == []


@pytest.mark.anyio
async def test_a_malformed_input_file_is_a_400_naming_its_line(in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        client = gw.openai(api_key=await new_key(gw))
        bad = jsonl([chat_line("a", "hi")]) + b'{"custom_id": "b", "method": "POST"\n'
        with pytest.raises(openai.BadRequestError) as refused:
            await client.files.create(file=("input.jsonl", bad), purpose="batch")
        assert message(refused.value) == ("line 2 of the input file: not valid JSON (unexpected end of data at "
                                          "column 36)")
        cases = [
            ([chat_line("a", "hi"), chat_line("a", "again")], "line 2 of the input file: custom_id 'a' is used"),
            ([chat_line("a", "hi"), chat_line("b", "hi", "batch-b")], "line 2 of the input file: model 'batch-b'"),
            ([chat_line("a", "hi", stream=True)], "line 1 of the input file: a batch request cannot stream"),
            ([{**chat_line("a", "hi"), "url": "/v1/embeddings"}], "line 1 of the input file: 'url' must be"),
            ([chat_line("a", "hi"), {**chat_line("b", "hi"), "body": {"model": "batch-a"}}],
             "line 2 of the input file: 'messages' must be a non-empty array"),
        ]
        for lines, expected in cases:
            with pytest.raises(openai.BadRequestError) as refused:
                await client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
            assert message(refused.value).startswith(expected), message(refused.value)
        assert refused.value.param == "body.messages"  # (the field, inside the line's body)
        by_claude = await client.files.create(file=("in.jsonl", jsonl([chat_line("a", "hi", "batch-claude")])),
                                              purpose="batch")
        with pytest.raises(openai.BadRequestError) as refused:
            await client.batches.create(input_file_id=by_claude.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
        assert "has no Batch API the gateway can use" in message(refused.value)
        assert not [c for c in upstream.calls() if c["path"].startswith("/v1/")]  # nothing reached the upstream


@pytest.mark.anyio
async def test_a_key_not_allowed_the_model_is_refused_and_a_budget_too_small_is_429(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        restricted = gw.openai(api_key=await new_key(gw, models=["batch-b"]))
        with pytest.raises(openai.PermissionDeniedError):
            await submit(restricted, [chat_line("a", "hi", max_tokens=MAX_TOKENS)])
        poor = gw.openai(api_key=await new_key(gw, budget_usd="0.0001"))  # $0.0001 < 100 x $5/M + the prompt
        with pytest.raises(openai.RateLimitError) as refused:
            await submit(poor, [chat_line("a", "hi", max_tokens=MAX_TOKENS)])
        assert refused.value.code == "budget_exceeded"
        assert not [c for c in upstream.calls() if c["path"] == "/v1/batches"]


@pytest.mark.anyio
async def test_another_key_cannot_see_the_batch_or_its_files(in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        owner = gw.openai(api_key=await new_key(gw))
        other = gw.openai(api_key=await new_key(gw))
        batch = await submit(owner, [chat_line("a", "hi", max_tokens=MAX_TOKENS)])
        done = await finished(owner, batch.id)
        for attempt in (other.batches.retrieve(batch.id), other.batches.cancel(batch.id),
                        other.files.retrieve(batch.input_file_id), other.files.content(done.output_file_id)):
            with pytest.raises(openai.NotFoundError):
                await attempt
        assert [b.id async for b in other.batches.list()] == []
        assert [b.id async for b in owner.batches.list()] == [batch.id]
        assert [f.id for f in (await other.files.list()).data] == []
        anonymous = gw.openai(api_key="not-a-gateway-key")
        with pytest.raises(openai.AuthenticationError):
            await anonymous.batches.list()


@pytest.mark.anyio
async def test_the_poller_settles_a_batch_nobody_asks_about(in_process: Any, upstream: FakeUpstreamThread) -> None:
    script_batches(upstream, delay_s=0.1, usage={"a": {"prompt_tokens": 20, "completion_tokens": 2}})
    async with in_process(config(upstream, batches={"poll_interval_s": 0.05})) as gw:
        key = await new_key(gw, budget_usd="1")
        client = gw.openai(api_key=key)
        batch = await submit(client, [chat_line("a", "hi", max_tokens=MAX_TOKENS)])
        cost = 20 * A_BATCH_IN + 2 * A_BATCH_OUT

        async def settled() -> bool:
            await gw.drain()
            position = await spend(gw, key)
            return position["spend_usd"] == cost / 10**12 and position["reserved_usd"] == 0

        await until(settled)  # no client GET of the batch: the poller found it done
        assert not [c for c in upstream.calls() if c["path"] == "/v1/files" and c["method"] == "GET"]
        assert (await client.batches.retrieve(batch.id)).status == "completed"
        assert [r["cost_pico"] for r in await ledger(gw)] == [cost]


@pytest.mark.anyio
async def test_with_redis_two_gateways_settle_a_batch_exactly_once(
        in_process: Any, upstream: FakeUpstreamThread, redis_url: str) -> None:
    script_batches(upstream, delay_s=0.2, usage={"a": {"prompt_tokens": 20, "completion_tokens": 2},
                                                 "b": {"prompt_tokens": 10, "completion_tokens": 1}})
    shared = config(upstream, redis_url=redis_url, redis_prefix=f"gwb{uuid.uuid4().hex[:8]}",
                    batches={"poll_interval_s": 0.05})
    async with in_process(shared) as one, in_process(shared) as two:
        key = await new_key(one, budget_usd="1")
        first, second = one.openai(api_key=key), two.openai(api_key=key)
        batch = await submit(first, [chat_line("a", "hi", max_tokens=MAX_TOKENS),
                                     chat_line("b", "ho", max_tokens=MAX_TOKENS)])
        seen = await second.batches.retrieve(batch.id)  # the other gateway knows it
        assert seen.id == batch.id and seen.status in ("validating", "in_progress", "completed")
        await asyncio.gather(finished(first, batch.id), finished(second, batch.id))  # both pollers and both GETs
        cost = 30 * A_BATCH_IN + 3 * A_BATCH_OUT
        await one.drain()
        await two.drain()
        rows = [r for r in await ledger(one) if r["request_id"].startswith(batch.id)]
        assert sorted(r["request_id"] for r in rows) == [f"{batch.id}:a", f"{batch.id}:b"]
        assert sum(r["cost_pico"] for r in rows) == cost
        assert (await spend(two, key))["spend_usd"] == cost / 10**12
        metric = one.metric("gateway_spend_usd_total", service_tier="batch") + two.metric(
            "gateway_spend_usd_total", service_tier="batch")
        assert metric == cost / 10**12  # booked by one of them only
        files = (await second.files.list()).data  # the files too, shared
        assert {f.purpose for f in files} == {"batch", "batch_output"} and len(files) == 2
        assert (await second.files.delete(batch.input_file_id)).deleted
        assert [f.id for f in (await first.files.list(purpose="batch")).data] == []


@pytest.mark.anyio
async def test_in_the_sqlite_file_a_batch_its_hold_and_its_files_survive_a_restart(
        in_process: Any, upstream: FakeUpstreamThread, tmp_path: Any) -> None:
    script_batches(upstream, delay_s=0.2, usage={"a": {"prompt_tokens": 20, "completion_tokens": 2}})
    kept = config(upstream, storage={"backend": "sqlite", "sqlite_path": str(tmp_path / "gateway.sqlite3")})
    async with in_process(kept) as gw:
        key = await new_key(gw, budget_usd="1")
        batch = await submit(gw.openai(api_key=key), [chat_line("a", "hi", max_tokens=MAX_TOKENS)])
        hold = (await spend(gw, key))["reserved_usd"]
        assert hold == held(tokens("hi", "batch-a-up"), MAX_TOKENS, A_BATCH_IN, A_BATCH_OUT) / 10**12
    async with in_process(kept) as gw:  # restarted: the batch and its hold were kept in the file
        client = gw.openai(api_key=key)
        assert (await spend(gw, key))["reserved_usd"] == hold
        assert [b.id async for b in client.batches.list()] == [batch.id]
        done = await finished(client, batch.id)
        cost = 20 * A_BATCH_IN + 2 * A_BATCH_OUT
        await gw.drain()
        assert (await spend(gw, key)) | {"period_end": None} == {
            "key_id": (await spend(gw, key))["key_id"], "budget_period": "total", "spend_usd": cost / 10**12,
            "reserved_usd": 0, "budget_usd": 1, "remaining_usd": (10**12 - cost) / 10**12, "period_end": None}
        assert [r["cost_pico"] for r in await ledger(gw)] == [cost]
        assert [f.id for f in (await client.files.list()).data] == [done.output_file_id, batch.input_file_id]
        assert (await client.files.delete(batch.input_file_id)).deleted
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve(batch.input_file_id)


def test_gateway_serve_with_two_workers_on_the_sqlite_file_settles_a_batch_once(
        upstream: FakeUpstreamThread, tmp_path: Any) -> None:
    script_batches(upstream, delay_s=0.3, usage={"a": {"prompt_tokens": 20, "completion_tokens": 2}})
    gw = Gateway(config(upstream, storage={"backend": "sqlite", "sqlite_path": str(tmp_path / "gw.sqlite3")},
                        batches={"poll_interval_s": 0.1}), workers=2)
    try:
        admin = {"Authorization": f"Bearer {MASTER}"}
        key = httpx.post(f"{gw.url}/admin/keys", json={"budget_usd": "1"}, headers=admin).json()["key"]
        client = gw.client(api_key=key)
        file = client.files.create(file=("input.jsonl", jsonl([chat_line("a", "hi", max_tokens=MAX_TOKENS)])),
                                   purpose="batch")
        batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        cost = 20 * A_BATCH_IN + 2 * A_BATCH_OUT
        deadline = time.monotonic() + 15
        while httpx.get(f"{gw.url}/v1/spend", headers={"Authorization": f"Bearer {key}"}).json()["spend_usd"] == 0:
            assert time.monotonic() < deadline, gw.logs()
            time.sleep(0.05)  # (the pollers of either worker settle it: no client GET)
        assert client.batches.retrieve(batch.id).status == "completed"

        def rows() -> list[int]:
            lines = httpx.get(f"{gw.url}/admin/ledger", headers=admin).content.splitlines()
            return [orjson.loads(line)["cost_pico"] for line in lines if line.strip()]

        while not rows():  # (written by the worker that settled it, within ledger.flush_interval_s)
            assert time.monotonic() < deadline, gw.logs()
            time.sleep(0.05)
        assert rows() == [cost]
        position = httpx.get(f"{gw.url}/v1/spend", headers={"Authorization": f"Bearer {key}"}).json()
        assert (position["spend_usd"], position["reserved_usd"]) == (cost / 10**12, 0)
        assert "Traceback" not in gw.logs() and "batch poll failed" not in gw.logs()
    finally:
        gw.stop()


def on_postgres(upstream: FakeUpstreamThread, database_url: str, schema: str, journals: Any, **extra: Any,
                ) -> dict[str, Any]:
    """The config of a gateway on PostgreSQL (`schema`), with journals of its own (`journals`)."""
    journals.mkdir(parents=True, exist_ok=True)
    return config(upstream, database_url=database_url,
                  database={"schema_name": schema, "migrate_on_start": True, "timeout_s": 5},
                  budgets={"journal_path": str(journals / "spend.jsonl")},
                  ledger={"journal_path": str(journals / "ledger.jsonl")}, **extra)


async def pg_rows(database_url: str, schema: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        return [tuple(row) for row in await conn.fetch(query, *args)]
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_on_postgresql_a_batch_survives_a_restart_and_two_gateways_polling_it_settle_it_once(
        in_process: Any, upstream: FakeUpstreamThread, database_url: str, pg_schema: str, tmp_path: Any) -> None:
    script_batches(upstream, delay_s=0.2, usage={"a": {"prompt_tokens": 20, "completion_tokens": 2},
                                                 "b": {"prompt_tokens": 10, "completion_tokens": 1}})
    lines = [chat_line("a", "hi", max_tokens=MAX_TOKENS), chat_line("b", "ho", max_tokens=MAX_TOKENS)]
    async with in_process(on_postgres(upstream, database_url, pg_schema, tmp_path / "one")) as gw:
        key = await new_key(gw, budget_usd="1")
        batch = await submit(gw.openai(api_key=key), lines)
        hold = held(tokens("hi", "batch-a-up"), MAX_TOKENS, A_BATCH_IN, A_BATCH_OUT) + held(
            tokens("ho", "batch-a-up"), MAX_TOKENS, A_BATCH_IN, A_BATCH_OUT)
        assert batch.model_extra["gateway"]["held_usd"] == usd(hold)
        key_id = (await spend(gw, key))["key_id"]
    assert await pg_rows(database_url, pg_schema, "SELECT id, settled FROM batches") == [(batch.id, False)]
    polling = {"poll_interval_s": 0.05}  # both pollers at it, and both clients' GETs
    async with in_process(on_postgres(upstream, database_url, pg_schema, tmp_path / "two", batches=polling)) as two, \
            in_process(on_postgres(upstream, database_url, pg_schema, tmp_path / "three", batches=polling)) as three:
        second, third = two.openai(api_key=key), three.openai(api_key=key)
        assert [b.id async for b in third.batches.list()] == [batch.id]  # restarted: kept in PostgreSQL
        done, _ = await asyncio.gather(finished(second, batch.id), finished(third, batch.id))
        assert done.request_counts.model_dump() == {"total": 2, "completed": 2, "failed": 0}
        cost = 30 * A_BATCH_IN + 3 * A_BATCH_OUT
        assert done.model_extra["gateway"]["cost_usd"] == usd(cost)
        await two.drain()
        await three.drain()
        metric = two.metric("gateway_spend_usd_total", service_tier="batch") + three.metric(
            "gateway_spend_usd_total", service_tier="batch")
        assert metric == cost / 10**12  # booked by one of them only
    # (both stopped: what they had queued for PostgreSQL is written)
    rows = await pg_rows(database_url, pg_schema, "SELECT request_id, cost_pico, service_tier FROM ledger "
                         "ORDER BY request_id")
    assert rows == [(f"{batch.id}:a", 20 * A_BATCH_IN + 2 * A_BATCH_OUT, "batch"),
                    (f"{batch.id}:b", 10 * A_BATCH_IN + 1 * A_BATCH_OUT, "batch")]
    assert await pg_rows(database_url, pg_schema, "SELECT amount_pico FROM spend_settlements WHERE key_id = $1",
                         key_id) == [(cost,)]  # the hold settled once, with the exact sum of the lines
    assert await pg_rows(database_url, pg_schema, "SELECT settled FROM batches") == [(True,)]
    assert await pg_rows(database_url, pg_schema, "SELECT id FROM batch_claims") == []  # the claim let go
    async with in_process(on_postgres(upstream, database_url, pg_schema, tmp_path / "four")) as gw:
        client = gw.openai(api_key=key)
        position = await spend(gw, key)
        assert (position["spend_usd"], position["reserved_usd"]) == (cost / 10**12, 0)
        assert (await client.batches.retrieve(batch.id)).model_extra["gateway"]["cost_usd"] == usd(cost)
        assert [f.id for f in (await client.files.list()).data] == [done.output_file_id, batch.input_file_id]
        output = results((await client.files.content(done.output_file_id)).content)
        assert sorted(output) == ["a", "b"]


@pytest.mark.anyio
async def test_with_postgresql_and_redis_batches_are_kept_in_postgresql(
        in_process: Any, upstream: FakeUpstreamThread, database_url: str, pg_schema: str, redis_url: str,
        tmp_path: Any) -> None:
    import redis.asyncio as aioredis

    script_batches(upstream, usage={"a": {"prompt_tokens": 20, "completion_tokens": 2}})
    prefix = f"gwb{uuid.uuid4().hex[:8]}"
    both = on_postgres(upstream, database_url, pg_schema, tmp_path, redis_url=redis_url, redis_prefix=prefix)
    async with in_process(both) as gw:
        key = await new_key(gw, budget_usd="1")
        client = gw.openai(api_key=key)
        batch = await submit(client, [chat_line("a", "hi", max_tokens=MAX_TOKENS)])
        done = await finished(client, batch.id)
        await gw.drain()
        assert (await spend(gw, key))["spend_usd"] == (20 * A_BATCH_IN + 2 * A_BATCH_OUT) / 10**12
    assert await pg_rows(database_url, pg_schema, "SELECT id, settled FROM batches") == [(batch.id, True)]
    assert sorted(await pg_rows(database_url, pg_schema, "SELECT id FROM batch_files")) == sorted(
        [(batch.input_file_id,), (done.output_file_id,)])
    redis = aioredis.from_url(redis_url)
    try:
        assert [k async for k in redis.scan_iter(f"{prefix}:batch*")] == []  # none of it in Redis
    finally:
        await redis.aclose()
