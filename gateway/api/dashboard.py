"""`GET /dashboard`: one server-rendered HTML page (no JavaScript, no build step) with spend by
model, team and day and what routing and the response cache saved, all read from the spend
ledger, and each team's spend forecast (`gateway/access/forecast.py`). With a master key
configured it needs the key, as `Authorization: Bearer <master_key>` or `?key=<master_key>`;
`from` and `to` (UTC days, both included) as for /admin/spend."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse

from gateway.access.forecast import Forecast, forecast_teams, window_spend
from gateway.access.keys import Team
from gateway.api.admin import day_bounds, span
from gateway.errors import AuthenticationFailed
from gateway.ledger.report import Summary, summarise
from gateway.ledger.spend_stats_pg import PostgresSpendStats
from gateway.ledger.spend_stats_sqlite import SqliteSpendStats
from gateway.money.pricing import usd_text
from gateway.state import AppState

__all__ = ["render", "router"]

router = APIRouter()
_STYLE = """
body{font:14px system-ui,sans-serif;margin:2em;color:#222;background:#fafafa}
h1{font-size:20px}h2{font-size:16px;margin-top:1.5em}
.cards{display:flex;gap:1em;flex-wrap:wrap}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em 1.2em}
.card dt{color:#666;font-size:12px}.card dd{margin:0;font-size:20px;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;background:#fff;min-width:28em}td,th{padding:.3em .8em;border-bottom:1px solid #eee}
td.usd{text-align:right;font-variant-numeric:tabular-nums}th{text-align:left;color:#666;font-weight:normal}
.bar{background:#4a7bd0;height:.7em;border-radius:2px}
tr.runs-out td{color:#b00020}
"""


def _authorised(request: Request, state: AppState) -> None:
    master = state.settings.master_key
    if not master:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else request.query_params.get("key", "")
    if not hmac.compare_digest(given.encode(), master.encode()):
        raise AuthenticationFailed("the dashboard needs the master key: 'Authorization: Bearer <master_key>' or ?key=")


def _table(table_id: str, heading: str, rows: dict[str, int], by_key: bool = False) -> str:
    top = max(rows.values(), default=0) or 1
    items = sorted(rows.items()) if by_key else sorted(rows.items(), key=lambda kv: (-kv[1], kv[0]))
    body = "".join(
        f'<tr><td class="name">{escape(name)}</td><td class="usd">${usd_text(pico)}</td>'
        f'<td><div class="bar" style="width:{max(pico * 200 // top, 1)}px"></div></td></tr>'
        for name, pico in items)
    return (f'<h2>{heading}</h2><table id="{table_id}"><tr><th>{heading.split()[-1]}</th><th>spend (USD)</th>'
            f"<th></th></tr>{body or '<tr><td colspan=3>no spend</td></tr>'}</table>")


def _runs_out(forecast: Forecast) -> str:
    at = forecast.exhaustion_at
    if at is None:
        return "not at this rate"
    text = "now" if forecast.exhaustion_us == 0 else f"{at:%Y-%m-%d %H:%M:%S} UTC"
    return text + (" (before the period ends)" if forecast.runs_out_before_period_end else "")


def _forecast_table(forecasts: Sequence[tuple[Team, Forecast]], window_s: int) -> str:
    def usd(pico: int | None) -> str:
        return "—" if pico is None else f"${usd_text(pico)}"

    rows = "".join(
        f'<tr{" class=runs-out" if f.runs_out_before_period_end else ""}><td class="name">{escape(team.name)}</td>'
        f'<td class="usd">{usd(f.spend.budget)}</td><td>{team.budget_period}</td>'
        f'<td class="usd">{usd(f.spend.spent)}</td><td class="usd">{usd(f.rate_pico_per_hour)}</td>'
        f'<td class="usd">{usd(f.projected_period_pico)}</td><td>{_runs_out(f)}</td></tr>'
        for team, f in forecasts)
    return (f"<h2>Forecast</h2><p>Burn rate over the last {window_s} s, from the ledger.</p>"
            '<table id="forecast"><tr><th>team</th><th>budget (USD)</th><th>period</th><th>spent (USD)</th>'
            "<th>burn rate (USD/h)</th><th>projected at period end (USD)</th><th>runs out at</th></tr>"
            f"{rows or '<tr><td colspan=7>no teams</td></tr>'}</table>")


def render(summary: Summary, first: str, last: str, forecasts: Sequence[tuple[Team, Forecast]] = (),
           window_s: int = 3600) -> str:
    cards = "".join(
        f'<div class="card"><dt>{label}</dt><dd id="{card_id}">{value}</dd></div>'
        for card_id, label, value in (
            ("total", "spend (USD)", f"${usd_text(summary.spend)}"),
            ("requests", "requests", str(summary.requests)),
            ("routing-saved", "saved by routing (USD)", f"${usd_text(summary.routing_saved)}"),
            ("cache-saved", "saved by the response cache (USD)", f"${usd_text(summary.cache_saved)}"),
            ("cache-hits", "response-cache hits", str(summary.cache_hits)),
        ))
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>Gateway spend</title><style>{_STYLE}</style>"
        f"</head><body><h1>Spend {escape(first)} to {escape(last)} (UTC)</h1><dl class=cards>{cards}</dl>"
        + _table("by-model", "By model", summary.by_model) + _table("by-team", "By team", summary.by_team)
        + _table("by-day", "By day", summary.by_day, by_key=True) + _forecast_table(forecasts, window_s)
        + "<p>From the spend ledger; amounts are exact.</p></body></html>")


@router.get("/dashboard")
async def dashboard(request: Request) -> HTMLResponse:
    state: AppState = request.app.state.gw
    _authorised(request, state)
    first, last = span(request)
    await state.ledger.flush()
    bounds = day_bounds(first, last)
    stats = state.stats  # with PostgreSQL or SQLite: one SQL query over the ledger, not every record read here
    summary = await (stats.summary(*bounds) if isinstance(stats, PostgresSpendStats | SqliteSpendStats)
                     else summarise(state.ledger, *bounds))
    now, window_s = datetime.now(UTC), state.settings.budgets.forecast_window_s
    window = await window_spend(state.ledger, now, window_s)
    teams = sorted(await state.access.keys.list_teams(), key=lambda t: t.name)
    forecasts = await forecast_teams(teams, state.access.budgets, window, window_s, now)
    return HTMLResponse(render(summary, first.isoformat(), last.isoformat(), forecasts, window_s))
