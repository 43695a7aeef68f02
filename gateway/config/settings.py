"""Configuration, phase two: resolve each model's price, limits, key and wire format, and check
cross-references. Produces the immutable `Settings` the app is built from.

An unpriced model is a start-up error, never $0. A model whose key is missing is unavailable,
not a crash.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from gateway.config.providers import defaults_for
from gateway.config.schema import (
    OVERALL,
    BatchesConfig,
    BudgetConfig,
    CacheLayer,
    ConfigError,
    ConversationsConfig,
    DatabaseConfig,
    GatewayConfig,
    LedgerConfig,
    LimitsConfig,
    ModelConfig,
    PrefixLayer,
    PriceFields,
    PricingConfig,
    RoutingConfig,
    ServerConfig,
    StorageConfig,
)
from gateway.config.storage import redis_url as configured_redis_url
from gateway.config.storage import sqlite_path
from gateway.errors import ModelNotFound, ServiceUnavailable
from gateway.money.price_table import PriceTable
from gateway.money.pricing import Price, Rates, per_mtok_to_pico
from routing_policies import PolicyOptions, RoutingPolicy, TierRoute, load_policy

__all__ = ["ModelSpec", "Settings", "TierSpec", "resolve_settings"]

_CAPABILITY_KEYS = MappingProxyType({
    "tools": "supports_function_calling",
    "vision": "supports_vision",
    "json_schema": "supports_response_schema",
})


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    provider: str
    wire: str
    upstream_model: str
    api_base: str | None
    api_key: str | None
    price: Price
    timeout_s: float
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    quality: float | None = None  # overall
    quality_source: str | None = None
    capabilities: frozenset[str] = frozenset()
    unavailable_reason: str | None = None
    extra_body_fields: frozenset[str] = frozenset()  # request fields forwarded beyond OpenAI's chat parameters
    reasoning: bool = False  # writes reasoning tokens (billed as completion tokens), estimated per effort
    # overrides `quality` for a request's category
    quality_by_category: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    mode: str = "chat"  # chat | embedding (served by /v1/embeddings only, never in a tier)
    # This model at the flex service tier, with the deferrable timeout: for a request that may
    # wait (None: the model has no flex price, or its upstream does not take `service_tier`).
    deferred: ModelSpec | None = None

    def quality_for(self, category: str) -> float | None:
        return self.quality_by_category.get(category, self.quality)

    @property
    def native_api(self) -> str | None:
        """The client API this model's provider serves itself (sent natively, not translated)."""
        if self.wire == "anthropic":
            return "messages"
        return "responses" if self.provider == "openai" else None

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None


@dataclass(frozen=True, slots=True)
class TierSpec:
    name: str
    min_quality: float
    policy: RoutingPolicy
    baseline_model: str | None  # None: the best-quality qualifying model of the moment
    order: tuple[str, ...] = ()
    reads_prompt: bool = False  # the policy reads the prompt (the learned policy): `rank` gets a `Prompt`
    defer: bool = False  # every request may wait: sent at the flex service tier where a model has one

    @property
    def route(self) -> TierRoute:
        return TierRoute(self.name, self.min_quality, self.order, self.baseline_model)


@dataclass(frozen=True)
class Settings:
    models: dict[str, ModelSpec]
    tiers: dict[str, TierSpec] = field(default_factory=dict)
    routing: RoutingConfig = field(default_factory=lambda: RoutingConfig.model_validate({}))
    cache: CacheLayer = field(default_factory=lambda: CacheLayer.model_validate({"ttl_s": 3600}))  # response cache
    prefix: PrefixLayer = field(default_factory=PrefixLayer)  # prompt-prefix index
    budgets: BudgetConfig = field(default_factory=BudgetConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    conversations: ConversationsConfig = field(default_factory=ConversationsConfig)  # stored responses
    batches: BatchesConfig = field(default_factory=BatchesConfig)  # the Batch API
    max_body_bytes: int = 4 * 1024 * 1024
    redis_url: str | None = None
    cache_redis_url: str | None = None  # the caches' own Redis (`cache.redis_url`), else they use `redis_url`
    database_url: str | None = None  # PostgreSQL, the system of record
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    # The SQLite file that keeps keys, teams, spend and the ledger (neither database_url nor redis_url,
    # `storage.backend` auto or sqlite); None: PostgreSQL, Redis or this process's memory keep them.
    sqlite_path: str | None = None
    storage: StorageConfig = field(default_factory=StorageConfig)
    redis_prefix: str = "gw"
    redis_max_connections: int = 100
    redis_pool_timeout_s: float = 5.0
    master_key: str | None = None
    require_keys: bool = False
    metrics_require_key: bool = False
    metrics_token: str | None = None
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def resolve_model(self, name: str) -> ModelSpec:
        """The model a request names: 404 if there is none, 503 if it cannot be served now."""
        spec = self.models.get(name)
        if spec is None:
            raise ModelNotFound(f"The model or tier '{name}' does not exist", param="model")
        if spec.unavailable_reason is not None:
            raise ServiceUnavailable(f"model '{name}' is unavailable: {spec.unavailable_reason}", param="model")
        return spec

    def secrets(self) -> list[str]:
        """Every credential the gateway holds, for redaction."""
        keys = [m.api_key for m in self.models.values() if m.api_key]
        keys += [k for k in (self.master_key, self.metrics_token) if k]
        if self.database_url:
            keys.append(urlsplit(self.database_url).password or "")
        if self.cache_redis_url:
            keys.append(urlsplit(self.cache_redis_url).password or "")
        return sorted({k for k in keys if len(k) >= 4}, key=len, reverse=True)


def _pico(value: Decimal | None) -> int | None:
    return None if value is None else per_mtok_to_pico(value)


def _override(rates: Rates | None, fields: PriceFields) -> Rates | None:
    inp = _pico(fields.input_per_mtok)
    out = _pico(fields.output_per_mtok)
    inp = inp if inp is not None else (rates.input if rates else None)
    out = out if out is not None else (rates.output if rates else None)
    if inp is None or out is None:
        return None
    cached = _pico(fields.cached_input_per_mtok)
    write = _pico(fields.cache_write_per_mtok)
    write_1h = _pico(fields.cache_write_1h_per_mtok)
    reasoning = _pico(fields.reasoning_per_mtok)
    cached = cached if cached is not None else (rates.cached_input if rates else inp)
    write = write if write is not None else (rates.cache_write_5m if rates else inp)
    write_1h = write_1h if write_1h is not None else (rates.cache_write_1h if rates else write)
    if reasoning is None:
        reasoning = rates.reasoning if rates and rates.reasoning != rates.output else out
    audio_in, audio_out = _pico(fields.audio_input_per_mtok), _pico(fields.audio_output_per_mtok)
    return Rates(inp, cached, write, write_1h, out, reasoning,
                 audio_in if audio_in is not None else (rates.audio_input if rates else None),
                 audio_out if audio_out is not None else (rates.audio_output if rates else None))


def _price(m: ModelConfig, table_price: Price | None) -> Price | None:
    if m.pricing is None:
        return table_price
    base = _override(table_price.base if table_price else None, m.pricing)
    if base is None:
        return None
    services = _services(m.pricing, base, table_price)
    if not m.pricing.tiers:
        return Price(base=base, tiers=table_price.tiers if table_price else (), services=services)
    tiers = []
    for tier in m.pricing.tiers:
        rates = _override(base, tier)
        assert rates is not None  # base is complete, so a tier always resolves
        tiers.append((tier.above_input_tokens, rates))
    return Price(base=base, tiers=tuple(sorted(tiers, key=lambda t: t[0])), services=services)


def _services(pricing: PricingConfig, base: Rates, table_price: Price | None) -> tuple[tuple[str, Price], ...]:
    """The service tiers' prices: the table's, with `pricing.service_tiers` over them (a tier the
    table does not price starts from the default rates scaled to the given input and output)."""
    services = dict(table_price.services) if table_price else {}
    for name, fields in pricing.service_tiers.items():
        known = services.get(name)
        inp, out = _pico(fields.input_per_mtok), _pico(fields.output_per_mtok)
        start = known.base if known is not None else base.scaled(base.input if inp is None else inp,
                                                                 base.output if out is None else out)
        rates = _override(start, fields)
        assert rates is not None  # start is complete
        services[name] = Price(base=rates)
    return tuple(services.items())


def _resolve_model(i: int, m: ModelConfig, table: PriceTable, problems: list[str]) -> ModelSpec | None:
    path = f"models[{i}]"
    defaults = defaults_for(m.provider)
    upstream = m.upstream_model or m.name
    entry: dict[str, Any] = table.entry(m.provider, upstream) or {}
    price = _price(m, table.price(m.provider, upstream))
    if price is None:
        problems.append(
            f"{path}.pricing: no price for '{upstream}' (provider '{m.provider}'): it is not in "
            "litellm's price table; set pricing.input_per_mtok and pricing.output_per_mtok"
        )
        return None
    api_base = m.api_base or defaults.api_base
    if api_base is None and defaults.wire == "openai":
        problems.append(f"{path}.api_base: is required for provider '{m.provider}'")
        return None
    api_key = m.api_key
    if api_key is None and defaults.key_env and m.api_base is None:
        api_key = os.environ.get(defaults.key_env) or None
    reason = None
    if api_key is None and m.api_base is None and defaults.key_env:
        reason = f"no API key: set {defaults.key_env} or models[].api_key"
    caps: frozenset[str] = frozenset(
        m.capabilities if m.capabilities is not None else (c for c, key in _CAPABILITY_KEYS.items() if entry.get(key))
    )
    if price.base.audio:  # audio is served only where it can be priced
        caps |= {"audio"}
    return ModelSpec(
        name=m.name,
        provider=m.provider,
        wire=defaults.wire,
        upstream_model=upstream,
        api_base=api_base.rstrip("/") if api_base else None,
        api_key=api_key,
        price=price,
        timeout_s=m.timeout_s,
        max_input_tokens=m.max_input_tokens or entry.get("max_input_tokens"),
        max_output_tokens=m.max_output_tokens or entry.get("max_output_tokens"),
        quality=m.quality.get(OVERALL) if isinstance(m.quality, dict) else m.quality,
        quality_by_category=MappingProxyType(dict(m.quality) if isinstance(m.quality, dict) else {}),
        quality_source=m.quality_source,
        capabilities=caps,
        unavailable_reason=reason,
        extra_body_fields=frozenset(m.extra_body_fields),
        reasoning=bool(entry.get("supports_reasoning")) if m.reasoning is None else m.reasoning,
        mode=m.mode or ("embedding" if entry.get("mode") == "embedding" else "chat"),
    )


def _with_deferred(spec: ModelSpec, timeout_s: float) -> ModelSpec:
    """`spec` with its flex variant, when it has a flex price and an OpenAI-format upstream
    (the `service_tier` request field is OpenAI's)."""
    if spec.wire != "openai" or spec.mode != "chat" or not spec.price.has_service("flex"):
        return spec
    return replace(spec, deferred=replace(spec, timeout_s=max(spec.timeout_s, timeout_s)))


def _metrics_require_key(config: GatewayConfig) -> bool:
    """By default, /metrics is closed when keys are required and someone can open it."""
    if config.metrics_require_key is None:
        return config.require_keys and bool(config.master_key or config.metrics_token)
    return config.metrics_require_key


def _resolve_tiers(config: GatewayConfig, models: dict[str, int], problems: list[str]) -> dict[str, TierSpec]:
    tiers: dict[str, TierSpec] = {}
    for name, tier in config.tiers.items():
        path = f"tiers.{name}"
        if name in models:
            problems.append(f"{path}: name clashes with model '{name}'")
            continue
        refs = [(tier.baseline_model, "baseline_model"), *((m, f"order[{i}]") for i, m in enumerate(tier.order))]
        for ref, where in refs:
            if ref is not None and ref not in models:
                problems.append(f"{path}.{where}: model '{ref}' is not defined")
        try:
            policy = load_policy(tier.policy, PolicyOptions(name, tier.quality_floor, tier.router_model))
        except ValueError as exc:
            problems.append(f"{path}.policy: {exc}")
            continue
        tiers[name] = TierSpec(name, tier.min_quality, policy, tier.baseline_model, tuple(tier.order),
                               bool(getattr(policy, "reads_prompt", False)), tier.defer == "flex")
    return tiers


def resolve_settings(config: GatewayConfig, table: PriceTable, source: str = "config") -> Settings:
    problems: list[str] = []
    models: dict[str, ModelSpec] = {}
    first_seen: dict[str, int] = {}
    for i, m in enumerate(config.models):
        if m.name in first_seen:
            first = first_seen[m.name]
            problems.append(f"models[{i}].name: duplicate model name '{m.name}' (first at models[{first}])")
            continue
        first_seen[m.name] = i
        spec = _resolve_model(i, m, table, problems)
        if spec is not None:
            models[m.name] = _with_deferred(spec, config.routing.defer.timeout_s)
    tiers = _resolve_tiers(config, first_seen, problems)
    redis_url = configured_redis_url(config)
    sqlite = sqlite_path(config, redis_url, problems)
    if config.metrics_require_key and not (config.master_key or config.metrics_token):
        problems.append("metrics_require_key: needs master_key or metrics_token (else no one can scrape)")
    if problems:
        raise ConfigError(problems, source)
    return Settings(
        models=models,
        tiers=tiers,
        routing=config.routing,
        cache=config.cache.response,
        prefix=config.cache.prefix,
        budgets=config.budgets,
        ledger=config.ledger,
        conversations=config.conversations,
        batches=config.batches,
        database_url=config.database_url,
        database=config.database,
        sqlite_path=sqlite,
        storage=config.storage,
        max_body_bytes=config.max_body_bytes,
        redis_url=redis_url,
        cache_redis_url=config.cache.redis_url or None,
        redis_prefix=config.redis_prefix,
        redis_max_connections=config.redis_max_connections,
        redis_pool_timeout_s=config.redis_pool_timeout_s,
        master_key=config.master_key,
        require_keys=config.require_keys,
        metrics_require_key=_metrics_require_key(config),
        metrics_token=config.metrics_token,
        limits=config.limits,
        server=config.server,
    )
