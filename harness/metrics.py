"""Metrics of a scenario, computed from its evidence rows alone (pure: no clocks, no I/O).

Time metrics (latencies) go into HdrHistograms at 3 significant digits (0.1 % resolution); counts are
derived from which stimuli were matched, how often a correlation id arrived and in which order.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from harness.units import Dimension

Row = Mapping[str, Any] | sqlite3.Row

HIGHEST_NS = 3_600_000_000_000  # one hour
SIGNIFICANT_DIGITS = 3

TIME_STATISTICS = ("p50", "p90", "p95", "p99", "p999", "max", "min", "mean", "count")
COUNT_METRICS: dict[str, str] = {
    "lost": "expected alarms or acknowledgements that never arrived",
    "duplicates": "extra copies of an alarm that had already arrived",
    "out_of_order": "alarms from one device that arrived after a later alarm from the same device",
    "late": "alarms or acknowledgements that arrived, but after the step's `within`",
    "misrouted": "alarms that arrived at the wrong response centre or for the wrong user or device",
    "altered": "alarms whose event, code or priority changed on the way",
    "insecure_accepted": "connections the platform accepted without the required TLS or credentials",
}
COUNT_METRICS["ambiguous"] = "arrivals that matched more than one alarm in flight (not guessed)"
COUNT_METRICS["unexpected"] = "alarms that arrived where none must (an event the contract says is not an alarm)"
RATE_METRICS: dict[str, str] = {
    "throughput": "distinct alarms delivered to the right place per second over the scenario"
}


def dimension(metric_kind: str, statistic: str) -> Dimension | None:
    """The unit family of `statistic` on a metric of `metric_kind` (time, count, rate); None if invalid."""
    if metric_kind == "time":
        if statistic == "count":
            return Dimension.COUNT
        return Dimension.TIME if statistic in TIME_STATISTICS else None
    if metric_kind == "count":
        return {"count": Dimension.COUNT, "rate": Dimension.RATIO}.get(statistic)
    if metric_kind == "rate":
        return {"rate": Dimension.RATE, "count": Dimension.COUNT}.get(statistic)
    return None


def statistics_for(metric_kind: str) -> list[str]:
    return {"time": list(TIME_STATISTICS), "count": ["count", "rate"], "rate": ["rate", "count"]}[metric_kind]


@dataclass(slots=True)
class Latency:
    """One time metric over every expectation of it: an HdrHistogram of the samples that arrived in place
    and in time, plus the censored ones (lost, misrouted, late, never tried) that count above any limit.

    A percentile whose rank falls among the censored samples is infinite: "99 % within 30 s" is about
    all alarms sent, not only those that arrived."""

    name: str
    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, HIGHEST_NS, SIGNIFICANT_DIGITS))
    samples: list[tuple[int, int]] = field(default_factory=list)  # (stimulus t_ns, latency ns), arrived in time
    late_samples: list[tuple[int, int]] = field(default_factory=list)  # arrived, but after `within`
    censored_by: dict[str, int] = field(default_factory=dict)  # outcome -> count
    before_stimulus: int = 0  # arrivals stamped before their stimulus (recorded as 0)

    def record(self, t_ns: int, latency_ns: int) -> None:
        """A real device observed by radio is stamped when vtlab hears it; the platform's own gateway may
        hear it first and deliver before that stamp. The true latency is then unknown but not negative:
        it is recorded as 0 and counted, never as a negative time."""
        if latency_ns < 0:
            self.before_stimulus += 1
            latency_ns = 0
        self.histogram.record_value(max(1, min(latency_ns, HIGHEST_NS)))
        self.samples.append((t_ns, latency_ns))

    def censor(self, outcome: str, t_ns: int | None = None, latency_ns: int | None = None) -> None:
        self.censored_by[outcome] = self.censored_by.get(outcome, 0) + 1
        if t_ns is not None and latency_ns is not None:
            self.late_samples.append((t_ns, latency_ns))

    @property
    def arrived(self) -> int:
        return int(self.histogram.get_total_count())

    @property
    def censored(self) -> int:
        return sum(self.censored_by.values())

    @property
    def n(self) -> int:
        return self.arrived + self.censored

    def why_censored(self) -> str:
        return ", ".join(f"{n} {o}" for o, n in sorted(self.censored_by.items()))

    def percentile(self, pct: float) -> float | None:
        """The value at `pct` over all n expectations; inf when it falls among the censored."""
        n, arrived = self.n, self.arrived
        if n == 0:
            return None
        rank = max(1, math.ceil(pct / 100.0 * n))
        if rank > arrived:
            return math.inf
        return float(self.histogram.get_value_at_percentile(100.0 * rank / arrived))

    def statistic(self, name: str) -> float | None:
        h = self.histogram
        if name == "count":
            return float(self.n)
        if self.n == 0:
            return None
        if name == "max":
            return math.inf if self.censored else float(h.get_max_value())
        if name == "min":
            return float(h.get_min_value()) if self.arrived else math.inf
        if name == "mean":
            return math.inf if self.censored else float(h.get_mean_value())
        return self.percentile(PERCENTILES[name])

    def summary(self) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {}
        for s in TIME_STATISTICS:
            v = self.statistic(s)
            out[s] = None if v is not None and math.isinf(v) else v
        out.update(n=self.n, arrived=self.arrived, not_arrived=self.censored)
        if self.before_stimulus:
            out["before_stimulus"] = self.before_stimulus
        return out


PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def percentile_of(values_ns: list[int], pct: float) -> float | None:
    """The percentile the judgement uses (HdrHistogram, 3 significant digits), for plots and reports."""
    lat = Latency("plot")
    for v in values_ns:
        lat.record(0, v)
    return lat.percentile(pct)


@dataclass(slots=True)
class ScenarioMetrics:
    latencies: dict[str, Latency] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_METRICS, 0))
    expected: int = 0  # expectations evaluated (denominator of rates)
    stimuli: int = 0
    arrivals: int = 0
    span_ns: int = 0
    lost_cids: list[str] = field(default_factory=list)
    duplicate_cids: list[str] = field(default_factory=list)
    out_of_order_cids: list[str] = field(default_factory=list)
    problem_details: list[str] = field(default_factory=list)

    def value(self, metric: str, statistic: str) -> float | None:
        if metric in self.latencies:
            return self.latencies[metric].statistic(statistic)
        if metric in COUNT_METRICS:
            count = self.counts[metric]
            if statistic == "rate":
                return count / self.expected if self.expected else None
            return float(count)
        if metric == "throughput":
            if statistic == "count":
                return float(self.arrivals)
            return self.arrivals / (self.span_ns / 1e9) if self.span_ns > 0 else None
        return None  # a time metric with no samples at all

    def to_json(self) -> dict[str, Any]:
        return {
            "latency": {name: lat.summary() for name, lat in self.latencies.items()},
            "counts": dict(self.counts),
            "expected": self.expected,
            "stimuli": self.stimuli,
            "arrivals": self.arrivals,
            "delivered": self.arrivals,
            "span_s": self.span_ns / 1e9,
            "lost_cids": self.lost_cids,
            "duplicate_cids": self.duplicate_cids,
            "out_of_order_cids": self.out_of_order_cids,
        }


def _payload(row: Row) -> object:
    try:
        return row["payload"]
    except (KeyError, IndexError):
        return None


def _key_of(payload: object) -> str | None:
    """The correlation key a link stored with a stimulus or an arrival (`_key`), if any."""
    if not isinstance(payload, str) or '"_key"' not in payload:
        return None
    try:
        value = json.loads(payload).get("_key")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def compute(
    stimuli: Iterable[Row],
    arrivals: Iterable[Row],
    matches: Iterable[Row],
    time_scale: float = 1.0,
) -> ScenarioMetrics:
    """Metrics from evidence rows (`stimuli`, `arrivals`, `matches` tables of one scenario).

    `time_scale` > 1: the scenario ran its operational durations that many times faster (a time-scaled
    scenario on the reference lab), so every measured duration is multiplied back into operational time."""
    m = ScenarioMetrics()
    stim = {row["cid"]: row for row in stimuli}
    m.stimuli = len(stim)
    arrival_rows = list(arrivals)
    arrival_by_id = {a["id"]: a for a in arrival_rows}

    # duplicates: a stimulus' correlation id (or, for protocols without one, its key) arriving more than
    # once at the same kind of probe
    by_key = {k: cid for cid, row in stim.items() if (k := _key_of(_payload(row))) is not None}
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for a in arrival_rows:
        cid = a["cid"]
        if cid not in stim and by_key:
            cid = by_key.get(_key_of(_payload(a)) or "")
        if cid in stim:
            seen[(a["kind"], cid)] += 1
    for (_, cid), n in seen.items():
        if n > 1:
            m.counts["duplicates"] += n - 1
            m.duplicate_cids.append(cid)

    # latencies (censored), loss, lateness, routing and content, order; one count per expectation
    ordered: list[tuple[int, str, int, str]] = []  # (arrival id, device, seq, cid) of matched alarms
    expectations: set[tuple[str, int]] = set()
    counted: set[tuple[str, int, str]] = set()
    delivered: dict[str, int] = {}  # distinct alarms delivered in place: cid -> arrival stamp
    for row in matches:
        key = (row["stimulus_cid"], row["step"])
        expectations.add(key)
        outcome = row["outcome"]
        lat = m.latencies.setdefault(row["metric"], Latency(row["metric"]))
        t0 = stim[row["stimulus_cid"]]["t_ns"] if row["stimulus_cid"] in stim else 0
        if outcome in ("ok", "altered", "refused"):
            lat.record(t0, int(row["latency_ns"] * time_scale))
        else:
            latency = row["latency_ns"]
            lat.censor(outcome, t0, int(latency * time_scale) if latency is not None else None)
        if outcome in ("ok", "late", "altered"):
            arrival = arrival_by_id.get(row["arrival_id"])
            if arrival is not None and arrival["kind"] == "alarm" and row["stimulus_cid"] not in delivered:
                ordered.append((row["arrival_id"], row["device"], row["seq"], row["stimulus_cid"]))
                delivered.setdefault(row["stimulus_cid"], arrival["t_ns"])
        if (*key, outcome) in counted:
            continue  # one expectation with two metrics (ack_latency and ack_roundtrip) counts once
        counted.add((*key, outcome))
        if outcome == "late":
            m.counts["late"] += 1
        elif outcome in ("altered", "misrouted", "ambiguous", "unexpected"):
            m.counts[outcome] += 1
            m.problem_details.append(f"{row['stimulus_cid']}: {row['detail']}")
        elif outcome == "accepted":
            m.counts["insecure_accepted"] += 1
            m.problem_details.append(f"{row['stimulus_cid']}: {row['detail']}")
        elif outcome == "lost":
            m.counts["lost"] += 1
            m.lost_cids.append(
                row["stimulus_cid"] if row["metric"] == "alarm_latency" else f"{row['stimulus_cid']} ({row['metric']})"
            )
    m.expected = len(expectations)
    m.arrivals = len(delivered)
    if stim and delivered:
        first = min(r["t_ns"] for r in stim.values())
        m.span_ns = max(delivered.values()) - first
    highest: dict[str, int] = {}
    for _, device, seq, cid in sorted(ordered):
        if seq < highest.get(device, -1):
            m.counts["out_of_order"] += 1
            m.out_of_order_cids.append(cid)
        highest[device] = max(seq, highest.get(device, -1))
    return m
