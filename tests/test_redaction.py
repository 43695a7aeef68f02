"""Credentials in every form an upstream or a library may echo them, and unexpected errors in
the log: plain functions, exact strings."""

from __future__ import annotations

import base64
import logging

import pytest

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
