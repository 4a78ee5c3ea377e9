"""The acceptance report's capacity section, from a load run's folder alone (nothing is re-run).

`capacity_section(run_dir)` returns plain data for the report template: the shape asked for against the
one delivered (alarms per second, by intended send second), delivered and not delivered, p99 by send
second, and the generator's health (send lag, CPU, memory, connected devices, harness faults).
`capacity_plot(section, path)` draws it (matplotlib, the report extra) for the HTML/PDF report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.load.runner import LOAD_DIR


def capacity_section(run_dir: Path) -> dict[str, Any] | None:
    """The capacity section of `run_dir`, or None when the run was not a load run."""
    path = Path(run_dir) / LOAD_DIR / "capacity.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    merged = data.get("merged") or {}
    nodes = data.get("nodes") or []
    asked, sent = data.get("asked_per_second", []), data.get("sent_per_second", [])
    seconds = max(len(asked), len(sent))
    generator = data.get("generator", [])
    cpu = [g["cpu"] for g in generator if g.get("cpu") is not None]
    return {
        "shape": data.get("shape"),
        "devices": data.get("devices"),
        "seconds": list(range(seconds)),
        "asked_per_second": asked + [0.0] * (seconds - len(asked)),
        "sent_per_second": sent + [0] * (seconds - len(sent)),
        "delivered_by_send_second": data.get("delivered_by_send_second", []),
        "not_delivered_by_send_second": data.get("not_delivered_by_send_second", []),
        "p99_ms_by_send_second": data.get("p99_ms_by_send_second", []),
        "asked_total": round(sum(asked)),
        "sent_total": sum(sent),
        "alarm_latency_ms": merged.get("alarm"),
        "send_lag_ms": merged.get("lag"),
        "generator": {
            "nodes": len(nodes),
            "cpu_max": max(cpu) if cpu else None,
            "cpu_mean_while_sending": [n.get("cpu_mean") for n in nodes],
            "loop_lag_max_ms": max((n.get("loop_lag_max_ms") or 0 for n in nodes), default=None),
            "rss_mb_max": max((g.get("rss_mb") or 0 for g in generator), default=None),
            "connected_max": max((g.get("connected") or 0 for g in generator), default=None),
        },
        "counts": merged.get("counts", {}),
    }


def capacity_plot(section: dict[str, Any], path: Path) -> Path:
    """Asked vs sent alarms per second, and p99 latency by send second (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    x = section["seconds"]
    top.step(x, section["asked_per_second"], where="post", label="asked (alarms/s)")
    top.step(x, section["sent_per_second"], where="post", label="sent (alarms/s)")
    delivered = section["delivered_by_send_second"]
    top.step(list(range(len(delivered))), delivered, where="post", label="delivered (by send second)")
    top.legend(loc="upper right", fontsize=8)
    top.set_ylabel("alarms/s")
    p99 = section["p99_ms_by_send_second"]
    bottom.plot([i for i, v in enumerate(p99) if v is not None], [v for v in p99 if v is not None], marker=".")
    bottom.set_ylabel("p99 latency (ms)")
    bottom.set_xlabel("second of the schedule")
    fig.suptitle(f"{section['shape']}, {section['devices']} devices")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["capacity_plot", "capacity_section"]
