"""Prices per model, for the cost estimates of usage reports: USD per 1M tokens of input, cached input and output.

Set with ``THREADLINE_PRICES`` (JSON) or a ``[prices]`` table in threadline.toml::

    [prices."gpt-6.2-sol"]
    input = 1.25
    cached_input = 0.125  # optional: the input price when absent
    output = 10

A model's price is its own entry, else the longest entry that is a prefix of it followed by ``-`` (a dated
snapshot such as ``gpt-6.2-sol-2026-10-01`` costs what ``gpt-6.2-sol`` does). A model with no price has no
estimate: reports name it instead of guessing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PRICE_KEYS = ("input", "cached_input", "output")
_ACCEPTED = "accepted: input, cached_input, output, in USD per 1M tokens"
_EXAMPLE = '{"MODEL": {"input": 1.25, "cached_input": 0.125, "output": 10}}'


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1M tokens."""

    input: float
    output: float
    cached_input: float

    def cost(self, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> float:
        """USD for a turn's tokens (``input_tokens`` includes the cached ones, as OpenAI counts them)."""
        cached = min(max(cached_input_tokens, 0), input_tokens)
        return ((input_tokens - cached) * self.input + cached * self.cached_input + output_tokens * self.output) / 1e6


def parse_prices(value: Any) -> dict[str, ModelPrice]:
    """Check a price table (a mapping, or its JSON text); each problem is one ``ValueError`` naming the model,
    the key and what is accepted."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg}); expected e.g. {_EXAMPLE}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a table of models, e.g. {_EXAMPLE}, not {value!r}")
    prices: dict[str, ModelPrice] = {}
    for model, entry in value.items():
        if isinstance(entry, ModelPrice):
            prices[str(model)] = entry
            continue
        if not isinstance(entry, Mapping):
            raise ValueError(f"model {model!r}: expected a table of prices ({_ACCEPTED}), not {entry!r}")
        for key in entry:
            if key not in PRICE_KEYS:
                raise ValueError(f"model {model!r}: unknown key {key!r} ({_ACCEPTED})")
        numbers = {key: _number(model, key, entry[key]) for key in PRICE_KEYS if key in entry}
        for key in ("input", "output"):
            if key not in numbers:
                raise ValueError(f"model {model!r}: missing {key!r} ({_ACCEPTED})")
        prices[str(model)] = ModelPrice(
            input=numbers["input"], output=numbers["output"], cached_input=numbers.get("cached_input", numbers["input"])
        )
    return prices


def _number(model: Any, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"model {model!r}: {key} must be a number of USD per 1M tokens, not {value!r}")
    if value < 0:
        raise ValueError(f"model {model!r}: {key} must not be negative (got {value})")
    return float(value)


def price_for(prices: Mapping[str, ModelPrice], model: str) -> ModelPrice | None:
    """The model's own price, else the longest entry that prefixes it before a ``-``; None when there is none."""
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name + "-")]
    return prices[max(matches, key=len)] if matches else None
