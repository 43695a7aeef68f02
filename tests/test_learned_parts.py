"""The learned router's parts as plain functions: features, the floor controller, the curves
`gateway router eval` reads its figures from, and the router file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gateway.config.schema import QUALITY_CATEGORIES
from gateway.routing.auto.curves import cheapest_mix, cheapest_single, oracle_cost
from routing_policies.learned.controller import FloorController
from routing_policies.learned.features import CATEGORIES, prompt_keys
from routing_policies.learned.model import SHIPPED, RouterModel
from routing_policies.learned.policy import LearnedPolicy


def test_features_are_the_ids_and_their_exact_neighbour_pairs() -> None:
    keys = prompt_keys([5, 7, 5, 7])
    assert keys.tolist() == sorted({5, 7, (6 << 18) | 7, (8 << 18) | 5})
    assert prompt_keys([]).tolist() == [] and prompt_keys([3]).tolist() == [3]
    assert set(CATEGORIES) == set(QUALITY_CATEGORIES)  # the gateway's categories, in the router's order


def test_the_controller_decides_alone_until_it_has_seen_enough() -> None:
    controller = FloorController(0.95, warm_up=4)
    p, k = np.array([0.90, 0.80, 0.50]), np.array([100.0, 10.0, 1.0])
    assert controller.choose(p, k, 0) == 0  # 0.80 < 0.95 x 0.90: nothing cheaper is good enough
    assert controller.choose(np.array([0.90, 0.86, 0.5]), k, 0) == 1  # 0.86 >= 0.855
    assert controller.choose(p, k, 0, sure=False) == 0
    assert controller.rate is None


def test_the_controller_holds_the_expected_quality_at_its_target() -> None:
    rng = np.random.default_rng(1)
    controller = FloorController(0.95)
    chosen, reference = 0.0, 0.0
    for i in range(3000):
        p = np.array([rng.uniform(0.6, 0.95), rng.uniform(0.3, 0.9)])
        k = np.array([rng.uniform(500, 5000), rng.uniform(10, 100)])
        pick = controller.choose(p, k, 0)
        controller.record(p, k, 0)
        if i >= 1000:  # after the window has filled
            chosen += p[pick]
            reference += p[0]
    assert 0.945 <= chosen / reference <= 0.96
    assert controller.rate is not None


def test_curves() -> None:
    points = [(100.0, 80.0), (10.0, 60.0), (50.0, 75.0)]
    assert cheapest_single(points, 76) == 100.0
    assert cheapest_single(points, 81) is None
    assert cheapest_mix(points, 77) == pytest.approx(50 + 50 * 2 / 5)  # between (50, 75) and (100, 80)
    costs = np.array([[10.0, 1.0], [10.0, 1.0], [10.0, 1.0]])
    correct = np.array([[1, 1], [1, 0], [0, 0]])
    assert oracle_cost(costs, correct, 1) == 3.0  # the cheap model's one right answer
    assert oracle_cost(costs, correct, 2) == 12.0  # + 9 for the second
    assert oracle_cost(costs, correct, 1.5) == pytest.approx(7.5)
    assert oracle_cost(costs, correct, 3) is None  # nobody answers the third


def test_the_shipped_router_file_loads_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    model = RouterModel.load(SHIPPED)
    assert {"gpt-4o-2024-05-13", "mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview"} <= set(model.heads)
    assert [f for f, _ in model.margins] == sorted(f for f, _ in model.margins)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a router")
    with pytest.raises(ValueError, match="cannot read router file"):
        RouterModel.load(bad)
    copy = tmp_path / "copy.npz"
    model.save(copy)
    again = RouterModel.load(copy)
    scores, coverage = model.scores("Hello, world", [9906, 11, 1495], 12, "overall")
    assert np.allclose(again.scores("Hello, world", [9906, 11, 1495], 12, "overall")[0], scores)
    assert 0 <= coverage <= 1


def test_the_margin_follows_the_number_of_candidates_and_survives_the_file(tmp_path: Path) -> None:
    model = RouterModel.load(SHIPPED)
    pair, many = ((0.9, -0.01), (1.0, 0.0)), ((0.9, 0.02), (1.0, 0.03))
    tables = replace(model, margins=((0.9, 0.005), (1.0, 0.005)), margins_by_count={2: pair, 8: many})
    assert tables.margin(0.9, 2) == pytest.approx(-0.01) and tables.margin(0.95, 8) == pytest.approx(0.025)
    assert tables.margin(0.9, 4) == pytest.approx(0.005)  # halfway between 2 and 8 on a log scale
    assert tables.margin(0.9, 12) == pytest.approx(0.02) and tables.margin(0.9, 1) == pytest.approx(-0.01)
    assert tables.margin(0.9) == pytest.approx(0.005)  # no count: the pooled table
    assert replace(model, margins=pair, margins_by_count={}).margin(0.9, 8) == pytest.approx(-0.01)
    tables.save(tmp_path / "tables.npz")
    assert RouterModel.load(tmp_path / "tables.npz").margins_by_count == {2: pair, 8: many}
    policy = LearnedPolicy(tables, 0.9)
    assert policy.target(2) == pytest.approx(0.89) and policy.target(8) == pytest.approx(0.92)
