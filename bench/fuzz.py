"""A bounded fuzz run of the chat and estimate endpoints: schemathesis generates request bodies
from an OpenAPI description of the chat request (valid ones, and "negative" ones that break the
schema in every way it knows: wrong types, missing fields, out-of-range values), sends each to a
real `gateway serve` (fake upstream behind it) and counts the statuses. Passes when no answer is
5xx and every 4xx is an OpenAI-shaped error.

    python bench/fuzz.py                       # 2,500 cases per endpoint and mode: 10,000 requests
    python bench/fuzz.py --cases 500           # a quick run

Needs `pip install schemathesis` (not a test dependency). The test suite's own property test
(`tests/test_request_fuzz.py`, hypothesis) runs 150 bodies per endpoint on every CI run.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from hypothesis import HealthCheck, given, settings
from procs import Procs

_MESSAGE = {
    "type": "object", "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"oneOf": [{"type": "string", "maxLength": 40}, {"type": "array", "maxItems": 3, "items": {
            "type": "object", "required": ["type"], "properties": {
                "type": {"type": "string", "enum": ["text", "image_url", "input_audio"]},
                "text": {"type": "string", "maxLength": 20},
                "image_url": {"type": "object", "required": ["url"], "properties": {
                    "url": {"type": "string"}, "detail": {"type": "string", "enum": ["low", "high", "auto"]}}},
                "input_audio": {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}},
            }}}]},
        "name": {"type": "string", "maxLength": 8},
        "tool_call_id": {"type": "string", "maxLength": 8},
        "tool_calls": {"type": "array", "maxItems": 2, "items": {
            "type": "object", "required": ["id", "type", "function"], "properties": {
                "id": {"type": "string"}, "type": {"type": "string", "enum": ["function"]},
                "function": {"type": "object", "required": ["name", "arguments"], "properties": {
                    "name": {"type": "string"}, "arguments": {"type": "string"}}}}}},
    },
}
_TOOL = {
    "type": "object", "required": ["type", "function"], "properties": {
        "type": {"type": "string", "enum": ["function"]},
        "function": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 8}, "description": {"type": "string"},
            "parameters": {"type": "object", "properties": {
                "type": {"type": "string", "enum": ["object"]},
                "properties": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                    "type": {"type": "string"}, "enum": {"type": "array", "items": {"type": "string"}}}}}}}}},
    },
}
CHAT_REQUEST = {
    "type": "object", "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "enum": ["fuzz-model", "fuzz-tier"]},
        "messages": {"type": "array", "minItems": 1, "maxItems": 3, "items": _MESSAGE},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 50},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 50},
        "n": {"type": "integer", "minimum": 1, "maximum": 2},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "tools": {"type": "array", "maxItems": 2, "items": _TOOL},
        "response_format": {"type": "object", "required": ["type"], "properties": {
            "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
            "json_schema": {"type": "object"}}},
        "modalities": {"type": "array", "items": {"type": "string", "enum": ["text", "audio"]}},
        "seed": {"type": "integer"},
    },
}
SPEC = {
    "openapi": "3.0.3", "info": {"title": "gateway chat", "version": "1"},
    "paths": {path: {"post": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": CHAT_REQUEST}}},
        "responses": {"200": {"description": "answer"}, "default": {"description": "error"}}}}
        for path in ("/v1/chat/completions", "/v1/estimate")},
}
CONFIG = {
    "max_body_bytes": 1 << 20, "cache": {"response": {"enabled": False}}, "storage": {"backend": "memory"},
    "models": [{"name": "fuzz-model", "provider": "openai", "upstream_model": "fuzz-up", "api_key": "sk-fuzz",
                "quality": 50, "max_input_tokens": 100_000,
                "pricing": {"input_per_mtok": 1, "output_per_mtok": 2}}],
    "tiers": {"fuzz-tier": {"min_quality": 0}},
}


def _check(response: requests.Response, problems: list[str], body: Any) -> None:
    if response.status_code >= 500:
        problems.append(f"{response.status_code} for {json.dumps(body)[:300]}: {response.text[:200]}")
    elif response.status_code >= 400:
        error = response.json().get("error") or {}
        if not (error.get("message") and error.get("type")):
            problems.append(f"{response.status_code} without an OpenAI-shaped error: {response.text[:200]}")


def fuzz(base_url: str, cases: int) -> dict[str, Any]:
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_dict(SPEC)
    statuses: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"{operation.path} {mode.value}"

            @settings(max_examples=cases, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def one(case: Any) -> None:
                response = case.call(base_url=base_url, session=session, timeout=30)
                statuses[f"{label} {response.status_code}"] += 1  # noqa: B023 (run before the loop moves on)
                _check(response, problems, case.body)

            one()
    return {"requests": sum(statuses.values()), "statuses": dict(sorted(statuses.items())), "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2500, help="per endpoint and mode (default 2500)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-fuzz-") as tmp:
        procs = Procs(Path(tmp))
        try:
            script = Path(tmp) / "script.json"
            script.write_text("{}")
            upstream = procs.start_upstream(script)
            config = {**CONFIG, "models": [{**CONFIG["models"][0], "api_base": f"{upstream.url}/v1"}]}
            (Path(tmp) / "gateway.yaml").write_text(yaml.safe_dump(config))
            gateway = procs.start_gateway(Path(tmp) / "gateway.yaml")
            started = time.monotonic()
            report = fuzz(gateway.url, args.cases)
            report["seconds"] = round(time.monotonic() - started, 1)
            tracebacks = gateway.log.read_text(errors="replace").count("Traceback")
        finally:
            procs.stop_all()
    report["tracebacks_in_log"] = tracebacks
    print(json.dumps(report, indent=2))
    return 1 if report["problems"] or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
