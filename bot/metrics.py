"""The process's Prometheus metrics, on a ``CollectorRegistry`` the runtime owns (never the library's module-level
default registry: two runtimes in one process, as in the tests, keep separate counts).

``/metrics`` (bot/health.py) serves the registry. Every name starts with ``threadline_``. Besides the metrics it
keeps the little state ``/healthz`` reads: which adapters are connected and when OpenAI last answered.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds. A turn is a model call (seconds to minutes); the first text usually comes within a few seconds.
TURN_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
FIRST_TEXT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class TurnOutcome(enum.StrEnum):
    """How a message ended, the ``outcome`` label of ``threadline_turns_total``."""

    ANSWERED = "answered"  # the engine ran the turn to its end
    FAILED = "failed"  # a user-facing error, a bug, or the database could not take the message on
    STOPPED = "stopped"  # its user stopped it
    TIMED_OUT = "timed_out"  # THREADLINE_TURN_TIMEOUT_SECS ran out
    INTERRUPTED = "interrupted"  # this process shut down while it ran
    REFUSED = "refused"  # the sender may not use the bot there: no model call
    DUPLICATE = "duplicate"  # a repeated delivery: dropped


class Metrics:
    """The metric objects of one process and the calls that move them."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        registry = self.registry
        self._turns = Counter(
            "threadline_turns",
            "Messages handled, by platform and how they ended.",
            ["platform", "outcome"],
            registry=registry,
        )
        self._turn_seconds = Histogram(
            "threadline_turn_duration_seconds",
            "Seconds from a turn's start (its lane took it) to its end, waiting for the turn cap included.",
            ["platform"],
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self._first_text_seconds = Histogram(
            "threadline_time_to_first_text_seconds",
            "Seconds from a turn's start to the first text of its answer.",
            ["platform"],
            buckets=FIRST_TEXT_BUCKETS,
            registry=registry,
        )
        self._tokens = Counter(
            "threadline_tokens",
            "Tokens OpenAI billed, by kind: input (cached included), cached (the cached part of input), output.",
            ["platform", "model", "kind"],
            registry=registry,
        )
        self._openai_errors = Counter(
            "threadline_openai_errors",
            "OpenAI requests that failed, each attempt counted (SDK retries too). status: the HTTP status, or "
            "'none' when no response came; code: OpenAI's error code (else its type, else 'unknown'), or "
            "'timeout' / 'connection_error'.",
            ["code", "status"],
            registry=registry,
        )
        self._openai_last_success = Gauge(
            "threadline_openai_last_success_timestamp_seconds",
            "Unix time of the last OpenAI request answered without an error (0: none yet).",
            registry=registry,
        )
        self._refusals = Counter(
            "threadline_refusals",
            "Messages and commands refused before any model call, by platform and reason.",
            ["platform", "reason"],
            registry=registry,
        )
        self._adapter_connected = Gauge(
            "threadline_adapter_connected",
            "1 while the platform's adapter is connected, else 0.",
            ["platform"],
            registry=registry,
        )
        self._queued = Gauge(
            "threadline_turns_queued",
            "Messages this process accepted whose turn has not started yet.",
            registry=registry,
        )
        self._running = Gauge(
            "threadline_turns_running",
            "Turns running in this process (waiting for the turn cap included).",
            registry=registry,
        )
        self.adapters: dict[str, bool] = {}
        self.last_openai_success: float | None = None  # self._clock() time

    # --- turns ---------------------------------------------------------------------------------------------
    def turn(self, platform: str, outcome: TurnOutcome, seconds: float | None = None) -> None:
        self._turns.labels(platform=platform, outcome=outcome.value).inc()
        if seconds is not None:
            self._turn_seconds.labels(platform=platform).observe(seconds)

    def first_text(self, platform: str, seconds: float) -> None:
        self._first_text_seconds.labels(platform=platform).observe(seconds)

    def refused(self, platform: str, reason: str) -> None:
        """A message or command refused before any model call (``reason``: ``access``, a budget…)."""
        self._refusals.labels(platform=platform, reason=reason).inc()

    def track_turns(self, queued: Callable[[], int], running: Callable[[], int]) -> None:
        """Read the queue gauges from the turn handler whenever ``/metrics`` is scraped."""
        self._queued.set_function(queued)
        self._running.set_function(running)

    def tokens(self, platform: str, model: str, *, input_tokens: int, output_tokens: int, cached_tokens: int) -> None:
        for kind, count in (("input", input_tokens), ("output", output_tokens), ("cached", cached_tokens)):
            self._tokens.labels(platform=platform, model=model, kind=kind).inc(max(count, 0))

    # --- OpenAI --------------------------------------------------------------------------------------------
    def openai_success(self) -> None:
        self.last_openai_success = self._clock()
        self._openai_last_success.set_to_current_time()

    def openai_error(self, *, code: str, status: int | None) -> None:
        self._openai_errors.labels(code=code, status=str(status) if status is not None else "none").inc()

    def since_openai_success(self) -> float | None:
        """Seconds since OpenAI last answered without an error; None when it has not yet."""
        if self.last_openai_success is None:
            return None
        return max(self._clock() - self.last_openai_success, 0.0)

    # --- adapters ------------------------------------------------------------------------------------------
    def adapter(self, platform: str, *, connected: bool) -> None:
        self.adapters[platform] = connected
        self._adapter_connected.labels(platform=platform).set(1 if connected else 0)
