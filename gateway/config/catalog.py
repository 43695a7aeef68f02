"""The built-in catalog served when no config file is given.

Prices, context windows and capabilities come from litellm's bundled price table; keys come from
each provider's usual environment variable. A model whose key is missing is listed as unavailable.
Default quality scores come from LMArena's 2025-12-11 text leaderboard (overall rating), each
with its source row.
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any

from gateway.config.schema import GatewayConfig, parse_config

__all__ = ["AUTO_TIER", "BUILTIN_MODELS", "DEFAULT_TIERS", "builtin_config"]

_ARENA = ("LMArena text leaderboard, category 'full', 2025-12-11 "
          "(shared/data/quality/lmarena_text_categories_2025-12-11.csv)")


def _score(rating: float) -> float:
    """Quality 0-100 from an arena rating: (rating - 1000) / 5, so 1500 -> 100 and 1250 -> 50."""
    return round((rating - 1000) / 5, 1)


def _arena(row: str, rating: float, note: str = "") -> tuple[dict[str, float], str]:
    """The quality map (overall and by category) of one arena row, and where it comes from.
    LMArena's categories are named for the gateway's: `if` is instruction_following, `hard_6`
    hard_prompts, `long_user` long."""
    scores = {"overall": _score(rating), **{c: _score(r) for c, r in _CATEGORIES_OF[row].items()}}
    return scores, f"{_ARENA}: '{row}' {rating:g} (and its category ratings){note}"


_CATEGORIES_OF = MappingProxyType({  # LMArena category -> rating, same file and date
    "gpt-5.1": {"coding": 1439, "math": 1398.2, "creative_writing": 1400.3, "instruction_following": 1415,
                "hard_prompts": 1432.3, "multiturn": 1429.8, "long": 1433.7},
    "gpt-5-high": {"coding": 1439.4, "math": 1404.4, "creative_writing": 1371, "instruction_following": 1389.3,
                   "hard_prompts": 1416.8, "multiturn": 1402.6, "long": 1393.9},
    "gpt-5-mini-high": {"coding": 1407.5, "math": 1386.7, "creative_writing": 1331.3,
                        "instruction_following": 1357.3, "hard_prompts": 1381.3, "multiturn": 1364.1, "long": 1361},
    "gpt-5-nano-high": {"coding": 1350.6, "math": 1326.3, "creative_writing": 1256.8, "instruction_following": 1302,
                        "hard_prompts": 1326.6, "multiturn": 1315.1, "long": 1314.8},
    "gpt-4.1-2025-04-14": {"coding": 1389.4, "math": 1369.4, "creative_writing": 1363.6,
                           "instruction_following": 1363.1, "hard_prompts": 1381.9, "multiturn": 1397.3,
                           "long": 1386.3},
    "gpt-4.1-mini-2025-04-14": {"coding": 1368.6, "math": 1346.4, "creative_writing": 1299.5,
                                "instruction_following": 1330.2, "hard_prompts": 1347.6, "multiturn": 1352.9,
                                "long": 1345.8},
    "gpt-4o-mini-2024-07-18": {"coding": 1289.1, "math": 1270.6, "creative_writing": 1269.1,
                               "instruction_following": 1257, "hard_prompts": 1266.1, "multiturn": 1284,
                               "long": 1288.8},
    "o3-2025-04-16": {"coding": 1408.3, "math": 1431.9, "creative_writing": 1360.6, "instruction_following": 1366.8,
                      "hard_prompts": 1402.1, "multiturn": 1405.6, "long": 1375},
    "o4-mini-2025-04-16": {"coding": 1367.8, "math": 1392.4, "creative_writing": 1300.2,
                           "instruction_following": 1321.5, "hard_prompts": 1350.4, "multiturn": 1350.3,
                           "long": 1317.7},
    "claude-opus-4-5-20251101": {"coding": 1498.1, "math": 1472.2, "creative_writing": 1434.8,
                                 "instruction_following": 1475.1, "hard_prompts": 1473, "multiturn": 1459,
                                 "long": 1490.5},
    "claude-sonnet-4-5-20250929": {"coding": 1475.8, "math": 1424.1, "creative_writing": 1423.8,
                                   "instruction_following": 1444.8, "hard_prompts": 1448.9, "multiturn": 1461.3,
                                   "long": 1467.3},
    "claude-haiku-4-5-20251001": {"coding": 1451, "math": 1386.8, "creative_writing": 1360.6,
                                  "instruction_following": 1406.6, "hard_prompts": 1412.8, "multiturn": 1403.4,
                                  "long": 1427.4},
    "deepseek-v3.2": {"coding": 1436, "math": 1438.5, "creative_writing": 1390.9, "instruction_following": 1400.7,
                      "hard_prompts": 1425, "multiturn": 1426.6, "long": 1422.1},
    "deepseek-v3.2-thinking": {"coding": 1436.4, "math": 1413.5, "creative_writing": 1406.5,
                               "instruction_following": 1396.9, "hard_prompts": 1416.1, "multiturn": 1410.8,
                               "long": 1412.2},
    "mistral-large-3": {"coding": 1441.8, "math": 1415.1, "creative_writing": 1387.5, "instruction_following": 1406,
                        "hard_prompts": 1437.5, "multiturn": 1426.3, "long": 1414.4},
    "mistral-medium-2508": {"coding": 1430.7, "math": 1414.4, "creative_writing": 1394.4,
                            "instruction_following": 1400.8, "hard_prompts": 1431.5, "multiturn": 1425.7,
                            "long": 1409.3},
    "mistral-small-2506": {"coding": 1363.5, "math": 1347.8, "creative_writing": 1306.1,
                           "instruction_following": 1309.4, "hard_prompts": 1335.2, "multiturn": 1345.5,
                           "long": 1330.6},
    "gemini-2.5-pro": {"coding": 1459.2, "math": 1459.3, "creative_writing": 1463, "instruction_following": 1442.2,
                       "hard_prompts": 1461, "multiturn": 1460.4, "long": 1458.1},
    "gemini-2.5-flash": {"coding": 1422.3, "math": 1415.7, "creative_writing": 1403.3,
                         "instruction_following": 1405.3, "hard_prompts": 1418, "multiturn": 1404.1, "long": 1424.2},
})


# (provider, name, (quality, where the quality comes from)). Every model here is priced in
# litellm's bundled table; models with an arena score but no price there (Gemini 3, Grok 4) are
# left out: a model with no price cannot be billed. Arena rows were matched to provider ids by
# hand; where the row is a variant (a reasoning effort, a dated release), the note says so.
BUILTIN_MODELS: tuple[tuple[str, str, tuple[dict[str, float], str]], ...] = (
    ("openai", "gpt-5.1", _arena("gpt-5.1", 1420.8)),
    ("openai", "gpt-5", _arena("gpt-5-high", 1407.3, " (high effort; the API's default is medium)")),
    ("openai", "gpt-5-mini", _arena("gpt-5-mini-high", 1375.2, " (high effort; the API's default is medium)")),
    ("openai", "gpt-5-nano", _arena("gpt-5-nano-high", 1320.7, " (high effort; the API's default is medium)")),
    ("openai", "gpt-4.1", _arena("gpt-4.1-2025-04-14", 1382.4)),
    ("openai", "gpt-4.1-mini", _arena("gpt-4.1-mini-2025-04-14", 1340.5)),
    ("openai", "gpt-4o-mini", _arena("gpt-4o-mini-2024-07-18", 1287.2)),
    ("openai", "o3", _arena("o3-2025-04-16", 1410.8)),
    ("openai", "o4-mini", _arena("o4-mini-2025-04-16", 1354.0)),
    ("anthropic", "claude-opus-4-5", _arena("claude-opus-4-5-20251101", 1446.4)),
    ("anthropic", "claude-sonnet-4-5", _arena("claude-sonnet-4-5-20250929", 1426.6)),
    ("anthropic", "claude-haiku-4-5", _arena("claude-haiku-4-5-20251001", 1384.2)),
    ("deepseek", "deepseek-chat", _arena("deepseek-v3.2", 1416.8, " (the API's deepseek-chat is V3.2)")),
    ("deepseek", "deepseek-reasoner", _arena("deepseek-v3.2-thinking", 1417.3,
                                             " (the API's deepseek-reasoner is V3.2 thinking)")),
    ("mistral", "mistral-large-latest", _arena("mistral-large-3", 1431.7)),
    ("mistral", "mistral-medium-latest", _arena("mistral-medium-2508", 1430.4)),
    ("mistral", "mistral-small-latest", _arena("mistral-small-2506", 1339.4)),
    ("gemini", "gemini-2.5-pro", _arena("gemini-2.5-pro", 1464.5)),
    ("gemini", "gemini-2.5-flash", _arena("gemini-2.5-flash", 1415.1)),
)

# Each tier has candidates from several providers: economy (60) from all five, standard (75)
# gpt-5-mini, gpt-4.1, Claude Haiku 4.5 and up, premium (84) GPT-5.1, Claude Sonnet and Opus 4.5,
# Mistral Large 3 and Gemini 2.5 Pro.
DEFAULT_TIERS = MappingProxyType({"economy": 60.0, "standard": 75.0, "premium": 84.0})
# The learned tier: per request, the cheapest model expected to keep 95 % of the best available
# model's quality (routing_policies/learned/; docs/routing.md, "The auto tier").
AUTO_TIER = MappingProxyType({"policy": "learned", "min_quality": 60.0, "quality_floor": 0.95})


def builtin_config() -> GatewayConfig:
    models: list[dict[str, Any]] = [
        {"name": name, "provider": provider, "quality": quality, "quality_source": source}
        for provider, name, (quality, source) in BUILTIN_MODELS
    ]
    tiers: dict[str, Any] = {t: {"min_quality": q} for t, q in DEFAULT_TIERS.items()}
    data: dict[str, Any] = {"models": models, "tiers": {**tiers, "auto": dict(AUTO_TIER)}}
    if os.environ.get("GATEWAY_MASTER_KEY"):
        data["master_key"] = os.environ["GATEWAY_MASTER_KEY"]
    return parse_config(data, "built-in catalog")
