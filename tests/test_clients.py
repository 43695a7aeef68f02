"""The README's "Clients" table, row by row: each client library, set up exactly as the table says,
against the gateway and the fake upstream, with exact answers and costs. LangChain runs in the
test's event loop through ASGI; the LiteLLM SDK, the anthropic SDK and openai-agents (clients that
open their own connections) against a real `gateway serve` on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from conftest import Gateway, InProcess, model, standard_config

from gateway.fake_upstream import FakeUpstreamThread
from gateway.fake_upstream.embeddings_format import vector

# gpt-test (and compat-test): 1,000 prompt tokens of which 400 cached, 50 completion:
# 600 x $2.5/M + 400 x $1.25/M + 50 x $10/M
CHAT_USAGE = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
              "prompt_tokens_details": {"cached_tokens": 400}}
# the same tokens as OpenAI's Responses API reports them (what a native Responses request gets back)
RESPONSES_USAGE = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 400}, "output_tokens": 50,
                   "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1050}
COST, COST_HEADER = 0.0025, "0.0025"
# embed-test is text-embedding-3-small at the price table's $0.02/M: 1,500 tokens
EMBED_USAGE = {"prompt_tokens": 1500, "total_tokens": 1500}
EMBED_COST, EMBED_HEADER = 0.00003, "0.00003"
ENCODINGS = Path(__file__).resolve().parent.parent / "gateway" / "tokens" / "encodings"


def config(upstream: FakeUpstreamThread) -> dict[str, Any]:
    base = standard_config(upstream)
    base["models"].append(model("embed-test", "openai", upstream, upstream_model="text-embedding-3-small"))
    # an OpenAI-compatible server without the Responses API: Responses requests are translated to chat
    base["models"].append(model("compat-test", "openai_compatible", upstream, upstream_model="compat-up",
                                pricing={"input_per_mtok": 2.5, "output_per_mtok": 10, "cached_input_per_mtok": 1.25}))
    return base


@pytest.fixture(scope="module")
def served(upstream: FakeUpstreamThread) -> Iterator[Gateway]:
    """`gateway serve` with this module's models, for clients that bring their own HTTP stack."""
    gw = Gateway(config(upstream))
    yield gw
    gw.stop()


def weather(city: str) -> str:
    """The weather now in a city."""
    return f"18 C, sunny in {city}"


def chat_openai(gw: InProcess, **kw: Any) -> Any:
    """LangChain's ChatOpenAI, as the README sets it up (base_url, api_key, model), reaching the
    in-process gateway through its ASGI client."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url="http://gateway.test/v1", api_key="client-key",
                      http_async_client=gw.client, max_retries=0, **kw)


# ---------------------------------------------------------------------------------- LangChain


@pytest.mark.anyio
async def test_langchain_chat_openai_on_chat_completions(in_process: Any, upstream: FakeUpstreamThread) -> None:
    from langchain_core.messages import AIMessageChunk

    upstream.script("gpt-4o-test", {"reply": "Paris is the capital.", "usage": CHAT_USAGE})
    async with in_process(config(upstream)) as gw:
        answer = await chat_openai(gw, model="gpt-test", include_response_headers=True).ainvoke("Capital of France?")
        assert answer.text == "Paris is the capital."
        assert answer.usage_metadata == {"input_tokens": 1000, "output_tokens": 50, "total_tokens": 1050,
                                         "input_token_details": {"cache_read": 400}, "output_token_details": {}}
        assert answer.response_metadata["token_usage"]["cost"] == COST  # the gateway's usage.cost, kept
        assert answer.response_metadata["headers"]["x-gateway-cost-usd"] == COST_HEADER
        assert upstream.calls()[-1]["path"] == "/v1/chat/completions"
        streamed: AIMessageChunk | None = None
        async for chunk in chat_openai(gw, model="gpt-test", stream_usage=True).astream("Capital of France?"):
            streamed = chunk if streamed is None else streamed + chunk
        assert streamed is not None and streamed.text == "Paris is the capital."
        assert streamed.usage_metadata is not None and streamed.usage_metadata["input_tokens"] == 1000
        assert upstream.calls()[-1]["body"]["stream_options"] == {"include_usage": True}
        await gw.drain()
        assert gw.metric("gateway_spend_usd_total", model="gpt-test") == 2 * COST


@pytest.mark.anyio
async def test_langchain_responses_api_on_an_openai_model_goes_natively(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage

    upstream.script("gpt-4o-test", {"reply": "Nice to meet you, Ada.", "usage": RESPONSES_USAGE})
    async with in_process(config(upstream)) as gw:
        llm = chat_openai(gw, model="gpt-test", use_responses_api=True, include_response_headers=True)
        first = await llm.ainvoke([HumanMessage("My name is Ada.")])
        assert first.text == "Nice to meet you, Ada." and first.response_metadata["id"].startswith("resp_")
        assert first.usage_metadata["input_tokens"] == 1000
        assert first.usage_metadata["input_token_details"]["cache_read"] == 400
        assert first.response_metadata["headers"]["x-gateway-cost-usd"] == COST_HEADER
        assert upstream.calls()[-1]["path"] == "/v1/responses"  # OpenAI's own Responses API, as sent
        streamed: AIMessageChunk | None = None
        async for chunk in llm.astream([HumanMessage("My name is Ada.")]):
            streamed = chunk if streamed is None else streamed + chunk
        assert streamed is not None and streamed.text == "Nice to meet you, Ada."
        assert streamed.usage_metadata is not None and streamed.usage_metadata["input_tokens"] == 1000
        assert upstream.calls()[-1]["body"]["stream"] is True
        upstream.script("gpt-4o-test", {"tool_calls": [{"name": "weather", "arguments": '{"city": "Paris"}'}],
                                        "usage": RESPONSES_USAGE})
        bound = llm.bind_tools([weather])
        asked = [HumanMessage("Weather in Paris?")]
        call = await bound.ainvoke(asked)
        assert [(c["name"], c["args"]) for c in call.tool_calls] == [("weather", {"city": "Paris"})]
        upstream.script("gpt-4o-test", {"reply": "Sunny.", "usage": RESPONSES_USAGE})
        done = await bound.ainvoke([*asked, call, ToolMessage("18 C, sunny", tool_call_id=call.tool_calls[0]["id"])])
        assert done.text == "Sunny."
        assert [item["type"] for item in upstream.calls()[-1]["body"]["input"]] == [
            "message", "function_call", "function_call_output"]
        await gw.drain()
        assert gw.metric("gateway_spend_usd_total", model="gpt-test") == 4 * COST


@pytest.mark.anyio
async def test_langchain_responses_api_on_a_model_without_it_is_translated(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    """LangChain's Responses items (assistant messages with ids, function calls and their outputs)
    become a chat conversation; with use_previous_response_id the gateway replays what it kept."""
    from langchain_core.messages import HumanMessage, ToolMessage

    upstream.script("compat-up", {"reply": "Nice to meet you, Ada.", "usage": CHAT_USAGE})
    async with in_process(config(upstream)) as gw:
        llm = chat_openai(gw, model="compat-test", use_responses_api=True, include_response_headers=True)
        first = await llm.ainvoke([HumanMessage("My name is Ada.")])
        assert first.text == "Nice to meet you, Ada."
        assert first.usage_metadata["input_tokens"] == 1000
        assert first.usage_metadata["input_token_details"]["cache_read"] == 400
        assert first.response_metadata["headers"]["x-gateway-cost-usd"] == COST_HEADER
        upstream.script("compat-up", {"reply": "Your name is Ada.", "usage": CHAT_USAGE})
        history = [HumanMessage("My name is Ada."), first, HumanMessage("What is my name?")]
        expected = [{"role": "user", "content": "My name is Ada."},
                    {"role": "assistant", "content": "Nice to meet you, Ada."},
                    {"role": "user", "content": "What is my name?"}]
        assert (await llm.ainvoke(history)).text == "Your name is Ada."
        assert upstream.calls()[-1]["body"]["messages"] == expected
        chained = chat_openai(gw, model="compat-test", use_responses_api=True, use_previous_response_id=True)
        assert (await chained.ainvoke(history)).text == "Your name is Ada."  # only the last turn is sent
        assert upstream.calls()[-1]["body"]["messages"] == expected  # the rest from the gateway's store
        upstream.script("compat-up", {"tool_calls": [{"name": "weather", "arguments": '{"city": "Paris"}'}],
                                      "usage": CHAT_USAGE})
        bound = llm.bind_tools([weather])
        call = await bound.ainvoke([HumanMessage("Weather in Paris?")])
        call_id = call.tool_calls[0]["id"]
        upstream.script("compat-up", {"reply": "Sunny.", "usage": CHAT_USAGE})
        done = await bound.ainvoke([HumanMessage("Weather in Paris?"), call, ToolMessage("18 C", tool_call_id=call_id)])
        assert done.text == "Sunny."
        assert upstream.calls()[-1]["body"]["messages"][1:] == [
            {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {
                "name": "weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "18 C"}]
        await gw.drain()
        assert gw.metric("gateway_spend_usd_total", model="compat-test") == 5 * COST


@pytest.mark.anyio
@pytest.mark.parametrize("check_length", [False, True])
async def test_langchain_openai_embeddings(in_process: Any, upstream: FakeUpstreamThread,
                                           monkeypatch: pytest.MonkeyPatch, check_length: bool) -> None:
    """check_embedding_ctx_length=False sends the texts; LangChain's default sends cl100k token ids
    (tiktoken's file: offline, the copy the gateway ships), which the gateway takes as well."""
    from langchain_openai import OpenAIEmbeddings

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(ENCODINGS))
    upstream.script("text-embedding-3-small", {"usage": EMBED_USAGE})
    async with in_process(config(upstream)) as gw:
        embeddings = OpenAIEmbeddings(base_url="http://gateway.test/v1", api_key="client-key",  # type: ignore[call-arg]
                                      model="embed-test", http_async_client=gw.client, max_retries=0,
                                      check_embedding_ctx_length=check_length)
        vectors = await embeddings.aembed_documents(["opening hours", "gift cards"])
        sent = upstream.calls()[-1]["body"]["input"]
        if check_length:
            import tiktoken

            encoding = tiktoken.get_encoding("cl100k_base")
            assert sent == [encoding.encode("opening hours"), encoding.encode("gift cards")]
            assert vectors == [pytest.approx(list(vector(ids)), rel=1e-6) for ids in sent]  # (renormalised)
        else:
            assert sent == ["opening hours", "gift cards"]
            assert vectors == [list(vector("opening hours")), list(vector("gift cards"))]
        await gw.drain()
        assert gw.metric("gateway_spend_usd_total", model="embed-test") == EMBED_COST


# ---------------------------------------------------------------------------------- LiteLLM SDK


@pytest.fixture(scope="module")
def litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the remote cost map
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    import litellm

    return litellm


def _cost_header(response: Any) -> str:
    """The gateway's x-gateway-cost-usd as LiteLLM hands back a provider's headers."""
    return str(response._hidden_params["additional_headers"]["llm_provider-x-gateway-cost-usd"])


@pytest.mark.anyio
async def test_litellm_completion_through_the_gateway(litellm: Any, served: Gateway,
                                                      upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"reply": "Paris is the capital.", "usage": CHAT_USAGE})
    where = {"model": "openai/gpt-test", "api_base": f"{served.url}/v1", "api_key": "client-key"}
    messages = [{"role": "user", "content": "Capital of France?"}]
    answer = await litellm.acompletion(messages=messages, **where)
    assert answer.choices[0].message.content == "Paris is the capital."
    assert (answer.usage.prompt_tokens, answer.usage.prompt_tokens_details.cached_tokens) == (1000, 400)
    assert answer.usage.cost == COST and _cost_header(answer) == COST_HEADER
    assert answer._hidden_params["response_cost"] == COST  # LiteLLM reports the gateway's cost as its own
    assert upstream.calls()[-1]["body"]["messages"] == messages
    stream = await litellm.acompletion(messages=messages, stream=True, stream_options={"include_usage": True}, **where)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris is the capital."
    usage = next(c.usage for c in reversed(chunks) if getattr(c, "usage", None))
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cost) == (1000, 50, COST)


@pytest.mark.anyio
async def test_litellm_responses_through_the_gateway(litellm: Any, served: Gateway,
                                                     upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"reply": "Forty-two.", "usage": RESPONSES_USAGE})
    upstream.script("compat-up", {"reply": "Forty-two.", "usage": CHAT_USAGE})
    for name, path in (("gpt-test", "/v1/responses"), ("compat-test", "/v1/chat/completions")):
        response = await litellm.aresponses(model=f"openai/{name}", api_base=f"{served.url}/v1",
                                            api_key="client-key", input="The answer?")
        assert response.output[0].content[0].text == "Forty-two."
        assert (response.usage.input_tokens, response.usage.input_tokens_details.cached_tokens,
                response.usage.output_tokens) == (1000, 400, 50)
        assert response.usage.cost == COST
        assert upstream.calls()[-1]["path"] == path  # natively to an OpenAI model, else translated


@pytest.mark.anyio
async def test_litellm_embedding_through_the_gateway(litellm: Any, served: Gateway,
                                                     upstream: FakeUpstreamThread) -> None:
    upstream.script("text-embedding-3-small", {"usage": EMBED_USAGE})
    result = await litellm.aembedding(model="openai/embed-test", api_base=f"{served.url}/v1", api_key="client-key",
                                      input=["opening hours", "gift cards"])
    assert [d["embedding"] for d in result.data] == [list(vector("opening hours")), list(vector("gift cards"))]
    assert result.usage.prompt_tokens == 1500 and _cost_header(result) == EMBED_HEADER


# ---------------------------------------------------------------------------------- anthropic SDK, openai-agents


@pytest.mark.anyio
async def test_anthropic_sdk_with_base_url_and_a_gateway_key_on_an_openai_model(
        served: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"reply": "Bonjour.", "usage": CHAT_USAGE})
    async with anthropic.AsyncAnthropic(base_url=served.url, api_key="client-key", max_retries=0) as client:
        raw = await client.messages.with_raw_response.create(
            model="gpt-test", max_tokens=64, messages=[{"role": "user", "content": "Hello in French?"}])
        message = await raw.parse()
        assert message.content[0].text == "Bonjour."  # type: ignore[union-attr]
        usage = message.usage.model_dump()
        assert (usage["input_tokens"], usage["cache_read_input_tokens"], usage["output_tokens"]) == (600, 400, 50)
        assert usage["cost"] == COST and raw.headers["x-gateway-cost-usd"] == COST_HEADER
        sent = raw.http_request.headers  # (x-api-key or Authorization: Bearer, by SDK version: both are taken)
        assert "client-key" in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))


@pytest.mark.anyio
async def test_openai_agents_with_the_gateway_as_default_client(
        served: Gateway, upstream: FakeUpstreamThread, monkeypatch: pytest.MonkeyPatch) -> None:
    from agents import Agent, Runner, set_default_openai_client, set_tracing_disabled
    from agents.models import _openai_shared

    monkeypatch.setattr(_openai_shared, "_default_openai_client", None)  # (put back after the test)
    set_tracing_disabled(True)
    upstream.script("gpt-4o-test", {"reply": "Hello from the agent.", "usage": RESPONSES_USAGE})
    async with openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="client-key", max_retries=0) as client:
        set_default_openai_client(client, use_for_tracing=False)
        result = await Runner.run(Agent(name="helper", instructions="Be kind.", model="gpt-test"), "Say hello.")
    assert result.final_output == "Hello from the agent."
    assert result.context_wrapper.usage.input_tokens == 1000
    assert upstream.calls()[-1]["path"] == "/v1/responses"
