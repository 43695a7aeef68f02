"""A request that names a model goes to that model only, and only if it fits: a prompt plus
max_tokens beyond the model's window, or max_tokens beyond its maximum output, is refused with
400 before any upstream call, as a tier request would exclude that model."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import model

from gateway.fake_upstream import FakeUpstreamThread

pytestmark = pytest.mark.anyio


@pytest.fixture
def window_config(upstream: FakeUpstreamThread) -> dict[str, Any]:
    return {"models": [model("small-window", "openai", upstream, upstream_model="small-up", max_input_tokens=100,
                             max_output_tokens=50, pricing={"input_per_mtok": 1, "output_per_mtok": 1})]}


@pytest.mark.parametrize(("content", "max_tokens", "why"), [
    ("word " * 200, None, "context window: 208 input + 0 max output tokens > 100"),
    ("hi", 95, "context window: 8 input + 95 max output tokens > 100"),
    ("hi", 60, "max_tokens 60 > model's maximum output 50"),
], ids=["long-prompt", "prompt-plus-max-tokens", "max-tokens"])
async def test_a_request_the_model_cannot_take_is_400_before_any_upstream_call(
    in_process: Any, window_config: dict[str, Any], upstream: FakeUpstreamThread, content: str,
    max_tokens: int | None, why: str,
) -> None:
    body: dict[str, Any] = {"model": "small-window", "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    async with in_process(window_config) as gw:
        response = await gw.client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400
        assert response.json()["error"] == {
            "message": f"model 'small-window' cannot serve this request: {why}", "type": "invalid_request_error",
            "param": "messages", "code": None}
        assert upstream.calls("small-up") == []
        assert gw.metric("gateway_requests_total", model="none", status="400") == 1  # no model was tried


async def test_a_request_that_fits_is_served(in_process: Any, window_config: dict[str, Any],
                                             upstream: FakeUpstreamThread) -> None:
    upstream.script("small-up", {"usage": {"prompt_tokens": 8, "completion_tokens": 50}})
    async with in_process(window_config) as gw:  # 8 + 50 <= 100 tokens, 50 <= 50 output tokens
        raw = await gw.openai().chat.completions.with_raw_response.create(
            model="small-window", messages=[{"role": "user", "content": "hi"}], max_tokens=50)
        assert raw.headers["x-gateway-cost-usd"] == "0.000058"
        assert len(upstream.calls("small-up")) == 1
