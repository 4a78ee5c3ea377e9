"""The master's side of the figures: locust workers each measure their own devices, and one place must
add them up exactly. Progress sums for the live line; final histograms merged bucket by bucket (never
averaged percentiles) into merged.json, which `vtlab load` checks against the evidence. A lone node
writes the same files for itself, so the runner reads one format either way.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from locust.env import Environment
from locust.runners import WorkerRunner

from harness.load import hist

FINAL_MESSAGE = "vtlab_final"


def write_progress(out: Path, parts: list[dict[str, Any]]) -> None:
    """The live line's figures: sums, and the worst node's p99 over its last report interval."""

    def worst(key: str) -> float | None:
        values = [p[key] for p in parts if p.get(key) is not None]
        return max(values) if values else None

    data = {
        "wall": time.time(),
        "nodes": len(parts),
        "sent": sum(p["sent"] for p in parts),
        "delivered": sum(p["delivered"] for p in parts),
        "overdue": sum(p["overdue"] for p in parts),
        "connected": sum(p["connected"] for p in parts),
        "p99_ms": worst("p99_ms"),
        "lag_p99_ms": worst("lag_p99_ms"),
        "cpu": [p["cpu"] for p in parts],
    }
    tmp = out / "progress.json.tmp"
    tmp.write_text(json.dumps(data))
    tmp.replace(out / "progress.json")


def write_merged(out: Path, finals: list[dict[str, Any]]) -> None:
    """The master's (or the local node's) exact merge of every node's final histograms."""
    alarm = hist.merge(f["alarm_hist"] for f in finals)
    lag = hist.merge(f["lag_hist"] for f in finals)
    counts: Counter[str] = Counter()
    for f in finals:
        counts.update(f["counts"])
    data = {
        "nodes": [
            {k: v for k, v in f.items() if not k.endswith("_hist")}
            | {
                "alarm": hist.summary_ms(hist.decode(f["alarm_hist"])),
                "lag": hist.summary_ms(hist.decode(f["lag_hist"])),
            }
            for f in finals
        ],
        "counts": dict(counts),
        "alarm": hist.summary_ms(alarm),
        "lag": hist.summary_ms(lag),
        "alarm_hist": hist.encode(alarm),
        "lag_hist": hist.encode(lag),
    }
    tmp = out / "merged.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(out / "merged.json")


def report_final(environment: Environment, final: dict[str, Any], out: Path) -> None:
    """The node's final histograms to the master (or, alone, straight into merged.json in `out`)."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(FINAL_MESSAGE, final)
    else:
        write_merged(out, [final])
