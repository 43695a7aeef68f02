"""The one small interface every provider adapter implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config.settings import ModelSpec
from gateway.money.pricing import Usage

__all__ = ["Completion", "Provider", "UpstreamStream"]


@dataclass(slots=True)
class Completion:
    body: dict[str, Any]  # OpenAI `chat.completion` object
    usage: Usage | None  # normalised billing buckets; None when the upstream omitted usage
    usage_dict: dict[str, Any] | None  # OpenAI-convention usage to show the client

    def produced_text(self) -> str:
        """Everything generated (content and tool-call names and arguments), for counting."""
        parts: list[str] = []
        for choice in self.body.get("choices") or ():
            message = choice.get("message") or {}
            if isinstance(message.get("content"), str):
                parts.append(message["content"])
            for call in message.get("tool_calls") or ():
                fn = call.get("function") or {}
                parts.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))
        return "".join(parts)


class UpstreamStream(Protocol):
    """An open upstream stream. Iterating yields SSE-framed OpenAI `chat.completion.chunk`
    events (`data: {...}\n\n`), those that arrived together in one piece, never waiting for
    more. The usage-only chunk is not yielded: it is kept in `usage_chunk`/`usage`/`usage_dict`
    for the gateway to price and (if asked) forward."""

    usage: Usage | None
    usage_dict: dict[str, Any] | None
    usage_chunk: dict[str, Any] | None
    first_chunk_at: float | None
    finished: bool  # the upstream ended the stream properly

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None:
        """Release the connection; if the stream did not finish, abort it (cancels upstream)."""
        ...

    def produced_text(self) -> str:
        """Everything generated so far (content and tool-call arguments), for counting."""
        ...


class Provider(Protocol):
    """`deadline` (event-loop time, from routing's overall deadline) cuts the model's own
    `timeout_s` short: the call gives up at whichever comes first. For a stream it bounds
    the wait for the head only, as `timeout_s` does."""

    async def complete(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> Completion: ...

    async def stream(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> UpstreamStream:
        """Raises a GatewayError before returning if the upstream refused the request."""
        ...

    async def embed(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> Completion:
        """An OpenAI embeddings request; the answer's `body` is OpenAI's embedding list."""
        ...
