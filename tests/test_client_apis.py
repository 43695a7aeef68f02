"""The client APIs besides Chat Completions, through the official SDKs against an in-process
gateway and the fake upstream: Anthropic Messages (`anthropic`), the Responses API (`openai`,
`openai-agents`) and embeddings (`openai`). Exact costs, one pricing core, the same keys,
budgets, limits, ledger and metrics as chat."""

from __future__ import annotations

import base64
import struct
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest
from conftest import InProcess, model, standard_config

from gateway.fake_upstream import FakeUpstreamThread
from gateway.tokens.counter import TokenCounter

MASTER = "sk-master-client-apis-0123456789"
CACHE_USAGE = {
    "input_tokens": 100, "output_tokens": 200, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 1500,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500},
}
# 100 x $3/M + 2,000 x $0.30/M + 1,000 x $3.75/M + 500 x $6/M + 200 x $15/M
CACHE_COST = 0.01065
# gpt-test: 1,000 prompt tokens of which 400 cached, 50 completion: 600 x 2.5 + 400 x 1.25 + 50 x 10 per M
OPENAI_USAGE = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
                "prompt_tokens_details": {"cached_tokens": 400}}
OPENAI_COST = 0.0025
# reasoner-test: 300 prompt, 500 completion of which 400 reasoning: 300 x 1.1 + 100 x 4.4 + 400 x 12 per M
REASONING_USAGE = {"prompt_tokens": 300, "completion_tokens": 500, "total_tokens": 800,
                   "completion_tokens_details": {"reasoning_tokens": 400}}
REASONING_COST = 0.00557
# the same usage as OpenAI's Responses API reports it (what reaches a native Responses request)
RESPONSES_USAGE = {"input_tokens": 300, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                   "output_tokens": 500, "output_tokens_details": {"reasoning_tokens": 400}, "total_tokens": 800}


def config(upstream: FakeUpstreamThread, **extra: Any) -> dict[str, Any]:
    base = standard_config(upstream)
    base["models"].append(model("embed-test", "openai", upstream, upstream_model="text-embedding-3-small"))
    base["models"].append(model("gpt-b", "openai", upstream, upstream_model="gpt-b-up", quality=70,
                                pricing={"input_per_mtok": 1, "output_per_mtok": 2}))
    # an OpenAI-compatible server without the Responses API: Responses requests are translated to chat
    base["models"].append(model("compat-test", "openai_compatible", upstream, upstream_model="compat-up",
                                pricing={"input_per_mtok": 2.5, "output_per_mtok": 10, "cached_input_per_mtok": 1.25}))
    base["tiers"] = {"cheap": {"min_quality": 60}}
    base["master_key"] = MASTER
    return {**base, **extra}


def claude(gw: InProcess, api_key: str = "client-key") -> anthropic.AsyncAnthropic:
    """The anthropic SDK in the test's event loop, through ASGI (its own httpx2 client)."""
    client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gw.app), base_url="http://gateway.test",
                                timeout=30)
    return anthropic.AsyncAnthropic(base_url="http://gateway.test", http_client=client, api_key=api_key,
                                    max_retries=0)


async def new_key(gw: InProcess, **fields: Any) -> str:
    resp = await gw.client.post("/admin/keys", json=fields, headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


# ---------------------------------------------------------------------------------- Messages


@pytest.mark.anyio
async def test_messages_to_anthropic_report_its_usage_convention_and_exact_cost(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": "Bonjour", "usage": CACHE_USAGE})
    async with in_process(config(upstream)) as gw:
        raw = await claude(gw).messages.with_raw_response.create(
            model="claude-test", max_tokens=100, system=[{"type": "text", "text": "Be brief.",
                                                          "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            messages=[{"role": "user", "content": "Hello"}])
        message = await raw.parse()
        assert message.content[0].text == "Bonjour" and message.stop_reason == "end_turn"
        usage = message.usage.model_dump()
        assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_input_tokens"],
                usage["cache_creation_input_tokens"]) == (100, 200, 2000, 1500)
        assert usage["cache_creation"] == {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500}
        assert usage["cost"] == CACHE_COST and raw.headers["x-gateway-cost-usd"] == "0.01065"
        sent = upstream.calls()[-1]["body"]
        assert sent["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}  # the 1-hour write kept
        await gw.drain()
        assert gw.metric("gateway_spend_usd_total", model="claude-test", provider="anthropic") == CACHE_COST


@pytest.mark.anyio
async def test_messages_routed_to_an_openai_model_stream_the_same_cost_as_without(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"reply": "The answer is four.", "usage": OPENAI_USAGE})
    async with in_process(config(upstream)) as gw:
        client = claude(gw)
        whole = await client.messages.create(model="gpt-test", max_tokens=64,
                                             messages=[{"role": "user", "content": "2+2?"}])
        assert whole.content[0].text == "The answer is four."
        assert whole.model_dump()["usage"]["cost"] == OPENAI_COST
        async with client.messages.stream(model="gpt-test", max_tokens=64,
                                          messages=[{"role": "user", "content": "2+2?"}]) as stream:
            events = [event async for event in stream]
            final = await stream.get_final_message()
        assert [e.type for e in events][:3] == ["message_start", "content_block_start", "content_block_delta"]
        assert final.content[0].text == "The answer is four."  # type: ignore[union-attr]
        usage = final.usage.model_dump()  # (the SDK keeps the token counts of message_delta's usage)
        assert (usage["input_tokens"], usage["cache_read_input_tokens"], usage["output_tokens"]) == (600, 400, 50)
        delta = next(e for e in events if e.type == "message_delta")
        assert delta.usage.model_dump()["cost"] == OPENAI_COST  # stream == non-stream, never 0/0


@pytest.mark.anyio
async def test_messages_tool_use_round_trip_on_an_openai_model(in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"tool_calls": [{"name": "weather", "arguments": '{"city": "Paris"}'}]})
    tools = [{"name": "weather", "description": "Weather now", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    async with in_process(config(upstream)) as gw:
        client = claude(gw)
        first = await client.messages.create(model="gpt-test", max_tokens=64, tools=tools,  # type: ignore[arg-type]
                                             messages=[{"role": "user", "content": "Weather in Paris?"}])
        call = first.content[-1]
        assert first.stop_reason == "tool_use" and call.type == "tool_use"
        assert (call.name, call.input) == ("weather", {"city": "Paris"})
        upstream.script("gpt-4o-test", {"reply": "Sunny."})
        second = await client.messages.create(model="gpt-test", max_tokens=64, tools=tools,  # type: ignore[arg-type]
                                              messages=[{"role": "user", "content": "Weather in Paris?"},
                                                        {"role": "assistant", "content": first.content},  # type: ignore[misc]
                                                        {"role": "user", "content": [{
                                                            "type": "tool_result", "tool_use_id": call.id,
                                                            "content": "18 C, sunny"}]}])
        assert second.content[0].text == "Sunny."
        sent = upstream.calls()[-1]["body"]["messages"]
        assert sent[1]["tool_calls"][0]["id"] == call.id and sent[2] == {
            "role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"}


@pytest.mark.anyio
async def test_count_tokens_calls_no_model_and_counts_like_the_gateway(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        before = len(upstream.calls())
        messages = [{"role": "user", "content": "How many tokens is this sentence, exactly?"}]
        counted = await claude(gw).messages.count_tokens(model="gpt-test", messages=messages)  # type: ignore[arg-type]
        expected = TokenCounter().count_messages(messages, "gpt-4o-test")
        assert counted.input_tokens == expected and len(upstream.calls()) == before


@pytest.mark.anyio
async def test_messages_keys_budgets_and_errors_in_anthropics_shape(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": "ok", "usage": CACHE_USAGE})
    async with in_process(config(upstream, require_keys=True)) as gw:
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await claude(gw, api_key="not-a-gateway-key").messages.create(
                model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        secret = await new_key(gw, budget_usd="0.0108")
        client = claude(gw, api_key=secret)  # sent as x-api-key
        await client.messages.create(model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        await gw.drain()  # (the settlement is written off the answer's path)
        with pytest.raises(anthropic.RateLimitError) as spent:  # 0.01065 of 0.0108 spent: not even 16 tokens left
            await client.messages.create(model="claude-test", max_tokens=1000,
                                         messages=[{"role": "user", "content": "hi"}])
        assert spent.value.body == {"type": "error", "error": {  # type: ignore[comparison-overlap]
            "type": "rate_limit_error", "message": spent.value.body["error"]["message"]}}  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as bad:
            await client.messages.create(model="claude-test", max_tokens=5, messages=[])
        assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(model="no-such-model", max_tokens=5,
                                         messages=[{"role": "user", "content": "hi"}])
        wrong = await gw.client.get("/v1/messages")
        assert wrong.status_code == 405 and wrong.json()["type"] == "error" and wrong.headers["allow"] == "POST"


# ---------------------------------------------------------------------------------- Responses


@pytest.mark.anyio
async def test_responses_to_openai_go_natively_and_are_priced_from_its_usage(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("o3-test", {"reply": "Forty-two.", "usage": RESPONSES_USAGE})
    async with in_process(config(upstream)) as gw:
        client = gw.openai()
        raw = await client.responses.with_raw_response.create(model="reasoner-test", input="The answer?",
                                                              instructions="Answer in words.", store=False)
        response = raw.parse()
        assert response.output_text == "Forty-two." and response.status == "completed"
        usage = response.usage
        assert usage is not None and (usage.input_tokens, usage.output_tokens) == (300, 500)
        assert usage.output_tokens_details.reasoning_tokens == 400
        assert usage.model_dump()["cost"] == REASONING_COST and raw.headers["x-gateway-cost-usd"] == "0.00557"
        sent = upstream.calls()[-1]
        assert sent["path"] == "/v1/responses" and sent["body"] == {
            "model": "o3-test", "input": "The answer?", "instructions": "Answer in words.", "store": False}
        async with client.responses.stream(model="reasoner-test", input="The answer?") as stream:
            events = [e async for e in stream]
            final = await stream.get_final_response()
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        assert "".join(deltas) == final.output_text == "Forty-two."
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert final.usage is not None and final.usage.model_dump()["cost"] == REASONING_COST
        await gw.drain()
        assert gw.metric("gateway_spend_usd_total", model="reasoner-test", provider="openai") == 2 * REASONING_COST


@pytest.mark.anyio
async def test_responses_to_a_server_without_them_are_translated_cost_and_cached_tokens_included(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("compat-up", {"reply": "ok", "usage": OPENAI_USAGE})
    async with in_process(config(upstream)) as gw:
        client = gw.openai()
        whole = await client.responses.create(model="compat-test", input="hi", instructions="Be brief.")
        sent = upstream.calls()[-1]
        assert sent["path"] == "/v1/chat/completions" and sent["body"]["messages"] == [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
        assert whole.usage is not None and whole.usage.input_tokens_details.cached_tokens == 400
        assert whole.usage.model_dump()["cost"] == OPENAI_COST
        async with client.responses.stream(model="compat-test", input="hi") as stream:
            final = await stream.get_final_response()
        assert final.output_text == "ok" and final.usage is not None
        assert final.usage.model_dump()["cost"] == OPENAI_COST  # stream == non-stream


@pytest.mark.anyio
async def test_previous_response_id_continues_on_the_same_model_for_its_tenant_only(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": "Nice to meet you, Ada."})
    async with in_process(config(upstream, require_keys=True)) as gw:
        alice, bob = await new_key(gw), await new_key(gw)
        client = gw.openai(api_key=alice)
        first = await client.responses.create(model="claude-test", input="My name is Ada.",
                                              instructions="Be terse.")  # (not carried over to the next turn)
        upstream.script("claude-up", {"reply": "Your name is Ada."})
        second = await client.responses.create(model="claude-test", input="What is my name?",
                                               previous_response_id=first.id)
        assert second.output_text == "Your name is Ada."
        sent = upstream.calls()[-1]["body"]["messages"]
        assert [(m["role"], m["content"][0]["text"] if isinstance(m["content"], list) else m["content"])
                for m in sent] == [("user", "My name is Ada."), ("assistant", "Nice to meet you, Ada."),
                                   ("user", "What is my name?")]
        assert (await client.responses.retrieve(first.id)).output_text == "Nice to meet you, Ada."
        other = gw.openai(api_key=bob)
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(first.id)
        with pytest.raises(openai.BadRequestError) as foreign:
            await other.responses.create(model="claude-test", input="and mine?", previous_response_id=first.id)
        assert foreign.value.code == "previous_response_not_found"
        await client.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)


@pytest.mark.anyio
async def test_a_continuation_on_a_tier_stays_with_the_model_that_answered(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        client = gw.openai()
        first = await client.responses.with_raw_response.create(model="cheap", input="Hello")
        answered = first.headers["x-gateway-model"]
        second = await client.responses.with_raw_response.create(model="cheap", input="Again",
                                                                 previous_response_id=first.parse().id)
        assert second.headers["x-gateway-model"] == answered
        assert "x-gateway-tier" not in second.headers  # by name now: the model that holds the conversation


@pytest.mark.anyio
async def test_openai_agents_runs_on_the_gateway_with_its_default_responses_model(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)
    upstream.script("gpt-4o-test", {"reply": "Hello from the agent.", "usage": RESPONSES_USAGE})
    async with in_process(config(upstream)) as gw:
        agent = Agent(name="helper", instructions="Be kind.",
                      model=OpenAIResponsesModel(model="gpt-test", openai_client=gw.openai()))
        result = await Runner.run(agent, "Say hello.")
        assert result.final_output == "Hello from the agent."
        assert result.context_wrapper.usage.input_tokens == 300
        assert upstream.calls()[-1]["path"] == "/v1/responses"  # (natively: gpt-test is an OpenAI model)


@pytest.mark.anyio
async def test_responses_errors_are_openai_shaped(in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        client = gw.openai()
        with pytest.raises(openai.BadRequestError) as bad:
            await client.responses.create(model="compat-test", input="x", tools=[{"type": "web_search"}])
        assert bad.value.code is None or isinstance(bad.value.code, str)
        assert "web_search" in bad.value.message
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="nope", input="x")
        wrong = await gw.client.get("/v1/responses")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


# ---------------------------------------------------------------------------------- embeddings


@pytest.mark.anyio
async def test_embeddings_priced_per_input_token_and_cached(in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("text-embedding-3-small", {"usage": {"prompt_tokens": 1000, "total_tokens": 1000}})
    async with in_process(config(upstream)) as gw:
        client = gw.openai()
        raw = await client.embeddings.with_raw_response.create(model="embed-test", input=["alpha", "beta"])
        result = raw.parse()
        assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 8
        assert raw.headers["x-gateway-cost-usd"] == "0.00002"  # 1,000 x $0.02/M (the price table's)
        assert result.usage.model_dump()["cost"] == 0.00002
        await gw.drain()  # (the cache entries are written off the response's path)
        again = await client.embeddings.with_raw_response.create(model="embed-test", input=["alpha", "beta"])
        assert again.headers["x-gateway-cache"] == "hit" and again.parse().data[1].embedding == result.data[1].embedding
        assert again.parse().usage.model_dump()["cost"] == 0
        # per input: only "gamma" goes upstream (and is paid for); the others come back from the cache
        upstream.script("text-embedding-3-small", {"usage": {"prompt_tokens": 500, "total_tokens": 500}})
        mixed = await client.embeddings.create(model="embed-test", input=["beta", "gamma", "alpha"])
        assert upstream.calls()[-1]["body"]["input"] == ["gamma"]
        assert [d.index for d in mixed.data] == [0, 1, 2]
        assert mixed.data[0].embedding == result.data[1].embedding
        assert mixed.data[2].embedding == result.data[0].embedding
        assert mixed.usage.model_dump()["cost"] == 0.00001  # 500 x $0.02/M: gamma alone
        packed = await client.embeddings.create(model="embed-test", input="alpha", encoding_format="base64")
        vector = struct.unpack("<8f", base64.b64decode(packed.data[0].embedding))  # type: ignore[arg-type]
        assert list(vector) == result.data[0].embedding  # the same vector, packed
        await gw.drain()
        # (the SDK asks for base64 even when not told to: "alpha" in base64 was already cached)
        assert gw.metric("gateway_spend_usd_total", model="embed-test", provider="openai") == 0.00003


@pytest.mark.anyio
async def test_embeddings_refuse_tiers_chat_models_and_bad_input(in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        client = gw.openai()
        with pytest.raises(openai.BadRequestError) as tier:
            await client.embeddings.create(model="cheap", input="x")
        assert "vector spaces" in tier.value.message
        with pytest.raises(openai.BadRequestError) as chat:
            await client.embeddings.create(model="gpt-test", input="x")
        assert "not an embedding model" in chat.value.message
        with pytest.raises(openai.BadRequestError) as empty:
            await client.embeddings.create(model="embed-test", input=[])
        assert empty.value.param == "input"


@pytest.mark.anyio
async def test_models_name_their_endpoints_and_can_be_retrieved_one_by_one(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        client = gw.openai()
        listed = {m.id: m.model_dump() for m in (await client.models.list()).data}
        assert listed["embed-test"]["endpoints"] == ["/v1/embeddings"]
        assert listed["gpt-test"]["endpoints"] == listed["cheap"]["endpoints"] == [
            "/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/completions"]
        tier = await client.models.retrieve("cheap")
        assert (tier.id, tier.owned_by) == ("cheap", "gateway-tier")
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("no-such-model")


# ---------------------------------------------------------------------------------- native pass-through


@pytest.mark.anyio
async def test_messages_to_anthropic_go_as_sent_thinking_signatures_and_betas_untouched(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": "Done.", "usage": CACHE_USAGE})
    history = [
        {"role": "user", "content": "Plan it."},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc"},
                                          {"type": "text", "text": "Step one."}]},
        {"role": "user", "content": [{"type": "text", "text": "Go on.", "cache_control": {"type": "ephemeral"}}]},
    ]
    async with in_process(config(upstream)) as gw:
        client = claude(gw)
        raw = await client.messages.with_raw_response.create(
            model="claude-test", max_tokens=2048, messages=history,  # type: ignore[arg-type]
            thinking={"type": "enabled", "budget_tokens": 1024}, extra_headers={"anthropic-beta": "beta-x"})
        sent = upstream.calls()[-1]
        assert sent["path"] == "/v1/messages" and sent["body"]["messages"] == history
        assert sent["body"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        assert sent["headers"]["anthropic-beta"] == "beta-x" and sent["headers"]["x-api-key"] != "client-key"
        message = await raw.parse()
        assert message.usage.model_dump()["cost"] == CACHE_COST and raw.headers["x-gateway-cost-usd"] == "0.01065"
        async with client.messages.stream(model="claude-test", max_tokens=2048, messages=history) as stream:  # type: ignore[arg-type]
            events = [e async for e in stream]
            final = await stream.get_final_message()
        assert final.content[0].text == "Done."  # type: ignore[union-attr]
        delta = next(e for e in events if e.type == "message_delta")
        assert delta.usage.model_dump()["cost"] == CACHE_COST  # the provider's usage, the cost added
        assert final.usage.output_tokens == 200 and final.usage.cache_read_input_tokens == 2000
        await gw.drain()
        assert gw.metric("gateway_spend_usd_total", model="claude-test", provider="anthropic") == 2 * CACHE_COST


@pytest.mark.anyio
async def test_a_continuation_of_an_openai_response_goes_back_to_openai_with_its_id(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"reply": "Hi Ada."})
    async with in_process(config(upstream)) as gw:
        client = gw.openai()
        first = await client.responses.create(model="gpt-test", input="I am Ada.")
        second = await client.responses.create(model="gpt-test", input="Who am I?", previous_response_id=first.id)
        sent = upstream.calls()[-1]
        assert sent["path"] == "/v1/responses" and sent["body"]["previous_response_id"] == first.id
        assert sent["body"]["input"] == "Who am I?"  # OpenAI holds the conversation: nothing replayed
        assert second.output_text == "Hi Ada."
        # an id the gateway never saw: only OpenAI can know it, so it goes there as it is ...
        await client.responses.create(model="gpt-test", input="x", previous_response_id="resp_from_elsewhere")
        assert upstream.calls()[-1]["body"]["previous_response_id"] == "resp_from_elsewhere"
        # ... and to any other model it is unknown
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="claude-test", input="x", previous_response_id="resp_from_elsewhere")


@pytest.mark.anyio
async def test_count_tokens_for_an_anthropic_model_asks_anthropic_for_free(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream)) as gw:
        counted = await claude(gw).messages.count_tokens(
            model="claude-test", system="Be brief.", messages=[{"role": "user", "content": "one two three"}])
        call = upstream.calls()[-1]
        assert call["path"] == "/v1/messages/count_tokens" and call["body"] == {
            "model": "claude-up", "system": "Be brief.", "messages": [{"role": "user", "content": "one two three"}]}
        assert counted.input_tokens == 9  # the fake's count (4 per message + its words; system: 2 words)
        assert not [c for c in upstream.calls() if c["path"] == "/v1/messages"]  # no paid call


# ---------------------------------------------------------------------------------- one set of books


@pytest.mark.anyio
async def test_every_endpoint_books_what_it_told_the_client_and_keeps_the_keys_limits(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    """One request on each API with one key: the ledger, the spend metric and the key's spend all
    equal the sum of the `usage.cost` the client was told, to the pico-dollar."""
    upstream.script("claude-up", {"reply": "a", "usage": CACHE_USAGE})
    upstream.script("o3-test", {"reply": "b", "usage": RESPONSES_USAGE})
    upstream.script("compat-up", {"reply": "c", "usage": OPENAI_USAGE})
    upstream.script("text-embedding-3-small", {"usage": {"prompt_tokens": 1000, "total_tokens": 1000}})
    async with in_process(config(upstream, require_keys=True)) as gw:
        secret = await new_key(gw, budget_usd="1")
        client, told = gw.openai(api_key=secret), []
        message = await claude(gw, secret).messages.create(
            model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        told.append(message.usage.model_dump()["cost"])
        told.append((await client.responses.create(model="reasoner-test", input="x")).usage.model_dump()["cost"])
        told.append((await client.responses.create(model="compat-test", input="x")).usage.model_dump()["cost"])
        told.append((await client.embeddings.create(model="embed-test", input="x")).usage.model_dump()["cost"])
        assert told == [CACHE_COST, REASONING_COST, OPENAI_COST, 0.00002]
        total_pico = sum(round(c * 10**12) for c in told)
        await gw.drain()
        records = [orjson.loads(line) for line in (await gw.client.get(
            "/admin/ledger", headers={"Authorization": f"Bearer {MASTER}"})).text.splitlines()]
        assert sorted(r["model"] for r in records) == ["claude-test", "compat-test", "embed-test", "reasoner-test"]
        assert sum(r["cost_pico"] for r in records) == total_pico
        metric = sum(gw.metric("gateway_spend_usd_total", model=m) for m in
                     ("claude-test", "reasoner-test", "compat-test", "embed-test"))
        assert round(metric * 10**12) == total_pico
        spend = (await gw.client.get("/v1/spend", headers={"Authorization": f"Bearer {secret}"})).json()
        assert round(float(spend["spend_usd"]) * 10**12) == total_pico


@pytest.mark.anyio
async def test_a_keys_rate_limit_holds_on_every_endpoint(in_process: Any, upstream: FakeUpstreamThread) -> None:
    async with in_process(config(upstream, require_keys=True)) as gw:
        for call in ("messages", "responses", "embeddings"):
            secret = await new_key(gw, rpm=1)
            client = gw.openai(api_key=secret)

            async def once(client: openai.AsyncOpenAI = client, secret: str = secret, call: str = call) -> Any:
                if call == "messages":
                    return await claude(gw, secret).messages.create(
                        model="gpt-test", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
                if call == "responses":
                    return await client.responses.create(model="compat-test", input="hi")
                return await client.embeddings.create(model="embed-test", input="hi")

            await once()
            with pytest.raises((openai.RateLimitError, anthropic.RateLimitError)):
                await once()


@pytest.mark.anyio
async def test_what_only_the_provider_understands_goes_to_it_as_sent(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    """Server tools and documents for an Anthropic model, built-in tools for an OpenAI one: not
    translatable, so not refused when the model serves the API itself (still counted and billed)."""
    upstream.script("claude-up", {"reply": "Found it.", "usage": CACHE_USAGE})
    async with in_process(config(upstream)) as gw:
        tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]
        document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Ada"}}
        message = await claude(gw).messages.create(
            model="claude-test", max_tokens=64, tools=tools,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": [document, {"type": "text", "text": "Who?"}]}])  # type: ignore[list-item]
        sent = upstream.calls()[-1]["body"]
        assert sent["tools"] == tools and sent["messages"][0]["content"][0] == document
        assert message.usage.model_dump()["cost"] == CACHE_COST
        with pytest.raises(anthropic.BadRequestError):  # a model that is not Anthropic cannot read them
            await claude(gw).messages.create(model="gpt-test", max_tokens=64, tools=tools,  # type: ignore[arg-type]
                                             messages=[{"role": "user", "content": "Who?"}])
        upstream.script("gpt-4o-test", {"reply": "Searched.", "usage": RESPONSES_USAGE})
        searched = await gw.openai().responses.create(model="gpt-test", input="News?",
                                                      tools=[{"type": "web_search"}])
        assert upstream.calls()[-1]["body"]["tools"] == [{"type": "web_search"}]
        # gpt-test: 300 x $2.5/M + 500 x $10/M (its reasoning tokens at its output price)
        assert searched.usage is not None and searched.usage.model_dump()["cost"] == 0.00575


@pytest.mark.anyio
async def test_system_messages_inside_messages_as_claude_code_sends_them(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"reply": "ok"})
    async with in_process(config(upstream)) as gw:
        await claude(gw).messages.create(model="cheap", max_tokens=16, system="You are Claude Code.", messages=[
            {"role": "user", "content": "hi"}, {"role": "system", "content": "Reminder: be brief."},  # type: ignore[list-item]
            {"role": "user", "content": "again"}])
        sent = upstream.calls()[-1]["body"]["messages"]
        assert [m["role"] for m in sent] == ["system", "user", "system", "user"]
        assert sent[2]["content"] == "Reminder: be brief."


@pytest.mark.anyio
async def test_embedding_models_are_never_chat_candidates(in_process: Any, upstream: FakeUpstreamThread) -> None:
    cfg = config(upstream)
    cfg["models"][-3]["quality"] = 99  # embed-test, with a quality: still no tier's candidate
    async with in_process(cfg) as gw:
        plan = (await gw.client.post("/v1/estimate", json={"model": "cheap", "messages": [
            {"role": "user", "content": "hi"}]})).json()
        assert plan["model"] != "embed-test" and "embed-test" not in str(plan)
        with pytest.raises(openai.BadRequestError) as by_name:
            await gw.openai().chat.completions.create(model="embed-test", messages=[{"role": "user", "content": "x"}])
        assert "use /v1/embeddings" in by_name.value.message


@pytest.mark.anyio
async def test_a_budget_hold_covers_the_thinking_budget(in_process: Any, upstream: FakeUpstreamThread) -> None:
    """reasoning_effort on an Anthropic model adds its thinking budget to max_tokens: the hold
    covers it (claude-test: 16,384 + 100 output tokens at $15/M is $0.247, over a $0.05 budget), so
    the request is capped to what the budget pays, without thinking (which would come on top)."""
    upstream.script("claude-up", {"reply": "ok"})
    async with in_process(config(upstream, require_keys=True)) as gw:
        client = gw.openai(api_key=await new_key(gw, budget_usd="0.05"))
        asked = {"model": "claude-test", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
        plain = await client.chat.completions.with_raw_response.create(**asked)  # type: ignore[call-overload]
        assert "x-gateway-max-tokens" not in plain.headers
        raw = await client.chat.completions.with_raw_response.create(**asked, reasoning_effort="high")  # type: ignore[call-overload]
        cap = int(raw.headers["x-gateway-max-tokens"])
        sent = upstream.calls()[-1]["body"]
        assert sent["max_tokens"] == cap < 16_484 and "thinking" not in sent


@pytest.mark.anyio
async def test_embeddings_from_a_provider_litellm_translates(in_process: Any, upstream: FakeUpstreamThread) -> None:
    """Voyage (not OpenAI-format for the gateway: litellm's adapter), its price from the table."""
    upstream.script("voyage-3", {"usage": {"prompt_tokens": 1000, "total_tokens": 1000}})
    cfg = config(upstream)
    cfg["models"].append({"name": "voyage-test", "provider": "voyage", "upstream_model": "voyage-3",
                          "api_base": upstream.url + "/v1", "api_key": "sk-voyage-test"})
    async with in_process(cfg) as gw:
        raw = await gw.openai().embeddings.with_raw_response.create(model="voyage-test", input="hello",
                                                                    encoding_format="float")
        result = raw.parse()
        assert len(result.data[0].embedding) == 8 and raw.headers["x-gateway-cost-usd"] == "0.00006"  # 1,000 x $0.06/M
        assert upstream.calls()[-1]["path"] == "/v1/embeddings"
