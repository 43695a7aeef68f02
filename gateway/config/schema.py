"""Configuration, phase one: the YAML shape (PRODUCT.md section 2), `${ENV}` substitution, and
path-qualified error messages such as `models[2].pricing.input_per_mtok: must be >= 0`.

Phase two (cross-references, prices, keys) lives in `gateway.config.settings`.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "FORBIDDEN_BODY_FIELDS", "ConfigError", "GatewayConfig", "LimitsConfig", "ModelConfig", "ServerConfig",
    "StorageConfig", "load_config", "parse_config",
]

Capability = Literal["tools", "vision", "json_schema"]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """Every problem found in a config, each prefixed with its path."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        super().__init__(f"invalid {source}:\n" + "\n".join(f"  - {p}" for p in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Money = Decimal


class PriceFields(_Strict):
    input_per_mtok: Money | None = Field(None, ge=0)
    output_per_mtok: Money | None = Field(None, ge=0)
    cached_input_per_mtok: Money | None = Field(None, ge=0)
    cache_write_per_mtok: Money | None = Field(None, ge=0)
    cache_write_1h_per_mtok: Money | None = Field(None, ge=0)
    reasoning_per_mtok: Money | None = Field(None, ge=0)
    audio_input_per_mtok: Money | None = Field(None, ge=0)  # both set: the model may take and speak audio
    audio_output_per_mtok: Money | None = Field(None, ge=0)


class PricingTier(PriceFields):
    above_input_tokens: int = Field(ge=0)


ServiceTierName = Literal["flex", "priority", "batch"]


class PricingConfig(PriceFields):
    tiers: list[PricingTier] = []
    # The model's price at other service tiers (default: the price table's `*_flex`,
    # `*_priority`, `*_batches` prices). A bucket left out is the default price's, scaled by the
    # tier's input (or output) ratio.
    service_tiers: dict[ServiceTierName, PriceFields] = {}


OVERALL = "overall"
# Categories a model's quality may be given for (LMArena's, where the built-in catalog's come from).
QUALITY_CATEGORIES = frozenset({OVERALL, "coding", "math", "creative_writing", "instruction_following",
                                "hard_prompts", "multiturn", "long"})


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    upstream_model: str | None = None
    api_base: str | None = None
    api_key: str | None = None
    quality: float | dict[str, float] | None = None  # 0-100, or a map by category with "overall"
    quality_source: str | None = None  # where the score comes from (shown by /v1/models)
    pricing: PricingConfig | None = None
    max_input_tokens: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    timeout_s: float = Field(120.0, gt=0)
    capabilities: list[Capability] | None = None
    reasoning: bool | None = None  # writes reasoning tokens (default: the price table's supports_reasoning)
    mode: Literal["chat", "embedding"] | None = None  # what it serves (default: the price table's mode)
    # Request fields beyond OpenAI's chat parameters to forward to this upstream (e.g. vLLM's
    # top_k); anything else unknown is dropped. Credentials and endpoints never pass.
    extra_body_fields: list[str] = []

    @field_validator("quality")
    @classmethod
    def _quality(cls, quality: float | dict[str, float] | None) -> float | dict[str, float] | None:
        scores = quality.values() if isinstance(quality, dict) else [] if quality is None else [quality]
        for score in scores:
            if score > 100 or score < 0:
                raise ValueError("must be <= 100" if score > 100 else "must be >= 0")
        if isinstance(quality, dict):
            unknown = sorted(set(quality) - QUALITY_CATEGORIES)
            if unknown:
                raise ValueError(f"unknown categor{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)} "
                                 f"(known: {', '.join(sorted(QUALITY_CATEGORIES))})")
            if OVERALL not in quality:
                raise ValueError("a quality map needs an 'overall' score")
        return quality

    @field_validator("extra_body_fields")
    @classmethod
    def _no_credentials(cls, fields: list[str]) -> list[str]:
        forbidden = sorted(set(fields) & FORBIDDEN_BODY_FIELDS)
        if forbidden:
            raise ValueError(f"may not forward {', '.join(forbidden)} (credentials and endpoints never pass)")
        return fields


class TierConfig(_Strict):
    min_quality: float = Field(0, ge=0, le=100)
    policy: str = "cheapest"  # a built-in name or an importable module defining POLICY
    baseline_model: str | None = None  # savings are measured against it (default: best quality)
    order: list[str] = []  # preference list for the `ordered` policy
    # The learned policy (`policy: learned`): the share of the reference model's (baseline_model's)
    # quality to keep, and a router file of `gateway router train` (default: the shipped one).
    quality_floor: float | None = Field(None, gt=0, le=1.2)
    router_model: str | None = None
    # `flex`: every request of this tier may wait (as with `x-gateway-defer: flex`): sent at the
    # candidate's flex service tier where it has one, priced so in routing.
    defer: Literal["flex"] | None = None


class RoutingConfig(_Strict):
    default_output_tokens: int = Field(256, gt=0)  # expected output before any is observed
    max_attempts: int = Field(3, ge=1)  # candidates tried per request (failover)
    deadline_s: float = Field(120, gt=0)  # overall budget for all attempts
    failure_threshold: int = Field(3, ge=1)  # consecutive failures before a cooldown
    cooldown_s: float = Field(30, gt=0)
    # With Redis: how stale this process's copy of the shared state (cooldowns, learned output
    # lengths) may get; successes are also written back in batches this often.
    shared_state_refresh_s: float = Field(0.5, ge=0)
    explore: ExploreConfig = Field(default_factory=lambda: ExploreConfig())
    defer: DeferConfig = Field(default_factory=lambda: DeferConfig())


class DeferConfig(_Strict):
    """Deferrable requests (`x-gateway-defer: flex`, or a tier's `defer: flex`): a flex call may
    queue upstream for minutes, so it gets a longer timeout, and the request a longer deadline
    within which a flex 429 (resource unavailable) falls back to the default service tier."""

    timeout_s: float = Field(900, gt=0)  # one flex call (OpenAI suggests 15 minutes)
    deadline_s: float = Field(1800, gt=0)  # the whole deferrable request, fallback included


class ExploreConfig(_Strict):
    """Exploration: a model that stopped winning a cost-ranked tier is measured again now and then,
    so an estimate that ran high does not keep it out for ever."""

    every: int = Field(100, ge=0)  # one request in this many of a tier may explore (0: never)
    max_extra_cost: float = Field(0.5, ge=0)  # ... going to a model estimated at most this much dearer
    after_s: float = Field(300, ge=0)  # ... that has not answered in this process for this long


class CacheLayer(_Strict):
    enabled: bool = True
    ttl_s: int = Field(3600, gt=0)
    max_entry_bytes: int = Field(1 << 20, gt=0)  # larger answers are not stored
    # bound of the store in bytes: this process's memory, or (with Redis) all replicas' entries together,
    # enforced by the gateway (oldest first) so that the cache alone can never fill Redis
    max_memory_bytes: int = Field(64 << 20, gt=0)
    max_known_keys: int = Field(200_000, gt=0)  # Redis: entry names each replica knows (a miss then skips Redis)


class PrefixLayer(_Strict):
    """The prompt-prefix index: which prompt prefixes are warm at which model."""

    enabled: bool = True
    ttl_s: int = Field(300, gt=0)  # how long a provider keeps a prefix warm (OpenAI and Anthropic: ~5 min)
    max_entries: int = Field(200_000, gt=0)  # block hashes kept per model (16 bytes each, ~2 MB in memory)
    max_memory_bytes: int = Field(64 << 20, gt=0)  # the whole index (every tenant and model), in memory or in Redis
    # Anthropic cache_control breakpoints added by the gateway: off | auto (when a prefix long
    # enough to cache was already sent within ttl_s, so the write is repaid by reads) | always.
    cache_control: Literal["off", "auto", "always"] = "auto"


class CacheConfig(_Strict):
    # A Redis of the caches' own (response cache and prefix index), apart from keys, budgets and counters;
    # default: the main `redis_url`
    redis_url: str | None = None
    response: CacheLayer = Field(default_factory=lambda: CacheLayer.model_validate({"ttl_s": 3600}))
    prefix: PrefixLayer = Field(default_factory=PrefixLayer)


class BudgetConfig(_Strict):
    """Virtual-key budgets and rate limits."""

    hold_ttl_s: float = Field(600, gt=0)  # a budget hold expires after this (above the longest request)
    fail_open: bool = False  # Redis down: refuse requests of keys with budgets (503) or admit them unchecked
    # settlements Redis (or the database) could not take yet (default: in the temp dir; next to the SQLite file)
    journal_path: str | None = None
    default_max_output_tokens: int = Field(4096, gt=0)  # worst-case output when neither request nor model says
    input_margin_pct: int = Field(10, ge=0)  # reserved on top of the counted input (other tokenisers count more)
    # A request whose worst case the remaining budget cannot pay gets its max_tokens lowered to what
    # it can pay, if that is at least this many tokens (else 429).
    min_capped_output_tokens: int = Field(16, gt=0)
    key_cache_ttl_s: float = Field(1.0, ge=0)  # how long a replica may use a key record before re-reading it
    gauge_interval_s: float = Field(15, gt=0)  # how often team budget gauges are refreshed
    # The spend forecast's burn rate: spend over the last this many seconds (gateway/access/forecast.py)
    forecast_window_s: int = Field(3600, gt=0)


class LedgerConfig(_Strict):
    """The spend ledger: one record per billed request (see gateway/ledger/store.py)."""

    # Days kept: PostgreSQL and SQLite delete older rows (default 400); Redis expires a day's stream
    # this many days after that day, memory drops older records (default 35).
    retention_days: int | None = Field(None, gt=0)
    max_per_day: int = Field(1_000_000, gt=0)  # Redis: per-day stream cap (approximate MAXLEN trim)
    max_memory_records: int = Field(10_000, gt=0)  # without Redis: the newest records kept here (~0.7 KB each)
    # Redis, PostgreSQL, SQLite: records (and, with database_url, settled spend) are written in batches this often
    flush_interval_s: float = Field(0.2, gt=0)
    batch_records: int = Field(1000, gt=0)  # PostgreSQL, SQLite: records per write (a full batch is written at once)
    max_queued: int = Field(100_000, gt=0)  # PostgreSQL, SQLite: records waiting in memory; more go to the journal
    behind_records: int = Field(10_000, gt=0)  # PostgreSQL, SQLite: more queued than this and /readyz says "behind"
    # PostgreSQL, SQLite: records not yet written (default: in the temp dir; next to the SQLite file)
    journal_path: str | None = None

    def kept_days(self, database: bool) -> int:
        """`retention_days`, else 400 days in PostgreSQL or SQLite (`database`) and 35 in Redis or memory."""
        return self.retention_days or (400 if database else 35)


class LimitsConfig(_Strict):
    """Bounds on what one request may ask for and on the work it may cause."""

    max_n: int = Field(8, ge=1)  # choices per request (`n`): each is billed and held for
    max_prompt_tokens: int = Field(2_000_000, gt=0)  # longer prompts get 413 before they are counted in full
    count_inline_bytes: int = Field(64 * 1024, ge=0)  # larger bodies are counted on a worker thread
    count_threads: int = Field(2, gt=0)  # threads that count large prompts
    count_queue: int = Field(16, ge=0)  # large prompts waiting for a thread; more get 503 (retry)
    count_cpu_s: float = Field(2.0, gt=0)  # CPU time one prompt's counting may take, else 413


class ServerConfig(_Strict):
    """`gateway serve`: what a slow or hostile client may hold."""

    header_timeout_s: float = Field(10, gt=0)  # a request's head must arrive within this
    body_timeout_s: float = Field(30, gt=0)  # and its body within this (408 otherwise)
    keep_alive_s: float = Field(5, gt=0)  # an idle keep-alive connection is closed after this
    max_header_bytes: int = Field(32 * 1024, ge=1024)  # a larger request head gets 431
    max_connections: int = Field(2048, gt=0)  # open connections per process; more get 503


# Fields of a request body that name where or as whom to call upstream: never forwarded, whatever
# the allow-lists say (litellm and proxying upstreams honour some of them).
FORBIDDEN_BODY_FIELDS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "organization", "project", "headers", "extra_headers",
    "custom_llm_provider", "aws_access_key_id", "aws_secret_access_key", "aws_region_name", "vertex_credentials",
    "vertex_project", "vertex_location", "azure_ad_token", "deployment_id",
})


class ConversationsConfig(_Strict):
    """Responses the gateway keeps for `previous_response_id` and `GET /v1/responses/{id}` (Redis
    when configured, else this process's memory), each visible to its own key or team only."""

    ttl_s: int = Field(30 * 86400, gt=0)  # as long as OpenAI keeps a stored response
    max_entries: int = Field(10_000, gt=0)  # the in-memory store's bound (oldest dropped first)


class DatabaseConfig(_Strict):
    """PostgreSQL, the system of record (with `database_url`)."""

    schema_name: str = Field("public", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")  # where the tables live
    pool_size: int = Field(10, gt=0)  # connections per process
    timeout_s: float = Field(5.0, gt=0)  # connecting and each statement
    migrate_on_start: bool = False  # apply pending migrations at start-up (else: `gateway db upgrade`)


class StorageConfig(_Strict):
    """Where keys, teams, settled spend and the ledger live without `database_url` and `redis_url`
    (with either, there: see `gateway.config.storage`)."""

    # auto: a SQLite file; memory: this process's memory (gone at restart). Unset: GATEWAY_STORAGE, else auto.
    backend: Literal["auto", "sqlite", "memory"] | None = None
    sqlite_path: str | None = None  # default: $XDG_DATA_HOME/llm-gateway/gateway.sqlite3 (~/.local/share/...)
    sqlite_timeout_s: float = Field(5.0, gt=0)  # a write waits this long for another process's transaction


class BatchesConfig(_Strict):
    """The Batch API (`/v1/files`, `/v1/batches`) for OpenAI-format upstreams (docs/batches.md)."""

    enabled: bool = True
    poll_interval_s: float = Field(30, gt=0)  # how often running upstream batches are checked
    max_file_bytes: int = Field(64 << 20, gt=0)  # a larger upload gets 413
    max_lines: int = Field(50_000, gt=0)  # requests per batch (OpenAI's own limit)
    completion_window: str = Field("24h", pattern=r"^[1-9][0-9]*h$")  # the window asked of the upstream
    hold_ttl_s: float = Field(26 * 3600, gt=0)  # a batch's budget hold lives this long: above the window
    file_ttl_s: int = Field(30 * 86400, gt=0)  # files and finished batches are kept this long

    @field_validator("hold_ttl_s")
    @classmethod
    def _outlives_window(cls, value: float, info: Any) -> float:
        window = info.data.get("completion_window")
        if isinstance(window, str) and value < int(window[:-1]) * 3600:
            raise ValueError(f"must be at least the completion window ({int(window[:-1]) * 3600} s): a batch's "
                             "budget hold must outlive the batch")
        return value


class GatewayConfig(_Strict):
    redis_url: str | None = None
    database_url: str | None = None  # PostgreSQL: keys, teams, settled spend and the ledger, durably
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)  # without either: SQLite (or memory)
    redis_prefix: str = Field("gw", min_length=1)  # every key the gateway writes starts with it
    redis_max_connections: int = Field(100, gt=0)  # per process; more commands at once wait for one
    redis_pool_timeout_s: float = Field(5.0, gt=0)  # how long a command may wait for a pooled connection
    master_key: str | None = None
    require_keys: bool = False
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    # /metrics and a detailed /readyz: with the master key or `metrics_token` only (default: as require_keys)
    metrics_require_key: bool | None = None
    metrics_token: str | None = None  # a bearer token for Prometheus scrapes (no other power)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[ModelConfig] = Field(min_length=1)
    tiers: dict[str, TierConfig] = {}
    routing: RoutingConfig = Field(default_factory=lambda: RoutingConfig.model_validate({}))
    cache: CacheConfig = Field(default_factory=CacheConfig)
    budgets: BudgetConfig = Field(default_factory=BudgetConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    conversations: ConversationsConfig = Field(default_factory=ConversationsConfig)
    batches: BatchesConfig = Field(default_factory=BatchesConfig)  # the Batch API


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float | Decimal) else str(value)


def _message(err: dict[str, Any]) -> str:
    kind, ctx = err["type"], {k: _num(v) for k, v in (err.get("ctx") or {}).items()}
    simple = {
        "missing": "is required",
        "extra_forbidden": "unknown field",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "greater_than": f"must be > {ctx.get('gt')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "too_short": "must not be empty",
        "string_too_short": "must not be empty",
        "literal_error": f"must be one of {ctx.get('expected')}",
    }
    if kind == "value_error":  # a validator's own sentence
        return str(err["msg"]).removeprefix("Value error, ")
    return simple.get(kind) or str(err["msg"][0].lower() + err["msg"][1:])


def _substitute(value: Any, path: str, problems: list[str]) -> Any:
    """Replace `${NAME}` / `${NAME:-default}`; a value that is only an unset reference is None."""
    if isinstance(value, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _ENV_REF.fullmatch(value)
    if whole and whole.group(1) not in os.environ and whole.group(2) is None:
        return None

    def repl(m: re.Match[str]) -> str:
        if m.group(1) in os.environ:
            return os.environ[m.group(1)]
        if m.group(2) is not None:
            return m.group(2)
        problems.append(f"{path}: environment variable {m.group(1)} is not set")
        return ""

    return _ENV_REF.sub(repl, value)


def parse_config(data: Any, source: str = "config") -> GatewayConfig:
    if not isinstance(data, dict):
        raise ConfigError(["(top level): must be a mapping"], source)
    problems: list[str] = []
    data = _substitute(data, "", problems)
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems += [f"{_path(e['loc'])}: {_message(dict(e))}" for e in exc.errors()]
        raise ConfigError(problems, source) from None
    if problems:
        raise ConfigError(problems, source)
    return config


def load_config(path: str | Path) -> GatewayConfig:
    text = Path(path).read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"(yaml): {exc}"], str(path)) from None
    return parse_config(data, str(path))
