"""The learned `auto` tier end to end: `gateway router train` on a small synthetic outcome file
(one model is right only about bananas), a tier using that router file, requests through the
openai client to an in-process gateway and the fake upstream, `gateway router eval` on the same
file, and bad input on each of these paths."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, InProcess, model

from gateway.config.schema import ConfigError, parse_config
from gateway.config.settings import resolve_settings
from gateway.fake_upstream import FakeUpstreamThread
from routing_policies.learned.model import RouterModel

BIG, SMALL = "gpt-4o-2024-05-13", "gemini-1.5-flash-002"  # names the router has heads of (trained below)
FRUIT = ("banana", "apple", "mango", "plum")
PHYSICS = ("quantum", "boson", "entropy", "photon")


def prompt(kind: str, i: int) -> str:
    words = FRUIT if kind == "fruit" else PHYSICS
    return f"Tell me about the {words[(i // 2) % 4]}, {i}."


def write_outcomes(path: Path, rows: int = 240) -> None:
    """Half fruit (both models right), half physics (only the big model right)."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["question_id", "prompt", "in_tok", f"c_{BIG}", f"out_{BIG}", f"c_{SMALL}", f"out_{SMALL}"])
        for i in range(rows):
            fruit = i % 2 == 0
            out.writerow([i, prompt("fruit" if fruit else "physics", i), 20, 1, 200, 1 if fruit else 0, 150])


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


@pytest.fixture(scope="module")
def router_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("router")
    write_outcomes(folder / "outcomes.csv")
    done = gateway_cli("router", "train", "--data", str(folder / "outcomes.csv"), "--folds", "2",
                       "--reg-head", "0.1", "--reg-generic", "0.1", "--out", str(folder / "router.npz"))
    assert done.returncode == 0, done.stderr
    assert "figures on held-out folds" in done.stdout
    return folder / "router.npz"


def auto_config(upstream: FakeUpstreamThread, router: Path, floor: float = 0.95) -> dict[str, Any]:
    return {"models": [model(BIG, "openai", upstream, upstream_model="auto-big", quality=60,
                             pricing={"input_per_mtok": 5, "output_per_mtok": 15}),
                       model(SMALL, "openai", upstream, upstream_model="auto-small", quality=57,
                             pricing={"input_per_mtok": 0.075, "output_per_mtok": 0.30})],
            "tiers": {"auto": {"policy": "learned", "quality_floor": floor, "baseline_model": BIG,
                               "router_model": str(router)}},
            "cache": {"response": {"enabled": False}}}


async def ask(gw: InProcess, text: str) -> Any:
    return await gw.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}])


@pytest.mark.anyio
async def test_the_choice_follows_the_prompt_and_the_estimate_is_what_the_request_does(
        in_process: Any, upstream: FakeUpstreamThread, router_file: Path) -> None:
    async with in_process(auto_config(upstream, router_file)) as gw:
        for i in range(200, 210):
            for kind, expected in (("fruit", SMALL), ("physics", BIG)):
                text = prompt(kind, i)
                plan = (await gw.client.post("/v1/estimate", json={
                    "model": "auto", "messages": [{"role": "user", "content": text}]})).json()
                answer = await ask(gw, text)
                assert plan["model"] == answer.headers["x-gateway-model"] == expected
                assert answer.headers["x-gateway-tier"] == "auto"
                route = answer.headers["x-gateway-route"]
                assert route.startswith("learned; 2 candidates, 0 excluded; est $")
                assert f"for {BIG}, floor 0.95" in route
        policy = gw.state.settings.tiers["auto"].policy
        assert policy.controller._size == 20  # the requests, not the estimates, joined its window


@pytest.mark.anyio
async def test_the_floor_holds_on_a_scripted_set_for_less_money(
        in_process: Any, upstream: FakeUpstreamThread, router_file: Path) -> None:
    """120 requests, a third physics: the small model is right on fruit only, so the reference
    (the big model) would have been right 120 times. The tier keeps 95 % of that for a fraction
    of the big model's cost."""
    async with in_process(auto_config(upstream, router_file)) as gw:
        right, spent, every_big = 0, 0.0, 0.0
        for i in range(300, 420):
            kind = "physics" if i % 3 == 0 else "fruit"
            answer = await ask(gw, prompt(kind, i))
            right += 1 if kind == "fruit" or answer.headers["x-gateway-model"] == BIG else 0
            spent += float(answer.headers["x-gateway-cost-usd"])
            usage = answer.parse().usage
            every_big += (usage.prompt_tokens * 5 + usage.completion_tokens * 15) / 1e6
        assert right >= 0.93 * 120  # the floor (0.95), within the window's noise
        assert spent < 0.5 * every_big


def test_eval_prints_the_figures_of_the_router_as_given(tmp_path: Path, router_file: Path) -> None:
    data = tmp_path / "outcomes.csv"
    write_outcomes(data, rows=100)
    done = gateway_cli("router", "eval", "--data", str(data), "--router", str(router_file), "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)["datasets"][0]
    assert (found["file"], found["n"], found["reference"]) == (str(data), 100, BIG)
    big, small = 20 * 5 + 200 * 15, 20 * 0.075 + 150 * 0.30  # one answer's cost, in micro-USD
    # the oracle: 95 of the big model's 100 right answers = the 50 fruit (small) + 45 physics (big), and the
    # 5 other physics questions to the cheapest model
    assert found["oracle"]["0.95"] == pytest.approx((55 * small + 45 * big) / (100 * big), abs=1e-12)
    assert found["static"] == {"0.90": 1.0, "0.95": 1.0, "0.99": 1.0}  # the small model alone reaches 50 %
    assert found["learned"]["0.95"] < 0.6 and found["floor_reached"] >= 0.94
    assert set(found["intervals"]) == {"learned", "static", "random", "oracle"}
    table = gateway_cli("router", "eval", "--data", str(data), "--router", str(router_file))
    assert "learned" in table.stdout and "quality floor 0.95: reached" in table.stdout
    assert found["in_training"] is False and "held_out" not in found


def test_eval_of_a_training_file_says_so_and_shows_its_held_out_figures(router_file: Path) -> None:
    """Replaying the file the router learned from is in-sample: the eval says so, beside the
    figures training measured on held-out folds (stored in the router file)."""
    trained = router_file.with_name("outcomes.csv")
    done = gateway_cli("router", "eval", "--data", str(trained), "--router", str(router_file), "--json")
    found = json.loads(done.stdout)["datasets"][0]
    stored = RouterModel.load(router_file).meta["held_out"][0]
    assert found["in_training"] is True and found["held_out"] == stored and stored["file"] == "outcomes.csv"
    table = gateway_cli("router", "eval", "--data", str(trained), "--router", str(router_file))
    assert "(in-sample: the router was trained on this file" in table.stdout


def test_bad_input_to_the_router_commands_is_a_clear_error(tmp_path: Path, router_file: Path) -> None:
    missing = gateway_cli("router", "eval", "--data", str(tmp_path / "nope.csv"), "--router", str(router_file))
    assert missing.returncode == 2 and "No such file" in missing.stderr
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    shape = gateway_cli("router", "eval", "--data", str(wrong), "--router", str(router_file))
    assert shape.returncode == 2 and "not a routing outcome file" in shape.stderr
    unpriced = tmp_path / "unpriced.csv"
    unpriced.write_text("prompt,in_tok,c_mystery-1,out_mystery-1,c_mystery-2,out_mystery-2\nhi,3,1,4,0,5\n")
    price = gateway_cli("router", "eval", "--data", str(unpriced), "--router", str(router_file))
    assert price.returncode == 2 and "no price for model 'mystery-1'" in price.stderr
    not_router = gateway_cli("router", "eval", "--data", str(unpriced), "--router", str(wrong))
    assert not_router.returncode == 2 and "cannot read router file" in not_router.stderr


def test_tier_settings_for_the_learned_policy_are_checked_at_start_up(price_table: Any, tmp_path: Path) -> None:
    models = [{"name": "m", "provider": "openai", "api_key": "k", "quality": 50,
               "pricing": {"input_per_mtok": 1, "output_per_mtok": 1}}]
    config = {"models": models, "tiers": {
        "a": {"policy": "cheapest", "quality_floor": 0.9},
        "c": {"policy": "learned", "router_model": str(tmp_path / "missing.npz")}}}
    with pytest.raises(ConfigError) as problems:
        resolve_settings(parse_config(config), price_table)
    text = str(problems.value)
    assert "tiers.a.policy: policy 'cheapest' takes no quality_floor or router_model" in text
    assert "tiers.c.policy: cannot read router file" in text
    with pytest.raises(ConfigError, match=r"tiers.b.quality_floor: must be <= 1.2"):
        parse_config({"models": models, "tiers": {"b": {"policy": "learned", "quality_floor": 1.5}}})
