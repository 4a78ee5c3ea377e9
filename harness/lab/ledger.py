"""The reference lab's ledger and its scheduler: the JSONL file the harness reads to learn what the lab did
(every fault applied, every alarm routed), and the one thread that runs what is due later (delayed alarms,
reorder releases, supervision deadlines, delayed FHIR pushes).

Ledger lines about an alarm carry `device`, `centre`, and how the harness finds the alarm again: `cid`
(the device's, MQTT) or `lab_cid` (the lab's id for an alarm that came without one), and `key`
`<device>:<code>:<zone>` whenever the alarm has a Contact ID zone (DC-09 and SCAIP always do).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.clock import now_ns, utc_text

__all__ = ["NS", "Ledger", "Scheduler"]

log = logging.getLogger("harness.lab.router")  # the lab's log names the router for its ledger and scheduler

NS = 1_000_000_000


class Ledger:
    """Append-only JSONL, one line per fault applied and per alarm routed, flushed per line."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("a", encoding="utf-8")

    def write(self, action: str, **fields: Any) -> None:
        line: dict[str, Any] = {"t": utc_text(), "action": action}
        line.update(fields)
        text = json.dumps(line, ensure_ascii=False, default=str)
        with self._lock:
            if self._fh is not None and not self._fh.closed:
                self._fh.write(text + "\n")
                self._fh.flush()
        log.debug("ledger %s", text)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()


class Scheduler:
    """Run callables at monotonic times (ns) on one thread; waits on a condition, never polls."""

    def __init__(self, clock: Callable[[], int] = now_ns) -> None:
        self._clock = clock
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="lab-scheduler", daemon=True)
        self._thread.start()

    def at(self, due_ns: int, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due_ns, next(self._seq), fn))
            self._cond.notify()

    def after(self, delay_ns: int, fn: Callable[[], None]) -> None:
        self.at(self._clock() + delay_ns, fn)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap:
                        wait_ns = self._heap[0][0] - self._clock()
                        if wait_ns <= 0:
                            break
                        self._cond.wait(timeout=wait_ns / NS)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # a scheduled task must never kill the lab
                log.exception("scheduled task failed")
