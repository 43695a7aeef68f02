"""The inference-economics part of `gateway demo`: a request that may wait, sent at OpenAI's flex
service tier and billed at its price; one batch of three lines through the gateway's Batch API,
each line billed at batch rates; and a team's spend forecast. Providers are simulated; prices are
litellm's list prices, exact to the pico-dollar."""

from __future__ import annotations

import io
import time
from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson

from gateway.config.settings import Settings
from gateway.fake_upstream import FakeUpstreamThread
from gateway.money.pricing import Usage, price_usage, usd_text

__all__ = ["ECONOMICS_MODELS", "run_economics"]

# Added to the demo's models (name, provider): gpt-5-mini has a flex price in litellm's table.
ECONOMICS_MODELS = (("gpt-5-mini", "openai"),)
_FLEX = "gpt-5-mini"
_BATCH = "gpt-4o-mini"
_TEAM = "research"


def _usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}, "completion_tokens_details": {"reasoning_tokens": 0}}


def _usd(value: Any) -> str:
    return f"{Decimal(str(value)).normalize():f}"


def _flex(client: openai.OpenAI, fake: FakeUpstreamThread, settings: Settings) -> None:
    usage = _usage(6_000, 1_500, cached=2_048)
    fake.script(_FLEX, {"output_tokens": 12, "usage": usage})
    raw = client.chat.completions.with_raw_response.create(
        model=_FLEX, messages=[{"role": "user", "content": "Tag these 40 support tickets."}],
        extra_headers={"x-gateway-defer": "flex"})
    completion = raw.parse()
    assert completion.usage is not None
    cost = completion.usage.model_dump()
    sent = fake.calls(_FLEX)[-1]["body"].get("service_tier")
    default = price_usage(Usage.from_openai(usage), settings.models[_FLEX].price).total
    print(f"  x-gateway-defer: flex -> {_FLEX} called with service_tier={sent!r}, "
          f"the answer reports {completion.service_tier!r}")
    print(f"    6,000 in (2,048 cached), 1,500 out: ${raw.headers['x-gateway-cost-usd']} at flex, "
          f"${usd_text(default)} at the default tier; cost_details.service_tier = "
          f"{cost['cost_details'].get('service_tier')!r}")


def _batch(client: openai.OpenAI, fake: FakeUpstreamThread, settings: Settings) -> None:
    usages = {"ticket-1": _usage(1_200, 300), "ticket-2": _usage(2_400, 500, cached=1_024),
              "ticket-3": _usage(800, 120)}
    httpx.post(f"{fake.url}/_fake/batches", json={"delay_s": 0.2, "usage": usages}).raise_for_status()
    lines = b"".join(orjson.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                                   "body": {"model": _BATCH, "max_tokens": 600,
                                            "messages": [{"role": "user", "content": f"Summarise {cid}."}]}}) + b"\n"
                     for cid in usages)
    uploaded = client.files.create(file=("tickets.jsonl", io.BytesIO(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    print(f"  POST /v1/batches -> {batch.id}, 3 lines of {_BATCH}, status {batch.status}")
    deadline = time.monotonic() + 30
    while batch.status not in ("completed", "failed", "expired", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    if batch.output_file_id is None:
        print(f"    the batch ended {batch.status}")
        return
    price = settings.models[_BATCH].price
    total = default = 0
    for raw in client.files.content(batch.output_file_id).text.splitlines():
        line = orjson.loads(raw)
        usage = line["response"]["body"]["usage"]
        pico = price_usage(Usage.from_openai(usage, "batch"), price).total
        total, default = total + pico, default + price_usage(Usage.from_openai(usage), price).total
        print(f"    {line['custom_id']}: {usage['prompt_tokens']:>5} in, {usage['completion_tokens']:>4} out: "
              f"usage.cost ${_usd(usage['cost'])} (batch rates)")
    print(f"    batch total ${usd_text(total)}, ${usd_text(default)} at the default tier")


def _forecast(base_url: str, fake: FakeUpstreamThread, master_key: str) -> None:
    admin = {"Authorization": f"Bearer {master_key}"}
    httpx.put(f"{base_url}/admin/teams/{_TEAM}", headers=admin,
              json={"budget_usd": "0.05", "budget_period": "daily"}).raise_for_status()
    key = httpx.post(f"{base_url}/admin/keys", headers=admin, json={"alias": "nightly-evals", "team": _TEAM}).json()
    fake.script(_BATCH, {"output_tokens": 12, "usage": _usage(20_000, 2_000)})
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=key["key"], max_retries=0) as team_client:
        for _ in range(3):
            team_client.chat.completions.create(model=_BATCH, messages=[{"role": "user", "content": "Grade this."}])
    deadline = time.monotonic() + 10
    while True:  # settlements and ledger records are written off the responses' path: wait for them
        team = httpx.get(f"{base_url}/admin/forecast", headers=admin, params={"team": _TEAM}).json()["teams"][0]
        if team["spent_usd"] and team["window_spend_usd"] == team["spent_usd"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    runs_out = team["projected_exhaustion_at"] or "never"
    print(f"  GET /admin/forecast?team={_TEAM}: budget ${_usd(team['budget_usd'])} {team['budget_period']}, "
          f"spent ${_usd(team['spent_usd'])}")
    print(f"    burn rate ${team['burn_rate_usd_per_hour']:.6f}/h over the last hour; projected "
          f"${team['projected_period_spend_usd']:.6f} by {team['period_end']}; runs out {runs_out}"
          f"{' (before the period ends)' if team['runs_out_before_period_end'] else ''}")


def run_economics(base_url: str, client: openai.OpenAI, fake: FakeUpstreamThread, settings: Settings,
                  master_key: str) -> None:
    print("\nService tiers, batches and forecasts (the same pricing core):")
    _flex(client, fake, settings)
    _batch(client, fake, settings)
    _forecast(base_url, fake, master_key)
