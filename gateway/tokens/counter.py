"""Token counting with tiktoken, fully offline.

The BPE files ship inside the package (`gateway/encodings/`, named by tiktoken's own cache key),
so no download is ever attempted. Counts follow how OpenAI bills chat requests: 3 tokens per
message, 1 per `name`, 3 to prime the reply, and tool definitions rendered the way the
model sees them. For non-OpenAI families o200k_base is an estimate, used for
routing and budgets only; billing uses the upstream's reported usage whenever it has one.
"""

from __future__ import annotations

import os
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import tiktoken

from gateway.errors import RequestTooLarge

__all__ = ["TokenCounter", "encoding_name_for"]

_ENCODINGS_DIR = Path(__file__).parent / "encodings"
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35")

_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3
T = TypeVar("T")
_ONE_TOKEN_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})  # in every encoding
# Tool definitions: overheads measured against the API for o200k-era and cl100k-era models.
_TOOLS = MappingProxyType({"o200k_base": (7, 3, 3, -3, 3, 12), "cl100k_base": (10, 3, 3, -3, 3, 12)})
_IMAGE_LOW, _IMAGE_HIGH = 85, 765  # low detail; high detail assumed 1024x1024 (4 tiles + base)


def encoding_name_for(model: str) -> str:
    """The tiktoken encoding for a model id (provider prefixes ignored): cl100k_base for the
    GPT-4 and GPT-3.5 generations, o200k_base for everything newer and, as the estimate, for
    other families (one encoding loaded instead of two saves ~30 MB)."""
    base = model.rsplit("/", 1)[-1].lower()
    if base.startswith(_CL100K_PREFIXES) and not base.startswith(_O200K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


class _Memo(Generic[T]):
    """Results for recently seen texts of one encoding. Chat clients resend the same system
    prompt and conversation history on every turn, and on the request path a tiktoken call
    costs ~15-20 us even for a few words. Bounded by the characters it holds; the oldest
    entries go first."""

    def __init__(self, max_chars: int) -> None:
        self.items: dict[str, T] = {}  # text -> result; read it, change it only through `put`
        self._chars = 0
        self._max_chars = max_chars
        self._lock = threading.Lock()

    def get(self, text: str) -> T | None:
        return self.items.get(text)

    def put(self, text: str, value: T) -> None:
        if len(text) > self._max_chars // 8:
            return  # no single text may flush the rest
        with self._lock:
            if text not in self.items:
                self.items[text] = value
                self._chars += len(text)
            while self._chars > self._max_chars:
                oldest = next(iter(self.items))
                self._chars -= len(oldest)
                del self.items[oldest]


class TokenCounter:
    """Loads encodings lazily (about 0.3-0.5 s each) and caches them; thread-safe."""

    def __init__(self, memo_chars: int = 4_000_000) -> None:
        self._encodings: dict[str, tiktoken.Encoding] = {}
        names = ("o200k_base", "cl100k_base")
        self._memos: dict[str, _Memo[int]] = {name: _Memo(memo_chars) for name in names}
        # Token ids, for the prompt-prefix index (long prompts only): 4 bytes a token.
        self._id_memos: dict[str, _Memo[array[int]]] = {name: _Memo(memo_chars) for name in names}
        self._lock = threading.Lock()

    def encoding(self, name: str) -> tiktoken.Encoding:
        enc = self._encodings.get(name)
        if enc is None:
            with self._lock:
                enc = self._encodings.get(name)
                if enc is None:
                    # tiktoken's documented offline mechanism: a cache dir keyed by file hash.
                    os.environ["TIKTOKEN_CACHE_DIR"] = str(_ENCODINGS_DIR)
                    enc = tiktoken.get_encoding(name)
                    # tiktoken keeps the Python rank dict (20-30 MB) only to pickle the encoding;
                    # the Rust core has its own copy. We never pickle, so let it go.
                    if hasattr(enc, "_mergeable_ranks"):
                        del enc._mergeable_ranks
                    self._encodings[name] = enc
        return enc

    def warm_up(self, models: Iterable[str]) -> None:
        """Load the encodings these model ids need (each costs 0.3-0.5 s and 20-40 MB)."""
        for name in sorted({encoding_name_for(m) for m in models}):
            self.encoding(name)

    def token_ids(self, text: str, encoding: str) -> array[int]:
        """The token ids of `text` (memoised, so a resent system prompt is encoded once)."""
        memo = self._id_memos[encoding]
        ids = memo.get(text)
        if ids is None:
            enc = self.encoding(encoding)
            ids = array("I")
            pieces = _pieces(text, _PIECE_CHARS)  # (one piece but for long texts)
            ids.extend(enc.encode(next(pieces), disallowed_special=()))
            for piece in pieces:  # a long text: hashed on a worker thread, which lets go of the GIL
                time.sleep(0)
                ids.extend(enc.encode(piece, disallowed_special=()))
            memo.put(text, ids)
        return ids

    def count_text(self, text: str, model: str) -> int:
        if not text:
            return 0
        enc = self.encoding(encoding_name_for(model))
        return len(enc.encode(text, disallowed_special=()))

    def count_messages(
        self, messages: list[Any], model: str, tools: list[Any] | None = None
    ) -> int:
        return self.count_messages_in(messages, encoding_name_for(model), tools)

    def count_messages_in(self, messages: list[Any], enc_name: str, tools: list[Any] | None = None) -> int:
        """`count_messages` by encoding name (routing counts once per encoding, not per model).
        The common message, a role and a resent text, costs two dict lookups."""
        return self._walk(messages, enc_name, tools, None)

    def count_bounded(self, messages: list[Any], enc_name: str, tools: list[Any] | None, limit: int,
                      cpu_s: float) -> int:
        """`count_messages_in` for a large prompt (on a worker thread): long texts are encoded in
        pieces cut at whitespace, and counting stops with 413 as soon as the count passes `limit`
        tokens or this thread has spent `cpu_s` seconds of CPU on it."""
        total = self._walk(messages, enc_name, tools, _BoundedCount(self, enc_name, limit, cpu_s))
        if total > limit:
            raise RequestTooLarge(f"the prompt is {total} tokens; the limit is {limit}", param="messages")
        return total

    def _walk(self, messages: list[Any], enc_name: str, tools: list[Any] | None,
              n: Callable[[str], int] | None) -> int:
        """The prompt's tokens; `n` counts any text (None: a memoised counter, made when first
        needed)."""
        known = self._memos[enc_name].items
        total = _REPLY_PRIMING
        for message in messages:
            if not isinstance(message, dict):
                continue
            total += _PER_MESSAGE
            for key, value in message.items():
                if key == "role" and value in _ONE_TOKEN_ROLES:
                    total += 1
                    continue
                if key == "content" and value.__class__ is str:
                    count = known.get(value)
                    if count is not None:
                        total += count
                        continue
                n = n or self._text_counter(enc_name)
                if key == "content":
                    total += _content_tokens(value, n)
                elif key == "tool_calls" and isinstance(value, list):
                    total += _tool_call_tokens(value, n)
                elif isinstance(value, str):
                    total += n(value)
                    if key == "name":
                        total += _PER_NAME
        if tools:
            total += _tool_definition_tokens(tools, n or self._text_counter(enc_name), _TOOLS[enc_name])
        return total

    def _text_counter(self, enc_name: str) -> Callable[[str], int]:
        memo = self._memos[enc_name]
        known = memo.items

        def n(text: str) -> int:
            if not text:
                return 0
            count = known.get(text)
            if count is None:
                count = len(self.encoding(enc_name).encode(text, disallowed_special=()))
                memo.put(text, count)
            return count

        return n


# Long texts are encoded in pieces of about this many characters (well under a millisecond
# each): BPE work grows faster than the length of one unbroken run, and between pieces a worker
# thread lets go of the GIL (tiktoken holds it while it encodes), so the event loop waits for
# at most one piece, not for the interpreter's 5 ms switch interval.
_PIECE_CHARS = 8 * 1024


class _BoundedCount:
    """Counts texts for `TokenCounter.count_bounded`: raises 413 once the texts counted so far
    pass the token limit or the thread's CPU time passes its allowance."""

    def __init__(self, counter: TokenCounter, enc_name: str, limit: int, cpu_s: float) -> None:
        self._encoding = counter.encoding(enc_name)
        self._limit = limit
        self._cpu_s = cpu_s
        self._cpu_deadline = time.thread_time() + cpu_s
        self.total = 0

    def __call__(self, text: str) -> int:
        count = 0
        for piece in _pieces(text, _PIECE_CHARS):
            count += len(self._encoding.encode(piece, disallowed_special=()))
            time.sleep(0)  # the GIL, for the event loop
            if self.total + count > self._limit:
                raise RequestTooLarge(f"the prompt is over the limit of {self._limit} tokens", param="messages")
            if time.thread_time() > self._cpu_deadline:
                raise RequestTooLarge(f"the prompt takes more than {self._cpu_s:g} s of CPU to count",
                                      param="messages")
        self.total += count
        return count


def _pieces(text: str, size: int) -> Iterator[str]:
    """`text` in pieces of about `size` characters, each cut before a space that starts a word
    (where the tokenizer's own pre-split cuts too, so the count is the same), else hard."""
    start = 0
    while len(text) - start > size:
        cut = text.rfind(" ", start + size // 2, start + size)
        while cut > start and text[cut - 1] == " ":  # the start of a run of spaces
            cut -= 1
        if cut <= start:
            cut = start + size
        yield text[start:cut]
        start = cut
    yield text[start:]


def _content_tokens(content: Any, n: Any) -> int:
    if isinstance(content, str):
        return int(n(content))
    total = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                total += n(str(part.get("text") or ""))
            elif part.get("type") == "image_url":
                detail = (part.get("image_url") or {}).get("detail")
                total += _IMAGE_LOW if detail == "low" else _IMAGE_HIGH
    return total


def _tool_call_tokens(calls: list[Any], n: Any) -> int:
    total = 0
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            total += n(str(fn.get("name") or "")) + n(str(fn.get("arguments") or ""))
    return total


def _tool_definition_tokens(tools: list[Any], n: Any, k: tuple[int, ...]) -> int:
    func_init, prop_init, prop_key, enum_init, enum_item, func_end = k
    total = 0
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict):
            continue
        total += func_init
        desc = str(fn.get("description") or "").removesuffix(".")
        total += n(f"{fn.get('name', '')}:{desc}")
        props = (fn.get("parameters") or {}).get("properties") or {}
        if props:
            total += prop_init
            for key, spec in props.items():
                spec = spec if isinstance(spec, dict) else {}
                total += prop_key
                for item in spec.get("enum") or ():
                    total += enum_item + n(str(item))
                if spec.get("enum"):
                    total += enum_init
                pdesc = str(spec.get("description") or "").removesuffix(".")
                total += n(f"{key}:{spec.get('type', '')}:{pdesc}")
    return total + func_end if total else 0
