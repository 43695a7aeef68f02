"""What the two HTTP stream adapters share: reading an upstream SSE body batch by batch,
translating each `data:` line, and giving the connection back (or aborting it) at the end."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from gateway.config.settings import ModelSpec
from gateway.money.pricing import Usage
from gateway.providers.errors import upstream_errors
from gateway.providers.upstream_http import UpstreamResponse

__all__ = ["SSEStream"]


class SSEStream(ABC):
    """Subclasses implement `_event(data)`: one `data:` payload in, one SSE-framed OpenAI chunk
    (or None) out, setting `finished` when the upstream says the stream is complete."""

    def __init__(self, model: ModelSpec, resp: UpstreamResponse) -> None:
        self._model = model
        self._resp = resp
        self.usage: Usage | None = None
        self.usage_dict: dict[str, Any] | None = None
        self.usage_chunk: dict[str, Any] | None = None
        self.first_chunk_at: float | None = None
        self.finished = False

    @abstractmethod
    def _event(self, data: bytes) -> bytes | None:
        """Translate one `data:` payload of this wire format."""

    def _ended(self) -> None:  # noqa: B027 - optional hook, deliberately empty by default
        """Called when the body ended without the upstream's end-of-stream marker."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yields SSE-framed events, all those that arrived in one network read together."""
        with upstream_errors(self._model):
            async for batch in self._resp.line_batches():
                out: list[bytes] = []
                try:
                    for line in batch:
                        if line.startswith(b"data:") and (event := self._event(line[5:].strip())):
                            out.append(event)
                        if self.finished:
                            break
                except Exception:
                    if out:  # what arrived before the failure still reaches the client first
                        yield b"".join(out)
                    raise
                if out:
                    yield b"".join(out)
                if self.finished:
                    return
        self._ended()

    def close(self) -> None:
        # A finished stream returns its connection to the pool; an abandoned one is torn down,
        # which is how the upstream learns the request was cancelled.
        if self.finished:
            self._resp.release()
        else:
            self._resp.close()
