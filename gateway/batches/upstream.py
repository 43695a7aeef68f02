"""An OpenAI-format upstream's own Files and Batch endpoints (`{api_base}/files`,
`{api_base}/batches`), called with the model's key. Rare calls (a few per batch), some with large
bodies both ways, so aiohttp's client (multipart, GET) rather than the chat path's lean pool,
imported when the first batch call is made (it adds ~70 modules and ~11,000 objects that every
garbage-collector pass would walk: kept off start-up and the chat path). Failures become
GatewayErrors as every upstream failure does (`providers.errors.status_error`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from gateway.config.settings import ModelSpec
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.providers.errors import bad_response, status_error

if TYPE_CHECKING:
    import aiohttp

__all__ = ["UpstreamBatches"]

_USER_AGENT = "llm-gateway/0.1"


class UpstreamBatches:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # (made in the running loop, when first needed)
            import aiohttp

            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, spec: ModelSpec, method: str, path: str, **kw: Any) -> bytes:
        import aiohttp

        headers = {"User-Agent": _USER_AGENT, **({"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {})}
        try:
            async with asyncio.timeout(spec.timeout_s):
                async with self._client().request(method, f"{spec.api_base}{path}", headers=headers, **kw) as resp:
                    raw = await resp.read()
                    status, answer_headers = resp.status, dict(resp.headers.items())
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream {spec.provider} timed out after {spec.timeout_s:g}s on its batch API "
                                  f"(model '{spec.name}')") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach upstream {spec.provider}'s batch API for model '{spec.name}'",
                                kind="connection") from exc
        if status != 200:
            raise status_error(spec, status, raw, {k.lower(): v for k, v in answer_headers.items()})
        return raw

    async def _json(self, spec: ModelSpec, method: str, path: str, **kw: Any) -> dict[str, Any]:
        raw = await self._call(spec, method, path, **kw)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_response(spec, f"{method} {path} did not answer JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise bad_response(spec, f"{method} {path} answered no object with an id")
        return data

    async def upload(self, spec: ModelSpec, filename: str, content: bytes) -> str:
        """The upstream's id for `content` uploaded as a batch input file."""
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename=filename, content_type="application/jsonl")
        return str((await self._json(spec, "POST", "/files", data=form))["id"])

    async def create(self, spec: ModelSpec, file_id: str, endpoint: str, window: str,
                     metadata: dict[str, str]) -> dict[str, Any]:
        body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": window, "metadata": metadata}
        return await self._json(spec, "POST", "/batches", json=body)

    async def get(self, spec: ModelSpec, batch_id: str) -> dict[str, Any]:
        return await self._json(spec, "GET", f"/batches/{batch_id}")

    async def cancel(self, spec: ModelSpec, batch_id: str) -> dict[str, Any]:
        return await self._json(spec, "POST", f"/batches/{batch_id}/cancel")

    async def content(self, spec: ModelSpec, file_id: str) -> bytes:
        return await self._call(spec, "GET", f"/files/{file_id}/content")
