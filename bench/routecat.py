"""The routing phase's model catalog: 17 priced, quality-scored models next to the three plain bench
models (20 in all) and one tier, plus the checks that the tier really routes where we expect.

Every catalog model is `provider: openai` on the fake upstream under its own upstream id, scripted
`{}` (default answer at once). Prices vary and do not follow quality; the cheapest two models are
below the tier's min_quality, so filtering matters, and the winner among the 15 that qualify has
both the lowest input and the lowest output price, so the ranking cannot flip when the gateway
learns the (same) output length of every model.
"""

from __future__ import annotations

import http.client
import re
from typing import Any

import orjson
from procs import CHAT_PATH, HEADERS, BenchError

TIER, MIN_QUALITY = "bench-tier", 60
# (name, quality, input $/Mtok, output $/Mtok)
CATALOG: tuple[tuple[str, int, float, float], ...] = tuple(
    (f"bench-q{q}", q, inp, out)
    for q, inp, out in (
        (50, 0.05, 0.20), (55, 0.08, 0.32), (60, 0.30, 1.20), (62, 0.25, 1.00), (65, 0.40, 1.60),
        (67, 0.12, 0.48), (70, 0.20, 0.80), (72, 0.60, 2.40), (75, 0.50, 2.00), (77, 0.80, 3.20),
        (80, 1.00, 4.00), (82, 0.75, 3.00), (85, 2.00, 8.00), (87, 1.25, 5.00), (90, 3.00, 12.00),
        (92, 2.50, 10.00), (95, 5.00, 20.00),
    )
)
QUALIFYING = tuple(name for name, q, _, _ in CATALOG if q >= MIN_QUALITY)
CATALOG_TEMPLATE = """\
  - name: {name}
    provider: openai
    upstream_model: {name}
    api_base: {base}/v1
    api_key: sk-bench
    quality: {quality}
    pricing: {{input_per_mtok: {inp}, output_per_mtok: {out}}}
"""
TIERS_YAML = f"tiers:\n  {TIER}: {{min_quality: {MIN_QUALITY}}}\n"


def expected_choice() -> str:
    """The qualifying model with the lowest input price; it must also have the lowest output price."""
    rows = [r for r in CATALOG if r[1] >= MIN_QUALITY]
    by_in, by_out = min(rows, key=lambda r: r[2]), min(rows, key=lambda r: r[3])
    assert by_in is by_out, "catalog design: the cheapest qualifier must win on input and output price"
    return by_in[0]


def models_yaml(base: str) -> str:
    return "".join(CATALOG_TEMPLATE.format(name=n, base=base, quality=q, inp=i, out=o) for n, q, i, o in CATALOG)


def request(port: int, path: str, body: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one POST on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=dict(HEADERS))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"POST {path} on port {port} failed: {exc!r}") from None
    finally:
        conn.close()


def check_route(gw_port: int, body_for: Any) -> dict[str, Any]:
    """Ask the tier (chat and /v1/estimate), then the chosen model by name; the tier must route to a
    catalog model and the by-name request must be served by that same model without routing."""
    status, headers, raw = request(gw_port, CHAT_PATH, body_for(TIER))
    chosen = headers.get("x-gateway-model")
    if status != 200 or chosen not in QUALIFYING or headers.get("x-gateway-tier") != TIER:
        raise BenchError(f"tier {TIER}: status {status}, x-gateway-model {chosen!r}, headers {headers}: {raw[:300]!r}")
    est_status, _, est_raw = request(gw_port, "/v1/estimate", body_for(TIER))
    est = orjson.loads(est_raw) if est_status == 200 else {}
    if est.get("model") != chosen:
        raise BenchError(f"/v1/estimate for {TIER} says {est.get('model')!r} ({est_status}), the request used {chosen}")
    status, by_name, raw = request(gw_port, CHAT_PATH, body_for(chosen))
    if status != 200 or by_name.get("x-gateway-model") != chosen or "x-gateway-tier" in by_name:
        raise BenchError(f"{chosen} by name: status {status}, headers {by_name}: {raw[:300]!r}")
    return {
        "tier": TIER, "min_quality": MIN_QUALITY, "catalog_models": 3 + len(CATALOG),
        "chosen": chosen, "expected": expected_choice(), "route_header": headers.get("x-gateway-route"),
        "candidates": len(est.get("candidates", [])), "excluded": len(est.get("excluded", [])),
        "ranking": [c["model"] for c in est.get("candidates", [])],
    }


def rescript(up_port: int, models: tuple[str, ...], behaviour: dict[str, Any]) -> None:
    """Change the fake upstream's behaviour for these upstream ids (its /_fake/script control endpoint)."""
    for model in models:
        status, _, raw = request(up_port, "/_fake/script", orjson.dumps({"model": model, **behaviour}))
        if status != 200:
            raise BenchError(f"re-scripting {model} on the fake upstream: {status} {raw[:200]!r}")


_REQUESTS = re.compile(r'^gateway_requests_total\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.e+]+)$', re.M)


def tier_requests(gw_port: int) -> dict[str, int]:
    """Requests the gateway served through the tier, by model that served them (from /metrics)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw_port, timeout=5.0)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"GET /metrics failed: {exc!r}") from None
    finally:
        conn.close()
    out: dict[str, int] = {}
    for m in _REQUESTS.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        if labels.get("tier") == TIER:
            out[labels["model"]] = out.get(labels["model"], 0) + int(float(m.group("value")))
    return out
