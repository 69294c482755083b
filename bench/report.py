"""Rows of the result table: percentiles, the printed table and ``bench/results.json``."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_PATH = Path(__file__).with_name("results.json")


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table. ``p50``/``p99`` are in ``unit``; ``ratio`` is the measure's headline ratio.
    A measure without percentiles shows ``figure`` in their place."""

    measure: str
    adapter: str
    unit: str = ""
    p50: float | None = None
    p99: float | None = None
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None
    note: str = ""
    figure: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _number(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit == "MB" or abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "—"}[passed]


def table(rows: Iterable[Row]) -> str:
    """A plain-text table; also valid GitHub Markdown."""
    header = ("measure", "adapter", "p50", "p99", "ratio", "target", "result")
    lines = [
        (
            r.measure,
            r.adapter,
            r.figure or _number(r.p50, r.unit),
            "" if r.figure else _number(r.p99, r.unit),
            "—" if r.ratio is None else f"{r.ratio:.2f}×",
            r.target or "—",
            _verdict(r.passed),
        )
        for r in rows
    ]
    widths = [max(len(str(cells[i])) for cells in [header, *lines]) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), rule, *(fmt(cells) for cells in lines)])


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }


def write_results(rows: Sequence[Row], *, settings: dict[str, Any], seconds: float, path: Path = RESULTS_PATH) -> None:
    """Write the run atomically (a half-written results.json never replaces a good one)."""
    body = {"machine": machine(), "settings": settings, "seconds": round(seconds, 1), "rows": [asdict(r) for r in rows]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
