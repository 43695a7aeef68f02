"""The embeddings path (`POST /v1/embeddings`): one embedding model by name (a tier would mix
vector spaces), with the key's checks, its rate limit and budget hold, the usage priced by the
pricing core and booked like any answer.

Embeddings are deterministic, so the response cache keeps them **per input**: each text's vector
under (tenant, model, text, encoding_format, dimensions). A request whose texts were all seen is
answered from the cache at $0; otherwise only the unseen texts go upstream (and are paid for),
and the answer puts every vector back at its index. A request of token ids, or of more than
`PER_INPUT_MAX` texts, is cached whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from time import perf_counter
from typing import Any

from gateway.access.gate import Access
from gateway.cache.response_cache import ResponseCache
from gateway.config.settings import ModelSpec, Settings
from gateway.errors import GatewayError, InvalidRequest
from gateway.money.pricing import Cost
from gateway.pipeline.embedding_request import EmbeddingRequest
from gateway.pipeline.exchange import Answer, Attempt, Caller, Exchange
from gateway.pipeline.settle import Books
from gateway.providers.base import Completion, Provider
from gateway.routing.router import Router

__all__ = ["PER_INPUT_MAX", "Embeddings"]

PER_INPUT_MAX = 256  # texts looked up one by one in the cache; a larger request is cached whole

Vectors = dict[int, tuple[Any, int]]  # input index -> (its embedding, what it cost when it was paid)


class Embeddings:
    def __init__(self, settings: Settings, router: Router, access: Access, responses: ResponseCache,
                 providers: Mapping[str, Provider], books: Books) -> None:
        self._settings = settings
        self._router = router
        self._access = access
        self._responses = responses
        self._providers = providers
        self._books = books

    async def embed(self, request: EmbeddingRequest, caller: Caller) -> Answer:
        exchange: Exchange[EmbeddingRequest] = Exchange(request, caller)
        try:
            return await self._embed(exchange)
        except GatewayError as exc:
            self._books.failed(exchange, exc)
            raise
        except Exception:
            self._books.failed(exchange, GatewayError("internal gateway error"))
            raise

    def _model(self, request: EmbeddingRequest) -> ModelSpec:
        if self._router.tier(request.model) is not None:
            raise InvalidRequest(f"'{request.model}' is a tier: embeddings are served by model name only (the "
                                 "models of a tier embed into different vector spaces)", param="model")
        spec = self._settings.resolve_model(request.model)
        if spec.mode != "embedding":
            raise InvalidRequest(f"model '{spec.name}' is not an embedding model", param="model")
        return spec

    async def _embed(self, exchange: Exchange[EmbeddingRequest]) -> Answer:
        request, grant = exchange.request, exchange.caller.grant
        spec = self._model(request)
        self._access.check(grant, spec.name, None)
        counts = [self._books.tokens.count_text(t, spec.upstream_model) for t in request.texts]
        attempt = exchange.attempt = Attempt(spec, {**request.body, "model": spec.upstream_model},
                                             request.token_ids + sum(counts), None, False)
        per_input = (self._responses.used_for(request.cache) and not request.token_ids
                     and len(request.texts) <= PER_INPUT_MAX)
        keys = [self._input_key(exchange, spec, text) for text in request.texts] if per_input else []
        found: Vectors = {}
        if per_input and request.cache.read:
            found = await self._cached(keys)
            if len(found) == len(keys):
                return self._all_cached(exchange, attempt, found)
        elif self._responses.used_for(request.cache) and not per_input:
            attempt.cache_key = self._responses.key(exchange.caller.tenant(), spec.name, request.body)
            if request.cache.read:
                entry, attempt.cache_result = await self._responses.lookup(attempt.cache_key)
                if entry is not None:
                    self._books.hit(exchange, attempt, entry.cost_pico)
                    return Answer(_free(entry.body), exchange.headers(), Cost(), True)
        missing = [i for i in range(len(request.texts)) if i not in found] if per_input else []
        if found:  # only what the cache lacks goes upstream
            attempt.body["input"] = [request.texts[i] for i in missing]
            attempt.input_tokens = sum(counts[i] for i in missing)
        completion = await self._call(exchange, attempt)
        settled = self._books.settle(exchange, attempt, completion, "missing")
        body = completion.body
        if per_input:
            self._keep(body, [keys[i] for i in missing], [counts[i] for i in missing], settled.cost,
                       request.cache.write)
            body["data"] = _merged(body.get("data"), missing, found)
        elif request.cache.write:
            self._responses.store(attempt.cache_key, {**body, "usage": settled.client_usage()}, settled.cost)
        body["usage"] = settled.client_usage()
        self._books.finished(exchange, "200", perf_counter() - attempt.started)
        return Answer(body, exchange.headers(), settled.cost, False)

    async def _call(self, exchange: Exchange[EmbeddingRequest], attempt: Attempt) -> Completion:
        grant, spec = exchange.caller.grant, attempt.spec
        charge = self._access.rate_charge(grant, attempt.input_tokens)
        attempt.reservation = await self._access.reserve(grant, spec, attempt.input_tokens, 1, 1, charge, None)
        try:
            attempt.started = perf_counter()
            return await self._providers[spec.wire].embed(spec, attempt.body)
        except BaseException:
            await self._access.release(attempt.reservation)
            raise

    def _input_key(self, exchange: Exchange[EmbeddingRequest], spec: ModelSpec, text: str) -> str:
        body = exchange.request.body
        material = {"embedding_of": text, "encoding_format": body.get("encoding_format"),
                    "dimensions": body.get("dimensions")}
        return self._responses.key(exchange.caller.tenant(), spec.name, material)

    async def _cached(self, keys: list[str]) -> Vectors:
        found: Vectors = {}
        for i, key in enumerate(keys):
            entry, _ = await self._responses.lookup(key)
            if entry is not None:
                found[i] = (entry.body["embedding"], entry.cost_pico)
        return found

    def _keep(self, body: dict[str, Any], keys: list[str], counts: list[int], cost: Cost, write: bool) -> None:
        """Each new vector in the cache, with its share of the cost (by its tokens)."""
        data = body.get("data")
        if not write or not isinstance(data, list) or len(data) != len(keys):
            return
        tokens = sum(counts) or 1
        for item, key, count in zip(sorted(data, key=lambda d: d.get("index", 0)), keys, counts, strict=True):
            share = Cost(input=cost.total * count // tokens)
            self._responses.store(key, {"embedding": item.get("embedding")}, share)

    def _all_cached(self, exchange: Exchange[EmbeddingRequest], attempt: Attempt, found: Vectors) -> Answer:
        attempt.cache_result = "hit"
        self._books.hit(exchange, attempt, sum(cost for _, cost in found.values()))
        data = [{"object": "embedding", "index": i, "embedding": found[i][0]} for i in sorted(found)]
        body = _free({"object": "list", "data": data, "model": attempt.spec.upstream_model,
                      "usage": {"prompt_tokens": 0, "total_tokens": 0}})
        return Answer(body, exchange.headers(), Cost(), True)


def _free(body: dict[str, Any]) -> dict[str, Any]:
    """A cached answer: its usage at $0."""
    usage = body.get("usage")
    return {**body, "usage": {**(usage if isinstance(usage, dict) else {}), **Cost().usage_fields()}}


def _merged(data: Any, missing: list[int], found: Vectors) -> list[dict[str, Any]]:
    """The upstream's vectors (for the `missing` inputs, in their order) and the cached ones, each
    at its input's index."""
    fresh = sorted(data, key=lambda d: d.get("index", 0)) if isinstance(data, list) else []
    out = [{**item, "index": missing[j]} for j, item in enumerate(fresh) if j < len(missing)]
    out += [{"object": "embedding", "index": i, "embedding": vector} for i, (vector, _) in found.items()]
    return sorted(out, key=lambda d: d["index"])
