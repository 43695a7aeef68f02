"""What kind of request this is, for quality by category: a model's `quality` may be a map by
category (LMArena's), and a tier then keeps the models that meet its floor for the request's
category. Detected in-process from the conversation, cheaply (a length count, a turn count, one
search of the last message's start); "overall" when nothing specific shows.

`hard_prompts` cannot be told from the text cheaply and is never detected: a map may still carry
it, as information.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.config.schema import OVERALL, QUALITY_CATEGORIES

__all__ = ["OVERALL", "QUALITY_CATEGORIES", "detect_category"]

_LONG_CHARS = 6000  # a conversation with more text than this is a long query
_MULTITURN = 3  # user turns
_CUES = re.compile(
    r"(?P<coding>```|\b(?:code|function|python|javascript|typescript|java|rust|golang|sql|regex|compile[sd]?|"
    r"debug|stack ?trace|api|class|method|bug|refactor|script)\b|\bdef |\bimport )"
    r"|(?P<math>\b(?:solve|equation|integral|derivative|prove|theorem|probability|calculate|compute)\b|"
    r"\d\s*[-+*/^=]\s*\d)"
    r"|(?P<creative_writing>\b(?:story|poem|poetry|lyrics|haiku|fiction|novel|screenplay|sonnet|fairy tale)\b)"
    r"|(?P<instruction_following>\bexactly \d+|\bin \d+ words\b|\bbullet points?\b|\bdo not use\b|\bmust "
    r"(?:include|contain|start|end)\b|\ball caps\b|\bno more than \d+)",
    re.IGNORECASE)


def detect_category(messages: list[Any]) -> str:
    """One of QUALITY_CATEGORIES for validated chat messages."""
    chars, users = 0, 0
    for message in messages:
        content = message.get("content")
        chars += len(content) if content.__class__ is str else sum(
            len(p.get("text") or "") for p in content or () if p.get("type") == "text")
        users += message.get("role") == "user"
    if chars > _LONG_CHARS:
        return "long"
    if users >= _MULTITURN:
        return "multiturn"
    last = messages[-1].get("content")
    text = last if last.__class__ is str else " ".join(
        p.get("text") or "" for p in last or () if p.get("type") == "text")
    found = _CUES.search(text, 0, 600)
    return found.lastgroup or OVERALL if found is not None else OVERALL
