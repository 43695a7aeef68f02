"""Token counting: offline encodings, OpenAI's chat billing overheads, tools."""

from __future__ import annotations

import os
import subprocess
import sys

from gateway.tokens.counter import TokenCounter, encoding_name_for


def test_encoding_per_family() -> None:
    assert encoding_name_for("gpt-4o-mini") == "o200k_base"
    assert encoding_name_for("openai/gpt-5") == "o200k_base"
    assert encoding_name_for("o3-mini") == "o200k_base"
    assert encoding_name_for("gpt-4-turbo") == "cl100k_base"
    assert encoding_name_for("gpt-3.5-turbo") == "cl100k_base"


def test_chat_overheads() -> None:
    counter = TokenCounter()
    hi = [{"role": "user", "content": "hi"}]
    assert counter.count_messages(hi, "gpt-4o") == 8  # 3 + "user" + "hi" + 3
    named = [{"role": "user", "content": "hi", "name": "bob"}]
    assert counter.count_messages(named, "gpt-4o") == 10  # + "bob" + 1 for the name
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                           {"type": "image_url", "image_url": {"url": "x", "detail": "low"}}]}]
    assert counter.count_messages(parts, "gpt-4o") == 8 + 85


def test_tool_definitions_are_counted() -> None:
    counter = TokenCounter()
    hi = [{"role": "user", "content": "hi"}]
    tool = {"type": "function", "function": {
        "name": "get_weather", "description": "Get the weather.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["c", "f"]},
        }},
    }}
    with_tools = counter.count_messages(hi, "gpt-4o", tools=[tool])
    enc = counter.encoding("o200k_base")
    n = lambda s: len(enc.encode(s))  # noqa: E731
    expected = (8 + 7 + n("get_weather:Get the weather") + 3 + 3 + n("city:string:City name")
                + 3 - 3 + 3 + n("c") + 3 + n("f") + n("unit:string:") + 12)
    assert with_tools == expected


def test_encodings_load_without_network() -> None:
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from gateway.tokens.counter import TokenCounter\n"
        "c = TokenCounter(); c.warm_up(['gpt-4o', 'gpt-4'])\n"
        "print(c.count_text('hello world', 'gpt-4o'), c.count_text('hello world', 'gpt-4'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2"]


def test_count_memo_gives_the_same_figures_and_stays_bounded() -> None:
    counter = TokenCounter(memo_chars=800)
    texts = [f"message number {i} " * 5 for i in range(40)]  # ~100 chars each: the memo must evict
    first = [counter.count_messages([{"role": "user", "content": t}], "gpt-4o") for t in texts]
    again = [counter.count_messages([{"role": "user", "content": t}], "gpt-4o") for t in texts]
    assert first == again
    memo = counter._memos["o200k_base"]
    assert 0 < memo._chars <= 800 and len(memo.items) < len(texts)
    fresh = TokenCounter(memo_chars=0)  # nothing memoised: the same figures
    assert [fresh.count_messages([{"role": "user", "content": t}], "gpt-4o") for t in texts] == first
