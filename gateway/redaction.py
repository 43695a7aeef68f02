"""What may be shown: every credential the gateway holds, and anything that looks like a bearer
token or an `sk-...` key, becomes `[redacted]` before a message reaches a client or a log line."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["redact"]

_TOKENISH = re.compile(r"(sk-[A-Za-z0-9_\-*]{6,}|Bearer\s+\S+)")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "[redacted]")
    return _TOKENISH.sub("[redacted]", text)
