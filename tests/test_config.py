"""Config validation: every problem reported with its path; the server refuses to start on one."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from gateway.app import load_settings
from gateway.cache.prefix_cache import FixedTenant
from gateway.config.catalog import BUILTIN_MODELS
from gateway.config.schema import ConfigError, parse_config
from gateway.config.settings import resolve_settings
from gateway.money.price_table import load_price_table

VALID: dict[str, Any] = {
    "models": [
        {"name": "a", "provider": "openai", "api_key": "sk-a", "pricing": {"input_per_mtok": 1, "output_per_mtok": 2}},
        {"name": "gpt-4o-mini", "provider": "openai", "api_key": "sk-b"},
    ],
    "tiers": {"economy": {"min_quality": 60}},
}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        resolve_settings(parse_config(data), load_price_table())
    return info.value.problems


def mutate(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    target: Any = data
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return data


def test_valid_config_resolves_prices_from_table_and_overrides() -> None:
    settings = resolve_settings(parse_config(VALID), load_price_table())
    assert settings.models["a"].price.base.input == 1_000_000  # pico-USD per token = $1/M
    assert settings.models["gpt-4o-mini"].price.base.input == 150_000  # litellm: $0.15/M
    assert settings.models["gpt-4o-mini"].price.base.cached_input == 75_000
    assert settings.models["gpt-4o-mini"].max_input_tokens == 128000
    assert "tools" in settings.models["gpt-4o-mini"].capabilities


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("models.0.pricing.input_per_mtok", -1, "models[0].pricing.input_per_mtok: must be >= 0"),
        ("models.1.timeout_s", 0, "models[1].timeout_s: must be > 0"),
        ("models.0.quality", 101, "models[0].quality: must be <= 100"),
        ("models.0.colour", "red", "models[0].colour: unknown field"),
        ("models.0.capabilities", ["telepathy"],
         "models[0].capabilities[0]: must be one of 'tools', 'vision' or 'json_schema'"),
        ("max_body_bytes", 0, "max_body_bytes: must be > 0"),
        ("tiers.economy.min_quality", -5, "tiers.economy.min_quality: must be >= 0"),
    ],
)
def test_shape_errors_name_their_path(path: str, value: Any, expected: str) -> None:
    assert problems(mutate(path, value)) == [expected]


def test_every_problem_is_listed_at_once() -> None:
    data = mutate("models.0.pricing.input_per_mtok", -1)
    data["models"][1]["timeout_s"] = -2
    del data["models"][0]["provider"]
    assert problems(data) == [
        "models[0].provider: is required",
        "models[0].pricing.input_per_mtok: must be >= 0",
        "models[1].timeout_s: must be > 0",
    ]


def test_unpriced_model_is_a_config_error_never_zero() -> None:
    data = mutate("models.1.name", "my-private-model")
    assert problems(data) == [
        "models[1].pricing: no price for 'my-private-model' (provider 'openai'): it is not in litellm's price "
        "table; set pricing.input_per_mtok and pricing.output_per_mtok"
    ]


def test_cross_reference_errors() -> None:
    data = copy.deepcopy(VALID)
    data["models"].append(copy.deepcopy(data["models"][0]))
    data["tiers"]["a"] = {"min_quality": 1}
    assert problems(data) == [
        "models[2].name: duplicate model name 'a' (first at models[0])",
        "tiers.a: name clashes with model 'a'",
    ]


def test_env_substitution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_KEY", "sk-from-env")
    monkeypatch.delenv("GW_TEST_MISSING", raising=False)
    data = mutate("models.0.api_key", "${GW_TEST_KEY}")
    data["models"][1]["api_key"] = "${GW_TEST_MISSING}"
    data["models"][1]["api_base"] = "http://${GW_TEST_HOST:-localhost}:8000/v1"
    settings = resolve_settings(parse_config(data), load_price_table())
    assert settings.models["a"].api_key == "sk-from-env"
    assert settings.models["gpt-4o-mini"].api_key is None
    assert settings.models["gpt-4o-mini"].api_base == "http://localhost:8000/v1"
    data["models"][0]["api_base"] = "http://${GW_TEST_MISSING}/v1"
    assert problems(data) == ["models[0].api_base: environment variable GW_TEST_MISSING is not set"]


def test_missing_key_makes_a_model_unavailable_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    settings = load_settings(None)
    assert len(settings.models) == len(BUILTIN_MODELS)
    assert settings.models["gpt-4.1"].unavailable_reason == "no API key: set OPENAI_API_KEY or models[].api_key"
    assert settings.models["claude-sonnet-4-5"].available
    assert settings.models["claude-sonnet-4-5"].price.base.cache_write_1h == 6_000_000


def test_server_refuses_to_start_on_a_bad_config(tmp_path: Path) -> None:
    bad = mutate("models.0.pricing.input_per_mtok", -1)
    bad["models"][1]["timeout_s"] = 0
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp_path / "bad.yaml"), "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "models[0].pricing.input_per_mtok: must be >= 0" in result.stderr
    assert "models[1].timeout_s: must be > 0" in result.stderr


def test_builtin_catalog_has_sourced_quality_and_default_tiers(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from gateway.pipeline.request import parse_chat_request
    from gateway.routing.router import Router
    from gateway.tokens.counter import TokenCounter

    for var in ("OPENAI_API_KEY", "DEEPSEEK_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.setenv(var, "sk-test")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    settings = load_settings(None)
    assert {t: s.min_quality for t, s in settings.tiers.items()} == {"economy": 60, "standard": 75, "premium": 84,
                                                                     "auto": 60}
    assert settings.tiers["auto"].policy.name == "learned"
    assert all(m.quality is not None and m.quality_source for m in settings.models.values())
    assert settings.models["o3"].quality == 82.2
    assert "'o3-2025-04-16' 1410.8" in (settings.models["o3"].quality_source or "")
    assert settings.models["claude-sonnet-4-5"].quality == 85.3
    for tier in settings.tiers.values():  # candidates from several providers in every tier
        assert len({m.provider for m in settings.models.values() if (m.quality or 0) >= tier.min_quality}) >= 3
    tokens = TokenCounter()
    router = Router.offline(settings, tokens)
    request = parse_chat_request(b'{"model": "premium", "messages": [{"role": "user", "content": "hi"}]}')
    tier = settings.tiers["premium"]
    counts = {enc: tokens.count_messages_in(request.messages, enc) for enc in router.encodings(tier)}
    plan = asyncio.run(router.plan(tier, request, counts, FixedTenant("test")))
    assert {c.model for c in plan.ranked} == {"gpt-5.1", "gemini-2.5-pro"}  # (no Anthropic or Mistral key)
    assert plan.baseline is not None and plan.baseline.name == "gemini-2.5-pro"  # highest quality
    standard = settings.tiers["standard"]
    capital = parse_chat_request(b'{"model": "standard", "messages": [{"role": "user", "content": '
                                 b'"What is the capital of France?"}]}')
    counts = {enc: tokens.count_messages_in(capital.messages, enc) for enc in router.encodings(standard)}
    chosen = asyncio.run(router.plan(standard, capital, counts, FixedTenant("test"))).first
    # deepseek-reasoner ties deepseek-chat on list price, but would reason 2,000 tokens first
    assert (chosen.model, chosen.expected_reasoning_tokens) == ("deepseek-chat", 0)


def test_the_builtin_auto_tier_routes_by_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped router on the built-in catalog (OpenAI models only): a factual question goes to
    a cheap model, a word problem with arithmetic to a dearer one; never with a worse prediction
    than the floor allows, and the route says against which reference."""
    import asyncio

    from gateway.pipeline.request import parse_chat_request
    from gateway.routing.router import Router
    from gateway.tokens.counter import TokenCounter

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for var in ("ANTHROPIC_API_KEY", "MISTRAL_API_KEY", "DEEPSEEK_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings(None)
    tokens = TokenCounter()
    router, tier = Router.offline(settings, tokens), settings.tiers["auto"]

    def plan(text: str) -> Any:
        request = parse_chat_request(orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]}))
        counts = {enc: tokens.count_messages_in(request.messages, enc) for enc in router.encodings(tier)}
        return asyncio.run(router.plan(tier, request, counts, FixedTenant("test"), routed=False))

    easy = plan("What is the capital of France?")
    hard = plan("Janet buys 3 boxes of 12 eggs at $2.50 a box, sells 45% of the eggs at $0.35 each and gives "
                "1/3 of the rest away. How much profit does she make?")
    assert easy.first.model == "gpt-4.1-mini" and hard.first.model == "gpt-4.1"
    assert easy.first.model != easy.ranked[-1].model
    assert easy.reason(easy.first.model).endswith("p 0.97 vs 0.97 for gpt-5.1, floor 0.95")
    assert "category math" in hard.reason(hard.first.model)
