"""Plots of a scenario's evidence (matplotlib, Agg, SVG): latency distribution with percentiles against
the limit, latency over time, and throughput for load scenarios. Read from the evidence store only."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from typing import Any

from harness.evidence import EvidenceReader
from harness.report.i18n import Lang

_LIMIT_FITS = 4.0  # draw the limit only when it is at most this many times the largest sample


@dataclass(frozen=True, slots=True)
class Plot:
    name: str  # file stem, unique within a scenario
    title: str
    svg: str
    note: str = ""


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.family": "DejaVu Sans", "font.size": 9, "svg.fonttype": "path",
                         "svg.hashsalt": "vtlab", "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "vtlab"})
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return _self_contained(text[text.index("<svg"):])


def _self_contained(svg: str) -> str:
    """Inline-able SVG: no metadata block (it names outside namespaces), ids unique across plots."""
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    prefix = "v" + hashlib.sha1(svg.encode(), usedforsecurity=False).hexdigest()[:8] + "-"
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    if not ids:
        return svg
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', svg)
    return re.sub(r"#([A-Za-z_][\w.-]*)", lambda m: f"#{prefix}{m.group(1)}" if m.group(1) in ids else m.group(0), svg)


def _percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return 0.0
    k = min(len(sorted_ms) - 1, max(0, round(q / 100.0 * len(sorted_ms) + 0.5) - 1))
    return sorted_ms[k]


def _time_limits(criteria: list[dict[str, Any]], metric: str) -> list[tuple[str, float]]:
    """(text, ms) of the time limits of criteria on `metric`."""
    from harness.acceptance import CriterionDef

    out = []
    for c in criteria:
        if c.get("metric") != metric or c.get("dimension") != "time":
            continue
        try:
            lim, _ = CriterionDef.from_json(c).limits()
        except Exception:
            continue
        out.append((f"{c['statistic']} {lim.text}", lim.value / 1e6))
    return out


def scenario_plots(reader: EvidenceReader, scenario: str, criteria: list[dict[str, Any]], lang: Lang) -> list[Plot]:
    """All plots worth drawing for one scenario (may be empty)."""
    rows = reader.rows(
        "SELECT m.metric, m.latency_ns, m.outcome, s.t_ns AS t FROM matches m"
        " LEFT JOIN stimuli s ON s.cid = m.stimulus_cid AND s.scenario = m.scenario"
        " WHERE m.scenario = ? AND m.latency_ns IS NOT NULL ORDER BY s.t_ns", (scenario,))
    by_metric: dict[str, list[tuple[float, float | None]]] = {}
    for r in rows:
        by_metric.setdefault(r["metric"], []).append((r["latency_ns"] / 1e6, r["t"]))
    plots: list[Plot] = []
    t0 = None
    stim = reader.rows("SELECT MIN(t_ns) AS t0, COUNT(*) AS n FROM stimuli WHERE scenario = ?", (scenario,))
    if stim and stim[0]["t0"] is not None:
        t0 = stim[0]["t0"]
    for metric, samples in sorted(by_metric.items()):
        if metric == "ack_roundtrip":
            continue  # ack_latency tells the same story for the reader
        if len(samples) >= 3:
            plots.append(_latency_distribution(metric, [s for s, _ in samples], _time_limits(criteria, metric), lang))
        if len(samples) >= 5 and t0 is not None:
            plots.append(_latency_over_time(metric, samples, t0, lang))
    if stim and stim[0]["n"] >= 50 and t0 is not None:
        tp = _throughput(reader, scenario, t0, lang)
        if tp is not None:
            plots.append(tp)
    return plots


def _latency_distribution(metric: str, ms: list[float], limits: list[tuple[str, float]], lang: Lang) -> Plot:
    plt = _plt()
    data = sorted(ms)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7.2, 2.6))
    ax1.hist(data, bins=min(40, max(8, len(data) // 5)), color="#4C78A8", alpha=0.85)
    ax1.set_xlabel("ms")
    ax1.set_ylabel(lang.t("count"))
    n = len(data)
    ax2.plot(data, [(i + 1) / n for i in range(n)], color="#4C78A8", drawstyle="steps-post")
    ax2.set_xlabel("ms")
    ax2.set_ylabel("ECDF")
    colours = {"p50": "#54A24B", "p95": "#F58518", "p99": "#E45756"}
    for q, col in colours.items():
        v = _percentile(data, float(q[1:]))
        for ax in (ax1, ax2):
            ax.axvline(v, color=col, linestyle="--", linewidth=1)
        ax2.text(v, 0.02 + 0.12 * list(colours).index(q), f" {q} {lang.number(round(v, 2))}", color=col, fontsize=7)
    note = ""
    biggest = data[-1] if data else 0.0
    off = []
    for text, lim_ms in limits:
        if biggest > 0 and lim_ms <= biggest * _LIMIT_FITS:
            for ax in (ax1, ax2):
                ax.axvline(lim_ms, color="black", linewidth=1.5)
            ax2.text(lim_ms, 0.9, f" {text}", fontsize=7)
        else:
            off.append(text)
    if off:
        note = lang.t("limit_off_scale", limit=", ".join(off), max=f"{lang.number(round(biggest, 2))} ms")
    fig.suptitle(lang.t("latency_hist", metric=metric) + f" – n = {lang.number(n)}", fontsize=9)
    fig.tight_layout()
    return Plot(f"{metric}-distribution", lang.t("latency_hist", metric=metric), _svg(fig), note)


def _latency_over_time(metric: str, samples: list[tuple[float, float | None]], t0: int, lang: Lang) -> Plot:
    plt = _plt()
    pts = [((t - t0) / 1e9, ms) for ms, t in samples if t is not None]
    fig, ax = plt.subplots(figsize=(7.2, 2.2))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", markersize=3, color="#4C78A8")
    ax.set_xlabel("s" + (" (fra første stimulus)" if lang.code == "nb" else " (from first stimulus)"))
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    return Plot(f"{metric}-over-time", lang.t("latency_time", metric=metric), _svg(fig))


def _throughput(reader: EvidenceReader, scenario: str, t0: int, lang: Lang) -> Plot | None:
    arr = reader.rows("SELECT t_ns FROM arrivals WHERE scenario = ? AND kind = 'alarm' ORDER BY t_ns", (scenario,))
    sent = reader.rows("SELECT t_ns FROM stimuli WHERE scenario = ? ORDER BY t_ns", (scenario,))
    if not arr:
        return None
    plt = _plt()
    end = max(arr[-1]["t_ns"], sent[-1]["t_ns"])
    span = max(1.0, (end - t0) / 1e9)
    width = 0.5 if span <= 30 else 1.0
    nbins = int(span / width) + 1

    def rate(rows: list[Any]) -> list[float]:
        bins = [0] * nbins
        for r in rows:
            bins[min(nbins - 1, int((r["t_ns"] - t0) / 1e9 / width))] += 1
        return [b / width for b in bins]

    xs = [i * width for i in range(nbins)]
    fig, ax = plt.subplots(figsize=(7.2, 2.2))
    ax.step(xs, rate(sent), where="post", label="sendt" if lang.code == "nb" else "sent", color="#F58518")
    ax.step(xs, rate(arr), where="post", label="mottatt" if lang.code == "nb" else "received", color="#4C78A8")
    ax.set_xlabel("s")
    ax.set_ylabel("/s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return Plot("throughput", lang.t("throughput"), _svg(fig))
