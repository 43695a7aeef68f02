"""The pricing core: exact integer money, disjoint buckets, both usage conventions, tiers."""

from __future__ import annotations

import random
from decimal import Decimal

from gateway.money.price_table import load_price_table, price_from_entry
from gateway.money.pricing import (
    Cost,
    FlatRates,
    Price,
    Rates,
    Usage,
    estimate_cost,
    per_mtok_to_pico,
    price_usage,
    usd_text,
)

RATES = Rates(input=3_000_000, cached_input=300_000, cache_write_5m=3_750_000, cache_write_1h=6_000_000,
              output=15_000_000, reasoning=15_000_000)


def test_openai_convention_cached_and_reasoning_are_inside_the_totals() -> None:
    usage = Usage.from_openai({
        "prompt_tokens": 2000, "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1500}, "completion_tokens_details": {"reasoning_tokens": 120},
    })
    assert usage == Usage(input=500, cached_input=1500, output=180, reasoning=120)
    assert usage.to_openai()["prompt_tokens"] == 2000 and usage.to_openai()["completion_tokens"] == 300


def test_anthropic_convention_cache_tokens_are_outside_input() -> None:
    usage = Usage.from_anthropic({
        "input_tokens": 100, "output_tokens": 200, "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 1500,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500},
    })
    assert usage == Usage(input=100, cached_input=2000, cache_write_5m=1000, cache_write_1h=500, output=200)
    client = usage.to_openai()
    assert client["prompt_tokens"] == 3600 and client["prompt_tokens_details"]["cached_tokens"] == 2000
    # no split given: every write is a 5-minute write
    assert Usage.from_anthropic({"input_tokens": 1, "cache_creation_input_tokens": 7}).cache_write_5m == 7


def test_every_token_is_billed_once() -> None:
    usage = Usage(input=100, cached_input=2000, cache_write_5m=1000, cache_write_1h=500, output=150, reasoning=50)
    cost = price_usage(usage, Price(RATES))
    assert cost == Cost(input=300_000_000, cached_input=600_000_000, cache_write=6_750_000_000,
                        output=2_250_000_000, reasoning=750_000_000)
    assert cost.total == 10_650_000_000 and cost.usd == Decimal("0.01065")
    assert cost.header_value() == "0.01065"


def test_money_is_exact_where_floats_drift() -> None:
    price = Price(Rates(*(per_mtok_to_pico(Decimal("0.1")),) * 6))
    one = price_usage(Usage(input=1), price)
    total = sum(price_usage(Usage(input=1), price).total for _ in range(3))
    assert total == 3 * one.total == 300_000  # 0.1 + 0.1 + 0.1 == 0.3, exactly
    assert 0.1 + 0.1 + 0.1 != 0.3  # what floats would have done


def test_long_context_tier_reprices_the_whole_request() -> None:
    high = Rates(2, 2, 2, 2, 20, 20)
    price = Price(Rates(1, 1, 1, 1, 10, 10), tiers=((200_000, high),))
    assert price_usage(Usage(input=200_000, output=1), price).total == 200_010
    assert price_usage(Usage(input=100_000, cached_input=100_001, output=1), price).total == 400_022


def test_litellm_table_floats_become_exact_pico() -> None:
    price = price_from_entry({
        "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-07,
        "input_cost_per_token_above_200k_tokens": 2.5e-06, "output_cost_per_token_above_200k_tokens": 1.5e-05,
    })
    assert price is not None
    assert price.base == Rates(1_250_000, 125_000, 1_250_000, 1_250_000, 10_000_000, 10_000_000)
    assert price.tiers == ((200_000, Rates(2_500_000, 125_000, 1_250_000, 1_250_000, 15_000_000, 15_000_000)),)
    assert price_from_entry({"output_cost_per_token": 1e-05}) is None  # no input price: unpriced


def test_table_knows_anthropic_cache_writes() -> None:
    price = load_price_table().price("anthropic", "claude-sonnet-4-5")
    assert price is not None
    assert (price.base.cache_write_5m, price.base.cache_write_1h, price.base.cached_input) == (
        3_750_000, 6_000_000, 300_000)


def test_estimate_equals_pricing_the_same_usage() -> None:
    price = Price(RATES, tiers=((1000, Rates(9, 9, 9, 9, 99, 99)),))
    for inp, out in [(0, 0), (10, 5), (1000, 7), (1001, 7)]:
        assert estimate_cost(price, inp, out) == price_usage(Usage(input=inp, output=out), price).total


def _full_order(prices: list[Price], n: int, outs: list[int]) -> list[int]:
    costs = [price_usage(Usage(input=n, output=o), p).total for p, o in zip(prices, outs, strict=True)]
    return sorted(range(len(prices)), key=lambda i: (costs[i], i))


def test_flat_rates_rank_by_estimate_and_say_how_far_the_order_holds() -> None:
    rng = random.Random(7)
    assert FlatRates.of([Price(RATES, tiers=((1000, RATES),))]) is None  # long-context tiers: not flat
    for _ in range(300):
        k = rng.randint(1, 8)
        rates = [(rng.choice([0, 50_000, 100_000, 150_000, 3_000_000]), rng.randint(0, 20) * 100_000) for _ in range(k)]
        prices = [Price(Rates(a, 0, 0, 0, b, b)) for a, b in rates]
        outs = [rng.choice([1, 50, 256, 300]) for _ in range(k)]
        limit = rng.choice([None, 1, 2, 3])
        flat = FlatRates.of(prices)
        assert flat is not None
        n = rng.randint(0, 5000)
        top, lo, hi = flat.cheapest(n, outs, limit)
        assert top == _full_order(prices, n, outs)[:limit] and lo <= n <= hi
        assert [flat.estimate(i, n, outs[i]) for i in top] == [estimate_cost(prices[i], n, outs[i]) for i in top]
        for m in {lo, hi, n + 1, max(n - 1, 0), min(hi, 10**7)}:  # the order holds inside the range ...
            assert _full_order(prices, m, outs)[:limit] == top
        if lo > 0:  # ... and not one token beyond it
            assert _full_order(prices, lo - 1, outs)[:limit] != top
        if hi < 10**7:
            assert _full_order(prices, hi + 1, outs)[:limit] != top


def test_usd_text_is_the_exact_decimal() -> None:
    for pico, text in [(0, "0"), (1, "0.000000000001"), (10**12, "1"), (1_234_560_000, "0.00123456"),
                       (-5 * 10**11, "-0.5"), (123 * 10**12 + 7, "123.000000000007")]:
        assert usd_text(pico) == text
