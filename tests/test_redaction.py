"""Credentials in every form an upstream or a library may echo them, and unexpected errors in
the log: plain functions, exact strings."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from conftest import UPSTREAM_KEY, model

from gateway.fake_upstream import FakeUpstreamThread
from gateway.observability.error_log import ErrorLog
from gateway.redaction import Redactor

KEY = "sk-proj-Abc123XyZ789secretQrs456"
MASTER = "master-key-0123456789"


@pytest.mark.parametrize("form", [
    KEY, KEY.lower(), KEY.upper(), KEY.removeprefix("sk-proj-"),
    base64.b64encode(KEY.encode()).decode(), base64.b64encode(f"user:{KEY}".encode()).decode(),
    base64.urlsafe_b64encode(f"ab{KEY}".encode()).decode(), "sk-proj-" + "*" * 20 + "s456", "sk-p...s456",
    MASTER, MASTER.upper(),
])
def test_every_form_of_a_credential_is_redacted(form: str) -> None:
    text = Redactor([KEY, MASTER])(f"Incorrect API key provided: {form}. Check it.")
    assert text.startswith("Incorrect API key provided: ") and "[redacted]" in text
    core = form.split("*")[0][-6:] if "*" in form else form[4:-4]
    assert core not in text


def test_ordinary_text_is_left_alone() -> None:
    text = "The model 'gpt-4o' answered 200 OK in 1.5 s... then *bold* text and base64 aGVsbG8="
    assert Redactor([KEY, MASTER])(text) == text


def test_one_traceback_per_cause_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    errors = ErrorLog(every_s=60)

    def fail(n: int) -> None:
        raise ValueError(f"bad {n}")

    with caplog.at_level(logging.ERROR, logger="gateway"):
        for n in range(3):
            try:
                fail(n)
            except ValueError as exc:
                errors.unexpected("/v1/chat/completions", exc)
        try:
            raise KeyError("other")
        except KeyError as exc:
            errors.unexpected("/v1/estimate", exc)
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in with_traceback] == ["unhandled error on /v1/chat/completions: ValueError: bad 0",
                                                        "unhandled error on /v1/estimate: KeyError: 'other'"]
    assert len(caplog.records) == 4
    assert caplog.records[1].getMessage().startswith("unhandled error on /v1/chat/completions: ValueError: bad 1 (at ")


@pytest.mark.anyio
async def test_a_500_logs_one_traceback_and_says_nothing(in_process: Any, upstream: FakeUpstreamThread,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    config = {"models": [model("boom", "openai", upstream, pricing={"input_per_mtok": 1, "output_per_mtok": 1})],
              "tiers": {"boom-tier": {"min_quality": 0}}}
    async with in_process(config) as gw:

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"bug holding {UPSTREAM_KEY}")

        gw.state.router.plan = broken  # a bug below the API layer
        with caplog.at_level(logging.ERROR):
            answers = [await gw.client.post(path, json={"model": "boom-tier", "messages": [{"role": "user",
                                                                                       "content": "hi"}]})
                       for path in ("/v1/estimate", "/v1/estimate", "/v1/chat/completions")]
    assert [a.status_code for a in answers] == [500, 500, 500]
    assert {a.json()["error"]["message"] for a in answers} == {"internal gateway error"}
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1  # once for the cause, not per request, and not twice per request
    assert len([r for r in caplog.records if "unhandled error" in r.getMessage()]) == 3
