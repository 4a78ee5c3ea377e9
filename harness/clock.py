"""The harness's one clock for stimuli and arrivals, and the wall clock for what people read.

Latency is always a difference of two `now_ns()` stamps taken in this process (CLOCK_MONOTONIC);
wall-clock times are for reports and the wire's `sent` fields, never for a measured figure.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ns() -> int:
    """Monotonic nanoseconds: the stamp of every stimulus and every arrival."""
    return time.monotonic_ns()


def utc_text() -> str:
    """Now in UTC, ISO 8601 with milliseconds and `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
