"""The request pipeline: one chat request from its parsed form to settled money, whatever the
wire format it came in.

    route        by name: that model (its window checked); by tier: the router's plan
    access       the key may use it; its rate-limit charge and the budget hold of each attempt
    attempt      the response cache (a hit ends here, at $0), then the provider
    failover     by tier: on a failure worth retrying, the plan's next candidate (`failover`)
    settle       price the usage once, and book it everywhere (`settle`); a stream is settled
                 as it ends (`relay`)

The API layer decodes the request, calls `Pipeline.run` and encodes the `Answer` or `Stream`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from time import perf_counter
from types import MappingProxyType
from typing import Any

from gateway.access.gate import Access
from gateway.cache.prefix_cache import PrefixCache
from gateway.cache.response_cache import ResponseCache
from gateway.config.settings import ModelSpec, Settings, TierSpec
from gateway.errors import GatewayError, InvalidRequest, RateLimited
from gateway.money.pricing import Cost
from gateway.pipeline.exchange import Answer, Attempt, Caller, Exchange, Route, Stream
from gateway.pipeline.failover import Failover
from gateway.pipeline.relay import relay
from gateway.pipeline.request import ChatRequest
from gateway.pipeline.settle import Books
from gateway.providers.anthropic_options import with_thinking
from gateway.providers.base import Completion, Provider
from gateway.providers.native import NativeProvider
from gateway.redaction import Redactor
from gateway.routing.router import Router, unfit_reason
from gateway.tokens.counter import encoding_name_for
from gateway.tokens.pool import CountingPool

__all__ = ["Pipeline"]

log = logging.getLogger("gateway.requests")

_ZERO = MappingProxyType(Cost().usage_fields())  # a cache hit's usage cost: $0


class Pipeline:
    def __init__(
        self, settings: Settings, router: Router, access: Access, prefix: PrefixCache, responses: ResponseCache,
        providers: Mapping[str, Provider], counting: CountingPool, books: Books, secrets: Redactor,
        native: NativeProvider,
    ) -> None:
        self._settings = settings
        self._router = router
        self._access = access
        self._prefix = prefix
        self._responses = responses
        self._providers = providers
        self._counting = counting
        self._books = books
        self._secrets = secrets
        self._native = native

    async def run(self, request: ChatRequest, caller: Caller) -> Answer | Stream:
        """Serve `request`: by name, one attempt; by tier, the plan's candidates in turn. A
        failure is counted here and raised for the API layer to render."""
        exchange = Exchange(request, caller)
        try:
            self._check_bounds(request)
            tier = self._router.tier(request.model)
            if tier is None:
                return await self._by_name(exchange)
            return await self._by_tier(exchange, tier)
        except GatewayError as exc:
            self._books.failed(exchange, exc)
            raise
        except Exception:
            self._books.failed(exchange, GatewayError("internal gateway error"))
            raise

    async def estimate(self, request: ChatRequest, caller: Caller) -> dict[str, Any]:
        """POST /v1/estimate: the routing decision and estimated cost, calling no provider; the
        same key checks as a request (and one request against its RPM)."""
        self._check_bounds(request)
        grant, tier = caller.grant, self._router.tier(request.model)
        if tier is None:
            spec = self._settings.resolve_model(request.model)
            self._access.check(grant, spec.name, None)
            _check_fit(spec, request)
            await self._access.admit_estimate(grant)
            tokens = await self._count(request, encoding_name_for(spec.upstream_model))
            return await self._router.estimate(spec, request, tokens, caller, request.service_tier)
        self._access.check(grant, None, tier.name)
        await self._access.admit_estimate(grant)
        counts = await self._counts(request, self._router.encodings(tier))
        allowed = grant.key.models if grant.key is not None else None
        plan = await self._router.plan(tier, request, counts, caller, None, allowed, routed=False,
                                       service_tier=_service_tier(request, tier))
        return plan.describe()

    async def count_prompt(self, request: ChatRequest, caller: Caller) -> int:
        """The prompt's tokens for the model or tier `request` names (a tier: the most of its
        models' encodings; an Anthropic model with a key: Anthropic's own count, which is free),
        calling no paid model; the key checks of an estimate."""
        grant, tier = caller.grant, self._router.tier(request.model)
        if tier is None:
            spec = self._settings.resolve_model(request.model)
            self._access.check(grant, spec.name, None)
            await self._access.admit_estimate(grant)
            native = request.native
            if native is not None and native.api == "messages" == spec.native_api and spec.api_key:
                try:  # Anthropic's own count, when it can be asked (free)
                    return await self._native.count_tokens(spec, {**native.body, "model": spec.upstream_model},
                                                           native.headers)
                except GatewayError as exc:
                    log.warning("token count by %s failed (%s): counted here instead", spec.name, exc.message)
            return await self._count(request, encoding_name_for(spec.upstream_model))
        self._access.check(grant, None, tier.name)
        await self._access.admit_estimate(grant)
        return max((await self._counts(request, self._router.encodings(tier))).values())

    def _check_bounds(self, request: ChatRequest) -> None:
        if request.n > self._settings.limits.max_n:
            raise InvalidRequest(f"'n' must be at most {self._settings.limits.max_n}", param="n")

    async def _counts(self, request: ChatRequest, encodings: tuple[str, ...]) -> dict[str, int]:
        """The prompt's tokens in each of `encodings` (a large prompt off the event loop)."""
        return await self._counting.count(request.messages, request.tools, encodings, request.size)

    async def _count(self, request: ChatRequest, encoding: str) -> int:
        return (await self._counts(request, (encoding,)))[encoding]

    async def _by_name(self, exchange: Exchange[ChatRequest]) -> Answer | Stream:
        request, grant = exchange.request, exchange.caller.grant
        spec = self._settings.resolve_model(request.model)
        self._access.check(grant, spec.name, None)
        _check_fit(spec, request)
        tokens = 0  # the prompt is counted when a window or a key's budget and limits need it
        if grant.key is not None or spec.max_input_tokens:
            tokens = await self._count(request, encoding_name_for(spec.upstream_model))
        unfit = unfit_reason(spec, tokens, request.max_output)
        if unfit is not None:  # refused before any upstream call, as a tier would exclude it
            raise InvalidRequest(f"model '{spec.name}' cannot serve this request: {unfit}", param="messages")
        charge = self._access.rate_charge(
            grant, tokens + (request.max_output or self._settings.routing.default_output_tokens) * request.n)
        exchange.route = Route(None, await self._prefix.plan((spec,), request.body, exchange.caller), None)
        deadline = None
        if request.defer:  # it may wait, but not for ever
            exchange.defer = True
            deadline = asyncio.get_running_loop().time() + self._settings.routing.defer.deadline_s
        return await self._attempt(exchange, spec, tokens, deadline, charge)

    async def _by_tier(self, exchange: Exchange[ChatRequest], tier: TierSpec) -> Answer | Stream:
        request, grant = exchange.request, exchange.caller.grant
        self._access.check(grant, None, tier.name)
        exchange.tier = tier.name
        routing = self._settings.routing
        allowed = grant.key.models if grant.key is not None else None
        counts = await self._counts(request, self._router.encodings(tier))
        defer = exchange.defer = request.defer or (tier.defer and request.service_tier == "default")
        plan = await self._router.plan(tier, request, counts, exchange.caller, routing.max_attempts, allowed,
                                       service_tier=_service_tier(request, tier))
        first = plan.first
        charge = self._access.rate_charge(grant, first.input_tokens + first.expected_output_tokens)
        exchange.route = Route(plan, plan.prefix, plan.baseline)
        deadline = asyncio.get_running_loop().time() + (
            max(routing.deadline_s, routing.defer.deadline_s) if defer else routing.deadline_s)
        try:  # the common request: the first candidate answers, with no failover machinery around it
            return await self._attempt(exchange, self._settings.models[first.model], first.input_tokens, deadline,
                                       charge)
        except GatewayError as exc:
            return await self._fail_over(exchange, Failover(plan, deadline, routing, self._router.state,
                                                            self._books), exc)

    async def _fail_over(
        self, exchange: Exchange[ChatRequest], failover: Failover, exc: GatewayError,
    ) -> Answer | Stream:
        """The first attempt failed with `exc`: try the next candidates while the failover allows."""
        while True:
            candidate = await failover.next(exchange, exc)  # raises when nothing is left to try
            spec = self._settings.models[candidate.model]
            try:
                return await self._attempt(exchange, spec, candidate.input_tokens, failover.deadline, None)
            except GatewayError as err:
                exc = err

    async def _attempt(
        self, exchange: Exchange[ChatRequest], spec: ModelSpec, input_tokens: int, deadline: float | None,
        charge: int | None,
    ) -> Answer | Stream:
        """One model: the response cache first, then the budget hold, then the provider."""
        request = exchange.request
        if request.native is not None and request.native.api == spec.native_api:
            return await self._native_attempt(exchange, spec, input_tokens, deadline, charge)
        body = {**request.body, "model": spec.upstream_model}
        for field in request.extras - spec.extra_body_fields if request.extras else ():
            del body[field]  # not a chat parameter, and this upstream does not take it
        marked = exchange.route.prefix.with_breakpoint(spec.name, request.messages)
        if marked is not None:
            body["messages"] = marked
        previous = exchange.attempt
        attempt = exchange.attempt = Attempt(spec, body, input_tokens, deadline, marked is not None)
        if exchange.defer and spec.deferred is not None:  # it may wait: at the flex tier, with a longer timeout
            body["service_tier"], attempt.spec, attempt.deferred = "flex", spec.deferred, True
        if self._responses.used_for(request.cache):
            attempt.cache_key = self._responses.key(exchange.caller.tenant(), spec.name, request.body)
            if request.cache.read:
                entry, attempt.cache_result = await self._responses.lookup(attempt.cache_key)
                if entry is not None:
                    return self._hit(exchange, attempt, entry.body, entry.cost_pico)
        carried = previous.reservation.admission if previous is not None else None
        most = request.max_output
        if spec.wire == "anthropic" and "reasoning_effort" in request.body:  # thinking comes on top
            most = with_thinking(spec, request.body, most)
        attempt.reservation = await self._access.reserve(
            exchange.caller.grant, spec, input_tokens, most, request.n, charge, carried,
            request.service_tier == "priority")
        if attempt.reservation.max_output is not None:  # what the budget holds is all it may write
            _bound_output(attempt.body, spec, attempt.reservation.max_output)
        try:
            if attempt.deferred:
                return await self._call_deferred(exchange, attempt, spec, self._providers[spec.wire])
            return await self._call(exchange, attempt, self._providers[spec.wire])
        except BaseException:
            await self._access.release(attempt.reservation)
            raise

    async def _call(self, exchange: Exchange[ChatRequest], attempt: Attempt, provider: Provider) -> Answer | Stream:
        attempt.started = perf_counter()
        if exchange.request.stream:
            upstream = await provider.stream(attempt.spec, attempt.body, attempt.deadline)  # refusals: plain errors
            events = relay(exchange, attempt, upstream, self._books, self._responses, self._secrets)
            return Stream(events, exchange.headers())
        completion = await provider.complete(attempt.spec, attempt.body, attempt.deadline)
        return self._answer(exchange, attempt, completion)

    async def _call_deferred(self, exchange: Exchange[ChatRequest], attempt: Attempt, spec: ModelSpec,
                             provider: Provider) -> Answer | Stream:
        """A call at the flex service tier; if flex capacity is unavailable (a 429), the same model
        at the default tier (`_fall_back`)."""
        try:
            return await self._call(exchange, attempt, provider)
        except RateLimited as exc:
            self._fall_back(exchange, attempt, spec, exc)
            return await self._call(exchange, attempt, provider)

    def _fall_back(self, exchange: Exchange[ChatRequest], attempt: Attempt, spec: ModelSpec,
                   exc: RateLimited) -> None:
        """A flex call found no capacity: the attempt goes again, to `spec` at the default service
        tier, while the request's deadline allows (else `exc` stands). The budget holds the
        default price throughout: the fallback may be billed at it."""
        if attempt.deadline is not None and asyncio.get_running_loop().time() >= attempt.deadline:
            raise exc
        self._books.flex_fell_back(exchange, exc)
        attempt.spec, attempt.deferred = spec, False
        del attempt.body["service_tier"]

    async def _native_attempt(
        self, exchange: Exchange[ChatRequest], spec: ModelSpec, input_tokens: int, deadline: float | None,
        charge: int | None,
    ) -> Answer | Stream:
        """The client's own API request, to a model whose provider serves that API: sent as it is
        (no response cache: the answer is in the client's format, not the chat one); a Responses
        request that may wait at the flex service tier, as a chat one."""
        request = exchange.request
        native = request.native
        assert native is not None
        previous = exchange.attempt
        attempt = exchange.attempt = Attempt(spec, {**native.body, "model": spec.upstream_model}, input_tokens,
                                             deadline, False, native=True)
        if exchange.defer and spec.deferred is not None and native.api == "responses":
            attempt.body["service_tier"], attempt.spec, attempt.deferred = "flex", spec.deferred, True
        carried = previous.reservation.admission if previous is not None else None
        attempt.reservation = await self._access.reserve(
            exchange.caller.grant, spec, input_tokens, request.max_output, request.n, charge, carried,
            request.service_tier == "priority")
        if attempt.reservation.max_output is not None:  # what the budget holds is all it may write
            attempt.body["max_tokens" if native.api == "messages" else "max_output_tokens"] = \
                attempt.reservation.max_output
        try:
            try:
                return await self._native_call(exchange, attempt)
            except RateLimited as exc:
                if not attempt.deferred:
                    raise
                self._fall_back(exchange, attempt, spec, exc)
                return await self._native_call(exchange, attempt)
        except BaseException:
            await self._access.release(attempt.reservation)
            raise

    async def _native_call(self, exchange: Exchange[ChatRequest], attempt: Attempt) -> Answer | Stream:
        request, spec = exchange.request, attempt.spec
        native = request.native
        assert native is not None
        attempt.started = perf_counter()
        if request.stream:
            upstream = await self._native.stream(spec, native.api, attempt.body, native.headers, attempt.deadline)
            events = relay(exchange, attempt, upstream, self._books, self._responses, self._secrets)
            return Stream(events, exchange.headers(), True)
        completion = await self._native.complete(spec, native.api, attempt.body, native.headers, attempt.deadline)
        return self._answer(exchange, attempt, completion)

    def _answer(self, exchange: Exchange[Any], attempt: Attempt, completion: Completion) -> Answer:
        upstream_time = perf_counter() - attempt.started
        settled = self._books.settle(exchange, attempt, completion, "missing")
        if attempt.native:  # the provider's own usage, with the cost added
            usage = completion.body.get("usage")
            completion.body["usage"] = {**(usage if isinstance(usage, dict) else {}), **settled.cost.usage_fields()}
        else:
            completion.body["usage"] = settled.client_usage()
        if exchange.request.cache.write:
            self._responses.store(attempt.cache_key, completion.body, settled.cost)
        answer = Answer(completion.body, exchange.headers(), settled.cost, False, attempt.native)
        self._books.finished(exchange, "200", upstream_time)
        return answer

    def _hit(self, exchange: Exchange[Any], attempt: Attempt, body: dict[str, Any], saved_pico: int) -> Answer:
        """An answer from the response cache: $0, what it saved counted."""
        self._books.hit(exchange, attempt, saved_pico)
        answer = dict(body)
        usage = answer.get("usage")
        answer["usage"] = {**(usage if isinstance(usage, dict) else {}), **_ZERO}
        return Answer(answer, exchange.headers(), Cost(), True)


def _service_tier(request: ChatRequest, tier: TierSpec) -> str:
    """The service tier a tier request's candidates are priced at: the one it asks for, `flex`
    when the tier defers its requests (unless it asks for priority, which a tier does not undo)."""
    return "flex" if tier.defer and request.service_tier == "default" else request.service_tier


def _bound_output(body: dict[str, Any], spec: ModelSpec, tokens: int) -> None:
    """The upstream may write at most `tokens` per answer: in the field the client used, else the
    one the model reads (OpenAI's reasoning models refuse `max_tokens`)."""
    if "max_completion_tokens" in body or ("max_tokens" not in body and spec.wire == "openai" and spec.reasoning):
        body["max_completion_tokens"] = tokens
        body.pop("max_tokens", None)
    else:
        body["max_tokens"] = tokens
    if spec.wire == "anthropic":  # (thinking would come on top of the bound)
        body.pop("reasoning_effort", None)


def _check_fit(spec: ModelSpec, request: ChatRequest) -> None:
    """A model asked for by name must be able to take the request at all (a tier excludes it)."""
    if spec.mode != "chat":
        raise InvalidRequest(f"model '{spec.name}' is an embedding model: use /v1/embeddings", param="model")
    if "audio" in request.needs and "audio" not in spec.capabilities:
        raise InvalidRequest(f"model '{spec.name}' has no audio price: a request with audio cannot be billed "
                             "correctly, so it is refused", param="model")
