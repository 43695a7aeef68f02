"""The openai Node SDK (tests/node, installed by `.ci/run` with npm) against a real `gateway
serve`: chat, a streamed Responses call (translated: the model is not OpenAI's own), embeddings,
each with its exact cost."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Gateway, model, standard_config

from gateway.fake_upstream import FakeUpstreamThread

NODE = Path(__file__).parent / "node"


@pytest.fixture
def node_gateway(upstream: FakeUpstreamThread) -> Iterator[Gateway]:
    config = standard_config(upstream)
    config["models"] += [
        model("compat-test", "openai_compatible", upstream, upstream_model="compat-up",
              pricing={"input_per_mtok": 2.5, "output_per_mtok": 10}),
        model("embed-test", "openai", upstream, upstream_model="text-embedding-3-small"),
    ]
    gw = Gateway(config)
    yield gw
    gw.stop()


def test_the_openai_node_sdk_gets_exact_costs(node_gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    node = shutil.which("node")
    assert node is not None and (NODE / "node_modules" / "openai").is_dir(), \
        "needs node and `npm install --prefix tests/node` (.ci/run does both)"
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
    upstream.script("gpt-4o-test", {"reply": "Hello!", "usage": usage})
    upstream.script("compat-up", {"reply": "Hello there", "usage": usage})
    upstream.script("text-embedding-3-small", {"usage": {"prompt_tokens": 500, "total_tokens": 500}})
    done = subprocess.run([node, str(NODE / "client.mjs"), f"{node_gateway.url}/v1", "client-key", "gpt-test",
                           "compat-test", "embed-test"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["chat"] == {"text": "Hello!", "cost": 0.0035}  # 1,000 x $2.5/M + 100 x $10/M
    assert found["responses"] == {"text": "Hello there", "final": "Hello there", "cost": 0.0035}
    assert found["embeddings"] == {"count": 2, "dims": 8, "cost": 0.00001}  # 500 x $0.02/M
