"""What may be shown: every credential the gateway holds becomes `[redacted]` before a message
reaches a client or a log line, in the forms an upstream or a library may echo it:

- as is, and in any letter case;
- without its prefix (`sk-`, `sk-proj-`, `sk-ant-api03-`, `sk-gw-`, ...);
- base64-encoded (standard or URL-safe, at any alignment, as inside a Basic header);
- masked, keeping its first or last characters (`sk-proj-****abcd`, `sk-a...wxyz`).

Whatever the gateway does not hold but looks like a credential (`sk-...`, `Bearer ...`, or a word
with a run of asterisks in it, as masked keys are printed) goes too.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

__all__ = ["Redactor", "redact"]

_TOKENISH = r"sk-[A-Za-z0-9_\-*]{6,}|Bearer\s+\S+|[A-Za-z0-9_\-]*\*{4,}[A-Za-z0-9_\-]*"
_PREFIX = re.compile(r"^(?:sk-(?:[a-z]+-)*(?:api\d+-)?|[a-z]+_)", re.IGNORECASE)
_MASK = r"[A-Za-z0-9_\-]*(?:\*+|\.{3}|\u2026)[A-Za-z0-9_\-]*"
_MIN_CORE = 8  # shorter forms would match ordinary words


def _base64_forms(secret: bytes) -> set[str]:
    """The parts of the secret's base64 text that do not depend on what comes before or after
    it, for each of the three alignments it can have inside a longer encoded string."""
    forms = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + secret).decode()
        skip = (0, 2, 3)[offset]  # characters that also carry bits of the preceding bytes
        whole = (offset + len(secret)) // 3 * 4  # characters of complete 3-byte groups
        core = encoded[skip:whole]
        if len(core) >= _MIN_CORE:
            forms |= {core, core.replace("+", "-").replace("/", "_")}
    return forms


def _forms(secret: str) -> list[str]:
    """Regular expressions for the forms of one secret."""
    literal = {secret}
    core = _PREFIX.sub("", secret)
    if len(core) >= _MIN_CORE:
        literal.add(core)
    literal |= _base64_forms(secret.encode())
    patterns = [re.escape(form) for form in sorted(literal, key=len, reverse=True)]
    if len(secret) >= 12:  # masked: its first or last four characters around a mask
        head, tail = re.escape(secret[:4]), re.escape(secret[-4:])
        patterns += [f"{head}{_MASK}", f"{_MASK}{tail}"]
    return patterns


class Redactor:
    """Built once from the credentials the gateway holds; call it on any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        patterns = [p for secret in secrets if len(secret) >= 4 for p in _forms(secret)]
        self._pattern = re.compile("|".join([*patterns, _TOKENISH]), re.IGNORECASE)

    def __call__(self, text: str) -> str:
        return self._pattern.sub("[redacted]", text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`Redactor(secrets)(text)`, for a one-off (an upstream's error message)."""
    return Redactor(secrets)(text)
