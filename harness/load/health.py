"""The generator's own health: a load run says something about the platform only if the generator kept its
schedule. So each locust process watches how late it sends (schedule lag, in an HdrHistogram), how late its
event loop wakes and how much of a core it uses while sending; `vtlab load` turns too much of either into a
harness fault, never a finding against the supplier.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import gevent

from harness.load import hist


class GeneratorHealth:
    """Schedule lag, event-loop lag and CPU of one locust process while its schedule runs."""

    def __init__(self, t0: int, end_sending: int) -> None:
        self.t0 = t0  # monotonic ns: the schedule's start and the end of sending (the window CPU counts in)
        self.end_sending = end_sending
        self.lag_hist = hist.new_histogram()
        self.cpu_samples: list[float] = []  # fraction of one core, per second, while sending
        self.loop_lag_max_ns = 0
        self._window_lag: list[int] = []  # this second's send lags, for the live line only

    def sent(self, lag: int) -> None:
        """One alarm sent `lag` ns after its intended instant."""
        hist.record(self.lag_hist, max(1, lag))
        if len(self._window_lag) < 100_000:
            self._window_lag.append(lag)

    def window_lag_p99_ms(self) -> float | None:
        """p99 send lag since the last call (the live line's), and a new window."""
        lag, self._window_lag = sorted(self._window_lag), []
        return round(lag[int(0.99 * (len(lag) - 1))] / 1e6, 3) if lag else None

    def watch(self, each_second: Callable[[float, int], None]) -> None:
        """Event-loop lag (how late a 50 ms sleep wakes) and CPU per second while the schedule runs;
        `each_second(cpu share, loop lag ns)` once a second. Runs until its greenlet is killed."""
        cpu0, wall0 = time.process_time(), time.monotonic()
        while True:
            t = time.monotonic_ns()
            gevent.sleep(0.05)
            lag = time.monotonic_ns() - t - 50_000_000
            now = time.monotonic_ns()
            if self.t0 <= now <= self.end_sending:
                self.loop_lag_max_ns = max(self.loop_lag_max_ns, lag)
            if time.monotonic() - wall0 >= 1.0:
                cpu1, wall1 = time.process_time(), time.monotonic()
                share = (cpu1 - cpu0) / (wall1 - wall0)
                if self.t0 <= now <= self.end_sending:
                    self.cpu_samples.append(share)
                cpu0, wall0 = cpu1, wall1
                each_second(share, lag)

    def summary(self) -> dict[str, Any]:
        """The node's final health figures (beside its encoded lag histogram)."""
        cpu = self.cpu_samples
        return {
            "cpu_mean": sum(cpu) / len(cpu) if cpu else None,
            "cpu_max": max(cpu) if cpu else None,
            "loop_lag_max_ms": self.loop_lag_max_ns / 1e6,
        }


def rss_mb() -> float | None:
    """This process's resident memory (Linux /proc), for memory per device."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
