"""`GET /dashboard`: one server-rendered HTML page (no JavaScript, no build step) with spend by
model, team and day and what routing and the response cache saved, all read from the spend
ledger. With a master key configured it needs the key, as `Authorization: Bearer <master_key>`
or `?key=<master_key>`; `from` and `to` (UTC days, both included) as for /admin/spend."""

from __future__ import annotations

import hmac
from html import escape

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse

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


def render(summary: Summary, first: str, last: str) -> str:
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
        + _table("by-day", "By day", summary.by_day, by_key=True)
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
    return HTMLResponse(render(summary, first.isoformat(), last.isoformat()))
