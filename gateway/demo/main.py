"""`gateway demo`: the real gateway in front of SIMULATED providers, a short workload sent with
the official openai client, and what every request cost. No keys, no Redis, no network."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import openai
import uvicorn

from gateway.app import create_app
from gateway.config.catalog import BUILTIN_MODELS, DEFAULT_TIERS
from gateway.config.schema import parse_config
from gateway.config.settings import Settings, resolve_settings
from gateway.demo.apis import API_MODELS, run_apis
from gateway.demo.auto import load_replay, replay_settings, run_auto
from gateway.demo.budget import MASTER_KEY, run_budget
from gateway.demo.caching import run_cached
from gateway.demo.economics import ECONOMICS_MODELS, run_economics
from gateway.demo.routing import ROUTED_MODELS, run_routed
from gateway.fake_upstream import FakeUpstreamThread
from gateway.money.price_table import load_price_table

__all__ = ["run_demo"]

BANNER = "SIMULATED PROVIDERS: no real model is called; replies and token usage are scripted by a local fake"

# (name, provider): list prices come from litellm's bundled table, exactly as in production.
MODELS = (("gpt-4o-mini", "openai"), ("gpt-4o", "openai"), ("claude-haiku-4-5", "anthropic"),
          ("claude-sonnet-4-5", "anthropic"))


@dataclass(frozen=True)
class Step:
    label: str
    model: str
    stream: bool
    usage: dict[str, Any]


def _openai_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning}}


def _anthropic_usage(inp: int, out: int, read: int = 0, write: int = 0) -> dict[str, Any]:
    return {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": read,
            "cache_creation_input_tokens": write}


WORKLOAD = (
    Step("FAQ answer", "gpt-4o-mini", False, _openai_usage(2_000, 180)),
    Step("FAQ answer, same system prompt (provider cache)", "gpt-4o-mini", False, _openai_usage(2_050, 160, 1_792)),
    Step("Streamed summary", "gpt-4o-mini", True, _openai_usage(3_500, 400)),
    Step("Hard question", "gpt-4o", False, _openai_usage(2_400, 650)),
    Step("Long document, streamed", "gpt-4o", True, _openai_usage(12_000, 900, 8_192)),
    Step("Agent step, cache write", "claude-sonnet-4-5", False, _anthropic_usage(300, 420, write=4_200)),
    Step("Agent step, cache read", "claude-sonnet-4-5", True, _anthropic_usage(350, 380, read=4_200)),
    Step("Classifier", "claude-haiku-4-5", False, _anthropic_usage(900, 12)),
)


def _start(app: Any, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _send(client: openai.OpenAI, step: Step) -> tuple[dict[str, Any], str]:
    messages: Any = [{"role": "system", "content": "You are a helpful support bot."},
                     {"role": "user", "content": step.label}]
    if not step.stream:
        raw = client.chat.completions.with_raw_response.create(model=step.model, messages=messages)
        completion = raw.parse()
        assert completion.usage is not None
        return completion.usage.model_dump(), raw.headers["x-gateway-cost-usd"]
    chunks = list(client.chat.completions.create(
        model=step.model, messages=messages, stream=True, stream_options={"include_usage": True}))
    final = chunks[-1].usage
    assert final is not None
    usage = final.model_dump()
    return usage, f"{Decimal(str(usage['cost'])).normalize():f}"


def _run_workload(client: openai.OpenAI, fake: FakeUpstreamThread) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    header = ("#", "request", "model", "mode", "in", "cached", "out", "cost USD")
    print("{:>2}  {:48} {:18} {:6} {:>6} {:>6} {:>5} {:>12}".format(*header))
    for i, step in enumerate(WORKLOAD, 1):
        fake.script(step.model, {"output_tokens": 12, "usage": step.usage})
        usage, cost = _send(client, step)
        totals[step.model] = totals.get(step.model, Decimal(0)) + Decimal(cost)
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        mode = "stream" if step.stream else "json"
        print(f"{i:>2}  {step.label:48} {step.model:18} {mode:6} {usage['prompt_tokens']:>6} {cached:>6} "
              f"{usage['completion_tokens']:>5} {cost:>12}")
    return totals


def _print_totals(settings: Settings, totals: dict[str, Decimal], port: int) -> None:
    print("\nCost per model (list prices from litellm's table, exact to the pico-dollar):")
    for name, total in totals.items():
        price = settings.models[name].price.base
        per_m = [f"{Decimal(p).scaleb(-6).normalize():f}" for p in (price.input, price.output)]
        print(f"  {name:18} ${total:<12} (input ${per_m[0]}/M, output ${per_m[1]}/M)")
    print(f"  {'total':18} ${sum(totals.values(), Decimal(0))}")
    spent = _scraped(port, "gateway_spend_usd_total")
    print(f"\nPrometheus agrees: sum of gateway_spend_usd_total on /metrics = ${spent:.7f}")


def _settings(fake: FakeUpstreamThread) -> Settings:
    """Real list prices, catalog quality scores and default tiers; upstreams are the local fake."""
    quality = {name: q for _, name, (q, _) in BUILTIN_MODELS}
    models = [{"name": name, "provider": provider, "api_key": "simulated-key", "quality": quality.get(name),
               "api_base": fake.url + ("" if provider == "anthropic" else "/v1")}
              for name, provider in MODELS + ROUTED_MODELS + API_MODELS + ECONOMICS_MODELS]
    tiers = {t: {"min_quality": q} for t, q in DEFAULT_TIERS.items()}
    config = {"models": models, "tiers": tiers, "master_key": MASTER_KEY, "storage": {"backend": "memory"}}
    return resolve_settings(parse_config(config, "demo"), load_price_table(), "demo")


def _scraped(port: int, name: str, labels: str = "") -> float:
    """The sum of `name`'s samples whose label text contains `labels` (e.g. 'cache="prefix"')."""
    import httpx

    total = 0.0
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.partition("{")[0] == name and labels in sample:
            total += float(value)
    return total


def _replay(fake: FakeUpstreamThread) -> None:
    """The auto tier beside static tiers on a replayed slice, through a gateway of its own."""
    data = load_replay()
    port = _free_port()
    server, thread = _start(create_app(replay_settings(fake, data)), port)
    try:
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="demo", max_retries=0) as client:
            run_auto(client, fake, data)
    finally:
        server.should_exit = True
        thread.join(5)


def run_demo() -> int:
    print(f"\n*** {BANNER} ***\n")
    with FakeUpstreamThread() as fake:
        settings = _settings(fake)
        port = _free_port()
        server, thread = _start(create_app(settings), port)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="demo", max_retries=0)
            _print_totals(settings, _run_workload(client, fake), port)
            run_routed(client, fake, settings, lambda: f"{_scraped(port, 'gateway_routing_saved_usd_total'):.7f}")
            run_cached(client, fake, lambda name, labels: _scraped(port, name, labels))
            run_budget(f"http://127.0.0.1:{port}", fake)
            run_apis(f"http://127.0.0.1:{port}", client, fake)
            run_economics(f"http://127.0.0.1:{port}", client, fake, settings, MASTER_KEY)
        finally:
            server.should_exit = True
            thread.join(5)
        _replay(fake)
    print(f"\n*** {BANNER} ***")
    return 0
