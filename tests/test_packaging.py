"""The newcomer's path: the README's two commands, CI, the demo and the image definition."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^```(?:bash|sh)\n(.+?)\n```", readme, flags=re.M | re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert any("gateway demo" in c for c in commands)


def test_demo_runs_without_keys_or_redis() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "gateway", "demo"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("SIMULATED PROVIDERS") == 2
    total = re.search(r"^\s+total\s+\$(\S+)", out.stdout, flags=re.M)
    scraped = re.search(r"gateway_spend_usd_total on /metrics = \$(\S+)", out.stdout)
    assert total and scraped and total.group(1) == "0.0746221" == scraped.group(1)
    assert "0.02295" in out.stdout  # Sonnet: 300 in + 4,200 cache-write + 420 out at list price
    # routed half: deepseek-chat (the cheapest standard model) summarises 9,008 in / 300 out tokens
    assert re.search(r"Summarise a long report\s+standard\s+deepseek-chat\s+0.00264824", out.stdout)
    assert "saved $0.09358994." in out.stdout
    assert "gateway_routing_saved_usd_total = $0.0935899" in out.stdout
    assert "second  x-gateway-cache: hit   cost $0" in out.stdout and "upstream called 1 time(s)" in out.stdout
    # 1,282 cached tokens of claude-sonnet-4-5: written at $3.75/M (premium $0.75/M), read at $0.30/M
    assert "And a saw bought last week?            breakpoint added" in out.stdout
    assert "write premium paid $0.0009615, read savings $0.0034614, net $0.0024999" in out.stdout
    # 3,000 x $0.15/M + 400 x $0.60/M = $0.00069 a request; the third's worst case no longer fits in $0.002
    # 3,000 x $0.15/M + 150 x $0.60/M a request; the third is capped to what $0.00062 pays after its input
    assert out.stdout.count(": 200, cost $0.00054") == 3 and "request 4: 429 budget_exceeded" in out.stdout
    assert "request 3: 200, cost $0.00054 (max_tokens lowered to 207: what the budget can still pay)" in out.stdout
    assert "spent $0.001620 of $0.0017" in out.stdout and "upstream called 3 times" in out.stdout
    _check_client_apis(out.stdout)
    _check_economics(out.stdout)
    _check_auto_replay(out.stdout)


def _check_economics(stdout: str) -> None:
    """gpt-5-mini at flex ($0.125/M input, $0.0125/M cached, $1/M output: half its default price),
    three batch lines of gpt-4o-mini at batch rates ($0.075/M, $0.0375/M cached, $0.30/M), and the
    forecast of a team that spent 3 x (20,000 x $0.15/M + 2,000 x $0.60/M) within the hour."""
    assert "x-gateway-defer: flex -> gpt-5-mini called with service_tier='flex', the answer reports 'flex'" in stdout
    assert ("6,000 in (2,048 cached), 1,500 out: $0.0020196 at flex, $0.0040392 at the default tier; "
            "cost_details.service_tier = 'flex'") in stdout
    assert "ticket-1:  1200 in,  300 out: usage.cost $0.00018 (batch rates)" in stdout
    assert "ticket-2:  2400 in,  500 out: usage.cost $0.0002916 (batch rates)" in stdout  # 1,024 cached
    assert "ticket-3:   800 in,  120 out: usage.cost $0.000096 (batch rates)" in stdout
    assert "batch total $0.0005676, $0.0011352 at the default tier" in stdout
    assert "GET /admin/forecast?team=research: budget $0.05 daily, spent $0.0126" in stdout
    assert re.search(r"burn rate \$0\.012600/h over the last hour; projected \$0\.\d{6} by \S+T00:00:00\+00:00; "
                     r"runs out ", stdout)


def _check_client_apis(stdout: str) -> None:
    """Responses, Messages (to an OpenAI model, translated) and embeddings, at gpt-4o-mini's list
    prices ($0.15/M input, $0.075/M cached input, $0.60/M output) and text-embedding-3-small's ($0.02/M)."""
    assert "POST /v1/responses   (openai SDK, responses.create, gpt-4o-mini, native): 'Paris.'" in stdout
    # 176 x $0.15/M + 1,024 x $0.075/M + 300 x $0.60/M
    assert ("input_tokens 1200 (cached 1024), output_tokens 300; "
            "cost $0.0002832 (x-gateway-cost-usd), usage.cost 0.0002832") in stdout
    assert "POST /v1/messages    (anthropic SDK, messages.create, gpt-4o-mini, translated): 'Bonjour !'" in stdout
    # OpenAI's 2,000 prompt tokens (1,536 cached) in Anthropic's convention: 464 x $0.15/M + 1,536 x $0.075/M
    # + 120 x $0.60/M
    assert ("input_tokens 464, cache_read_input_tokens 1536, output_tokens 120; "
            "cost $0.0002568 (x-gateway-cost-usd), usage.cost 0.0002568") in stdout
    assert "POST /v1/embeddings  (openai SDK, embeddings.create, text-embedding-3-small): 2 vectors" in stdout
    assert "prompt_tokens 2000; cost $0.00004 (x-gateway-cost-usd), usage.cost 0.00004" in stdout  # x $0.02/M


def _check_auto_replay(stdout: str) -> None:
    """The auto tier beside static tiers on the replayed slice: static tiers and the reference cost
    exactly what the slice's token counts cost at their prices, with the slice's own quality."""
    from decimal import Decimal

    from gateway.demo.auto import REPLAY
    from gateway.money.price_table import load_price_table
    from gateway.routing.auto.data import load_outcomes

    data = load_outcomes(REPLAY, load_price_table())
    costs, right = data.costs(), data.correct
    ref = data.models.index("gpt-4o-2024-05-13")
    for asked, model in (("economy", "gemini-1.5-flash-002"), ("standard", "gemini-1.5-pro-002"),
                         ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13")):
        j = data.models.index(model)
        usd = Decimal(int(costs[:, j].sum())).scaleb(-12).normalize()
        quality = 100 * right[:, j].sum() / right[:, ref].sum()
        assert re.search(rf"^  {re.escape(asked)}\s+{quality:.1f} %\s+{usd:f}\s", stdout, flags=re.M), (asked, stdout)
    auto = re.search(r"^  auto\s+(\S+) %\s+(\S+)\s+(\S+) %", stdout, flags=re.M)
    assert auto is not None
    assert 80 <= float(auto.group(1)) <= 100 and float(auto.group(3)) >= 50  # near the floor, for much less


def test_dockerfile_is_slim_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert re.search(r"^USER (?!root)\w+", text, flags=re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'ENTRYPOINT ["gateway", "serve"' in text
    assert 'pip install --no-cache-dir ".[postgres]"' in text  # deploy/ sets database_url: asyncpg is needed


def test_lint_is_clean() -> None:
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "."], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout
