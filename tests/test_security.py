"""The holes a security audit found, each shut, through real sockets: a `gateway serve` process
with a master key and `require_keys`, the fake upstream, the official openai client and raw
sockets where a client library would refuse to send what an attacker sends."""

from __future__ import annotations

import base64
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from conftest import UPSTREAM_KEY, Gateway, model

from gateway.fake_upstream import FakeUpstreamThread

MASTER = "master-sec-key-0123456789"
SCRAPE = "scrape-token-0123456789"
HI: Any = [{"role": "user", "content": "hi"}]
PIN_PROMPT = "Internal memo. " + "The vault procedure has many steps and each one matters. " * 180


def sec_config(upstream: FakeUpstreamThread) -> dict[str, Any]:
    return {
        "models": [
            model("sec-a", "openai", upstream, upstream_model="sec-a-up", quality=80,
                  pricing={"input_per_mtok": 1, "output_per_mtok": 2, "cached_input_per_mtok": 0.1}),
            model("sec-b", "openai", upstream, upstream_model="sec-b-up", quality=90,
                  pricing={"input_per_mtok": 3, "output_per_mtok": 6}, extra_body_fields=["min_p"]),
            model("sec-audio", "openai", upstream, upstream_model="sec-audio-up",
                  pricing={"input_per_mtok": 2.5, "output_per_mtok": 10, "audio_input_per_mtok": 32,
                           "audio_output_per_mtok": 64}),
        ],
        "tiers": {"sec-tier": {"min_quality": 70}},
        "master_key": MASTER, "require_keys": True, "metrics_token": SCRAPE,
        "cache": {"response": {"enabled": False}},
        "limits": {"max_n": 64, "max_prompt_tokens": 400_000},
        "server": {"header_timeout_s": 1, "body_timeout_s": 1, "max_header_bytes": 8192, "max_connections": 40},
    }


@pytest.fixture(scope="module")
def sec(upstream: FakeUpstreamThread) -> Iterator[Gateway]:
    gw = Gateway(sec_config(upstream))
    yield gw
    gw.stop()


def admin(gw: Gateway, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(method, gw.url + path, json=body, headers={"Authorization": f"Bearer {MASTER}"})


def new_key(gw: Gateway, **fields: Any) -> str:
    response = admin(gw, "POST", "/admin/keys", fields)
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def estimate(gw: Gateway, body: dict[str, Any], secret: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.post(f"{gw.url}/v1/estimate", json=body, headers=headers, timeout=30)


# 1. /v1/estimate: authenticated, rate-limited, counted off the event loop, bounded.

def test_estimate_needs_a_key_and_counts_against_its_rpm(sec: Gateway) -> None:
    body = {"model": "sec-tier", "messages": HI}
    anonymous = estimate(sec, body)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
    secret = new_key(sec, rpm=2)
    assert [estimate(sec, body, secret).status_code for _ in range(3)] == [200, 200, 429]


def test_a_prompt_over_the_token_limit_is_refused_before_it_is_counted(sec: Gateway) -> None:
    secret = new_key(sec)
    huge = {"model": "sec-tier", "messages": [{"role": "user", "content": "word " * 450_000}]}  # 2.25 MB
    started = time.monotonic()
    for path in ("/v1/estimate", "/v1/chat/completions"):
        response = httpx.post(sec.url + path, json=huge, headers={"Authorization": f"Bearer {secret}"}, timeout=30)
        assert response.status_code == 413, response.text
        assert response.json()["error"]["message"] == "the prompt is over the limit of 400000 tokens"
    assert time.monotonic() - started < 5


def test_large_estimates_do_not_stall_chat(sec: Gateway) -> None:
    """Two clients sending 1 MB prompts of punctuation to /v1/estimate while chat runs at
    20 requests a second: chat's p99 stays under 50 ms."""
    secret = new_key(sec)
    client = sec.client(api_key=secret)
    client.chat.completions.create(model="sec-a", messages=HI, max_tokens=5)  # connection and encodings warm
    flood = {"model": "sec-tier", "messages": [{"role": "user", "content": "!?.,;:" * 170_000}]}
    stop, estimates = threading.Event(), []

    def sender() -> None:
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {secret}"}) as http:
            while not stop.is_set():
                estimates.append(http.post(f"{sec.url}/v1/estimate", json=flood).status_code)

    senders = [threading.Thread(target=sender) for _ in range(2)]
    for thread in senders:
        thread.start()
    latencies = []
    try:
        while len(estimates) < 2:  # both floods are under way
            time.sleep(0.01)
        for _ in range(60):
            started = time.perf_counter()
            client.chat.completions.create(model="sec-a", messages=HI, max_tokens=5)
            latencies.append(time.perf_counter() - started)
            time.sleep(max(0.05 - latencies[-1], 0))
    finally:
        stop.set()
        for thread in senders:
            thread.join()
    assert set(estimates) <= {200, 413, 503}  # counted, or refused: never a stall
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.05, f"chat p99 {p99 * 1000:.1f} ms while estimates ran"


# 2. n: every choice is held for and billed; n is capped.

def test_n_cannot_overspend_a_budget(sec: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("sec-a-up", {"output_tokens": 100})
    secret = new_key(sec, budget_usd="0.001")  # $0.001; one n=50, max_tokens=100 call bills $0.010008
    client = sec.client(api_key=secret)

    def one(_: int) -> int:
        try:
            client.chat.completions.create(model="sec-a", messages=HI, max_tokens=100, n=50)
            return 200
        except openai.APIStatusError as exc:
            return exc.status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(one, range(4)))
    assert statuses == [429] * 4  # each holds 50 x 100 output tokens ($0.010) against $0.001
    spend = httpx.get(f"{sec.url}/v1/spend", headers={"Authorization": f"Bearer {secret}"}).json()
    assert spend["spend_usd"] == 0.0
    small = new_key(sec, budget_usd="0.1")
    answer = sec.client(api_key=small).chat.completions.with_raw_response.create(
        model="sec-a", messages=HI, max_tokens=100, n=3)
    assert len(answer.parse().choices) == 3
    assert answer.headers["x-gateway-cost-usd"] == "0.000605"  # 5 x $1/M (the upstream's count) + 3 x 100 x $2/M
    with pytest.raises(openai.BadRequestError) as info:
        sec.client(api_key=small).chat.completions.create(model="sec-a", messages=HI, max_tokens=5, n=65)
    assert info.value.body["param"] == "n" and info.value.body["message"] == "'n' must be at most 64"  # type: ignore[index]


# 3. The prefix index is per tenant: nobody can test guesses against another tenant's prompts.

def test_cached_tokens_reveal_nothing_across_tenants(sec: Gateway) -> None:
    admin(sec, "PUT", "/admin/teams/blue", {})
    admin(sec, "PUT", "/admin/teams/red", {})
    blue, red = new_key(sec, team="blue"), new_key(sec, team="red")
    secret_prompt = [{"role": "system", "content": "The PIN is 4921. " + PIN_PROMPT}, *HI]
    sec.client(api_key=blue).chat.completions.create(model="sec-a", messages=secret_prompt, max_tokens=5)

    def cached(secret: str, pin: str, wait: bool = False) -> int:
        messages = [{"role": "system", "content": f"The PIN is {pin}. " + PIN_PROMPT}, *HI]
        deadline = time.monotonic() + 5
        while True:  # (with `wait`: until blue's own record, written in the background, has landed)
            plan = estimate(sec, {"model": "sec-a", "messages": messages}, secret).json()
            found = int(plan["candidates"][0]["cached_tokens"])
            if found or not wait or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    assert cached(blue, "4921", wait=True) > 1000 and cached(blue, "1234") == 0  # a tenant sees its own prompt
    assert {cached(red, pin) for pin in ("4921", "1234", "0000")} == {0}

    def route(secret: str) -> str:  # the estimated cost in the route header prices predicted reads
        raw = sec.client(api_key=secret).chat.completions.with_raw_response.create(
            model="sec-tier", messages=secret_prompt, max_tokens=5)
        return str(raw.headers["x-gateway-route"])

    admin(sec, "PUT", "/admin/teams/green", {})
    assert route(red) == route(new_key(sec, team="green")) != route(blue)  # cold for all but blue


# 4. Key permissions hold on both paths.

def test_a_tier_only_key_cannot_name_a_model(sec: Gateway) -> None:
    tiers_only = new_key(sec, tiers=["sec-tier"])
    with pytest.raises(openai.PermissionDeniedError) as info:
        sec.client(api_key=tiers_only).chat.completions.create(model="sec-b", messages=HI, max_tokens=5)
    assert "may only use the tiers sec-tier" in str(info.value)
    assert estimate(sec, {"model": "sec-b", "messages": HI}, tiers_only).status_code == 403
    assert sec.client(api_key=tiers_only).chat.completions.create(model="sec-tier", messages=HI, max_tokens=5)
    both = new_key(sec, tiers=["sec-tier"], models=["sec-b"])
    assert sec.client(api_key=both).chat.completions.create(model="sec-b", messages=HI, max_tokens=5).choices


# 5. Slow and oversized clients.

def _raw(gw: Gateway, data: bytes, wait_s: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=wait_s) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_a_head_that_trickles_in_is_cut_off(sec: Gateway) -> None:
    started = time.monotonic()
    reply = _raw(sec, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # never finished
    assert 0.9 <= time.monotonic() - started < 3
    assert reply.startswith(b"HTTP/1.1 408 ") and b'"code":"request_timeout"' in reply


def test_a_body_that_trickles_in_is_cut_off(sec: Gateway) -> None:
    secret = new_key(sec)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n"
            "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"model\": ").encode()
    started = time.monotonic()
    reply = _raw(sec, head)
    assert 0.9 <= time.monotonic() - started < 3
    assert reply.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in reply


def test_a_huge_head_gets_431(sec: Gateway) -> None:
    reply = _raw(sec, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431 ") and b'"code":"request_header_too_large"' in reply


def test_connections_over_the_cap_get_503_and_stalled_ones_are_dropped(sec: Gateway) -> None:
    stalled = [socket.create_connection(("127.0.0.1", sec.port)) for _ in range(40)]
    try:
        for sock in stalled:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert httpx.get(f"{sec.url}/healthz").status_code == 503
        for sock in stalled:  # each is closed once its head is late
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")
        assert httpx.get(f"{sec.url}/healthz").status_code == 200
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
])
def test_malformed_http_gets_an_openai_shaped_400(sec: Gateway, request_bytes: bytes) -> None:
    reply = _raw(sec, request_bytes)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head
    error = httpx.Response(400, content=body).json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_http_request"


# 6. Operational endpoints.

def test_metrics_models_and_readyz_are_for_callers_with_credentials(sec: Gateway) -> None:
    assert httpx.get(f"{sec.url}/metrics").status_code == 401
    for token in (MASTER, SCRAPE):
        scrape = httpx.get(f"{sec.url}/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scrape.status_code == 200 and "gateway_requests_total" in scrape.text
    assert httpx.get(f"{sec.url}/v1/models").status_code == 401
    models = sec.client(api_key=new_key(sec)).models.list()
    assert "sec-tier" in {m.id for m in models.data}
    assert httpx.get(f"{sec.url}/readyz").json() == {"status": "ready"}
    detailed = httpx.get(f"{sec.url}/readyz", headers={"Authorization": f"Bearer {SCRAPE}"}).json()
    assert detailed == {"status": "ready", "models_available": 3}


def test_no_redirect_is_built_from_the_host_header(sec: Gateway) -> None:
    response = httpx.get(f"{sec.url}/dashboard/?key={MASTER}", headers={"Host": "evil.example"})
    assert response.status_code == 404 and "location" not in response.headers


# 7. Input bounds and audio.

def test_max_tokens_is_bounded(sec: Gateway) -> None:
    client = sec.client(api_key=new_key(sec))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="sec-a", messages=HI, max_tokens=2**63)
    assert info.value.body["param"] == "max_tokens"  # type: ignore[index]


def test_audio_is_priced_at_audio_rates_or_refused(sec: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("sec-audio-up", {"usage": {
        "prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 600},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 400}}})
    client = sec.client(api_key=new_key(sec))
    raw = client.chat.completions.with_raw_response.create(
        model="sec-audio", messages=HI, modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})
    # text: 400 x $2.50/M + 100 x $10/M; audio: 600 x $32/M + 400 x $64/M
    assert raw.headers["x-gateway-cost-usd"] == "0.0468"
    usage = raw.parse().usage
    assert usage is not None and usage.completion_tokens_details.audio_tokens == 400  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="sec-a", messages=HI, modalities=["text", "audio"],
                                       audio={"voice": "alloy", "format": "wav"})
    assert "has no audio price" in str(info.value)


# 8. Credentials never leave, in any form; unknown fields are not forwarded.

def test_an_upstream_echoing_its_key_in_any_form_is_redacted(sec: Gateway, upstream: FakeUpstreamThread) -> None:
    key = UPSTREAM_KEY
    forms = [key.upper(), key.removeprefix("sk-"), base64.b64encode(f"user:{key}".encode()).decode(),
             key[:4] + "****" + key[-4:]]
    client = sec.client(api_key=new_key(sec))
    for form in forms:
        upstream.script("sec-a-up", {"fault": "400", "error_message": f"bad credential {form} given"})
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="sec-a", messages=HI, max_tokens=5)
        assert form not in str(info.value.body) and "[redacted]" in str(info.value.body), form
    assert not any(form in sec.logs() for form in forms)


def test_unknown_fields_are_dropped_and_credentials_never_forwarded(sec: Gateway, upstream: FakeUpstreamThread) -> None:
    client = sec.client(api_key=new_key(sec))
    extra = {"api_base": "http://169.254.169.254", "api_key": "sk-attacker", "base_url": "http://x", "min_p": 0.1,
             "made_up": 1}
    for name in ("sec-a", "sec-b"):
        client.chat.completions.create(model=name, messages=HI, max_tokens=5, extra_body=extra)
    sent_a, sent_b = upstream.calls("sec-a-up")[-1]["body"], upstream.calls("sec-b-up")[-1]["body"]
    assert set(extra) & set(sent_a) == set()
    assert set(extra) & set(sent_b) == {"min_p"}  # sec-b's extra_body_fields allow it


def test_extra_body_fields_cannot_allow_credentials(upstream: FakeUpstreamThread) -> None:
    from gateway.config.schema import ConfigError, parse_config

    config = sec_config(upstream)
    config["models"][0]["extra_body_fields"] = ["api_base", "min_p"]
    with pytest.raises(ConfigError, match=r"models\[0\]\.extra_body_fields: may not forward api_base"):
        parse_config(config)
