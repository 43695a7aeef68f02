"""The legacy Completions API (`POST /v1/completions`) through the official openai SDK against an
in-process gateway and the fake upstream (exact cost, streams, `n`, tiers, refusals), and requests
to paths the gateway does not serve: counted by method, logged once per method and path."""

from __future__ import annotations

import logging
from typing import Any

import openai
import pytest
from conftest import model, standard_config

from gateway.api.errors import UnknownPaths
from gateway.fake_upstream import FakeUpstreamThread
from gateway.redaction import Redactor

MASTER = "sk-master-legacy-paths-0123456789"
# gpt-test: 1,000 prompt tokens of which 400 cached, 50 completion: 600 x 2.5 + 400 x 1.25 + 50 x 10 per M
USAGE = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
         "prompt_tokens_details": {"cached_tokens": 400}}
COST = 0.0025
COST_DETAILS = {"input": 0.0015, "cached_input": 0.0005, "cache_write": 0.0, "output": 0.0005, "reasoning": 0.0}
UNKNOWN = "gateway_unknown_path_requests_total"


def config(upstream: FakeUpstreamThread) -> dict[str, Any]:
    base = standard_config(upstream)
    base["models"].append(model("gpt-b", "openai", upstream, upstream_model="gpt-b-up", quality=70,
                                pricing={"input_per_mtok": 1, "output_per_mtok": 2}))
    base["tiers"] = {"cheap": {"min_quality": 60}}
    base["master_key"] = MASTER
    return base


# ---------------------------------------------------------------------------------- /v1/completions


@pytest.mark.anyio
async def test_a_completion_is_a_text_completion_at_the_exact_cost(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"reply": "The answer is four.", "usage": USAGE})
    async with in_process(config(upstream)) as gw:
        raw = await gw.openai().completions.with_raw_response.create(
            model="gpt-test", prompt="2+2?", max_tokens=20, temperature=0.5, stop=["\n"], seed=3, user="u-1")
        completion = raw.parse()
        assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
        assert [(c.text, c.index, c.logprobs, c.finish_reason) for c in completion.choices] == [
            ("The answer is four.", 0, None, "stop")]
        usage = completion.usage
        assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
            1000, 50, 1050)
        dumped = usage.model_dump()
        assert dumped["cost"] == COST and dumped["cost_details"] == COST_DETAILS
        assert raw.headers["x-gateway-cost-usd"] == "0.0025" and raw.headers["x-gateway-model"] == "gpt-test"
        assert upstream.calls()[-1]["body"] == {
            "model": "gpt-4o-test", "messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 20,
            "temperature": 0.5, "stop": ["\n"], "seed": 3, "user": "u-1"}
        await gw.drain()
        assert gw.metric("gateway_spend_usd_total", model="gpt-test", provider="openai") == COST


@pytest.mark.anyio
async def test_a_streamed_completion_ends_with_the_usage_chunk_only_when_asked(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        client = gw.openai()
        upstream.script("gpt-4o-test", {"reply": "The answer is four.", "usage": USAGE})
        stream = await client.completions.create(model="gpt-test", prompt=["2+2?"], stream=True,
                                                 stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        assert all(chunk.object == "text_completion" for chunk in chunks)
        assert "".join(c.text for chunk in chunks for c in chunk.choices) == "The answer is four."
        assert [c.finish_reason for chunk in chunks for c in chunk.choices][-1] == "stop"
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None
        assert last.usage.model_dump()["cost"] == COST and last.usage.model_dump()["cost_details"] == COST_DETAILS
        assert all(chunk.usage is None for chunk in chunks[:-1])
        sent = upstream.calls()[-1]["body"]
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}

        upstream.script("gpt-4o-test", {"reply": "Four.", "usage": USAGE})
        quiet = await client.completions.create(model="gpt-test", prompt="2+2?", stream=True)
        chunks = [chunk async for chunk in quiet]
        assert "".join(c.text for chunk in chunks for c in chunk.choices) == "Four."
        assert all(chunk.usage is None and chunk.choices for chunk in chunks)  # no usage chunk: not asked for
        await gw.drain()  # priced all the same
        assert gw.metric("gateway_spend_usd_total", model="gpt-test", provider="openai") == 2 * COST


@pytest.mark.anyio
async def test_n_completions_and_a_tier_as_the_model(in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        client = gw.openai()
        upstream.script("gpt-4o-test", {"reply": "Hi", "usage": USAGE})
        both = await client.completions.create(model="gpt-test", prompt="Say hi", n=2)
        assert [(c.index, c.text) for c in both.choices] == [(0, "Hi"), (1, "Hi")]
        assert upstream.calls()[-1]["body"]["n"] == 2
        assert both.usage is not None and both.usage.model_dump()["cost"] == COST

        raw = await client.completions.with_raw_response.create(model="cheap", prompt="Say hi")
        routed = raw.parse()
        assert raw.headers["x-gateway-tier"] == "cheap" and raw.headers["x-gateway-model"]
        assert routed.object == "text_completion" and routed.choices[0].text
        assert routed.usage is not None and routed.usage.model_dump()["cost"] > 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"suffix": "}"}, "suffix"),
        ({"echo": True}, "echo"),
        ({"logprobs": 2}, "logprobs"),
        ({"best_of": 2}, "best_of"),
        ({"prompt": [1734, 318, 257]}, "prompt"),
        ({"prompt": ["one", "two"]}, "prompt"),
    ],
)
async def test_what_a_chat_model_cannot_do_is_a_400_naming_the_parameter(
        in_process: Any, upstream: FakeUpstreamThread, kwargs: dict[str, Any], param: str) -> None:
    async with in_process(config(upstream)) as gw:
        before = len(upstream.calls())
        with pytest.raises(openai.BadRequestError) as refused:
            await gw.openai().completions.create(**{"model": "gpt-test", "prompt": "hi", **kwargs})
        assert refused.value.param == param and refused.value.status_code == 400
        body = refused.value.body
        assert isinstance(body, dict) and body["type"] == "invalid_request_error"
        assert len(upstream.calls()) == before  # no model was called
        assert gw.metric("gateway_requests_total", model="none", status="400") == 1


@pytest.mark.anyio
async def test_completions_answer_post_only(in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        wrong = await gw.client.get("/v1/completions")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
        assert gw.metric(UNKNOWN) == 0  # served, by POST


# ---------------------------------------------------------------------------------- unknown paths


def _unknown_path_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "gateway.requests" and r.levelno == logging.WARNING and "does not serve" in r.getMessage()]


@pytest.mark.anyio
async def test_unknown_paths_are_counted_by_method_and_logged_once_each(
        in_process: Any, upstream: FakeUpstreamThread, caplog: pytest.LogCaptureFixture) -> None:
    async with in_process(config(upstream)) as gw:
        with caplog.at_level(logging.WARNING, logger="gateway.requests"):
            speech = await gw.client.post("/v1/audio/speech", json={"model": "tts-1", "input": "hi"})
            assistants = await gw.client.get("/v1/assistants")
            assert gw.metric(UNKNOWN) == 2
            assert (gw.metric(UNKNOWN, method="POST"), gw.metric(UNKNOWN, method="GET")) == (1, 1)
            for _ in range(3):  # the same client failing again: counted, not logged again
                await gw.client.post("/v1/audio/speech", json={})
            await gw.client.get("/v1/assistants")
        assert speech.status_code == assistants.status_code == 404
        assert speech.json() == {"error": {"message": "Not Found", "type": "invalid_request_error", "param": None,
                                           "code": "not_found"}}
        assert (gw.metric(UNKNOWN, method="POST"), gw.metric(UNKNOWN, method="GET")) == (4, 2)
        assert _unknown_path_lines(caplog) == [
            "request to a path the gateway does not serve: POST '/v1/audio/speech' (answered 404; logged once per "
            "method and path)",
            "request to a path the gateway does not serve: GET '/v1/assistants' (answered 404; logged once per "
            "method and path)",
        ]
        assert "path=" not in gw.state.metrics.render().decode()  # never the path as a label


@pytest.mark.anyio
async def test_what_the_gateway_serves_is_not_an_unknown_path(
        in_process: Any, upstream: FakeUpstreamThread, caplog: pytest.LogCaptureFixture) -> None:
    async with in_process(config(upstream)) as gw:
        with caplog.at_level(logging.WARNING, logger="gateway.requests"):
            missing = await gw.client.get("/v1/responses/resp_nope")  # a route, and an object it does not have
            wrong_method = await gw.client.post("/v1/models")  # a route, another method
            served = await gw.client.get("/v1/models")
        assert (missing.status_code, wrong_method.status_code, served.status_code) == (404, 405, 200)
        assert gw.metric(UNKNOWN) == 0 and _unknown_path_lines(caplog) == []


@pytest.mark.anyio
async def test_a_credential_in_an_unknown_path_is_not_logged(
        in_process: Any, upstream: FakeUpstreamThread, caplog: pytest.LogCaptureFixture) -> None:
    async with in_process(config(upstream)) as gw:
        with caplog.at_level(logging.WARNING, logger="gateway.requests"):
            await gw.client.get(f"/v1/keys/{MASTER}")
        assert gw.metric(UNKNOWN, method="GET") == 1
        assert [MASTER in line for line in _unknown_path_lines(caplog)] == [False]


def test_the_paths_remembered_are_bounded_least_recently_seen_forgotten_first(
        caplog: pytest.LogCaptureFixture) -> None:
    paths = UnknownPaths(Redactor(), remember=2)
    with caplog.at_level(logging.WARNING, logger="gateway.requests"):
        for path in ("/a", "/b", "/a", "/c", "/a", "/b"):  # /c forgets /b (seen before /a again), not /a
            paths.record(None, "POST", path)
        paths.record(None, "BREW", "/pot")  # a method outside HTTP's: one bounded label for all of them
    logged = [line.split(": ", 1)[1].split(" (")[0] for line in _unknown_path_lines(caplog)]
    assert logged == ["POST '/a'", "POST '/b'", "POST '/c'", "POST '/b'", "OTHER '/pot'"]
