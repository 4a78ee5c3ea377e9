"""Plots of a scenario's evidence (matplotlib, Agg, SVG): latency distribution with percentiles against
the limit, latency over time, and throughput for load scenarios. Read from the evidence store only.

The samples and the percentile lines come from `harness.metrics` (the HdrHistogram the judgement uses), so
a plot's p99 line is the p99 the verdict rests on. Names from the evidence (metric names, scenario ids)
never become paths as they are: `safe_stem` makes them file names, `write_plots` keeps every write inside
the run folder. Without matplotlib the report still renders, with a note where the plots would be.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.evidence import EvidenceReader
from harness.metrics import Latency, compute
from harness.report.i18n import Lang

_LIMIT_FITS = 4.0  # draw the limit only when it is at most this many times the largest sample
PERCENTILES = ("p50", "p95", "p99")
_PLAIN = re.compile(r"[a-z0-9_]{1,48}")
_PLOT_NAME = re.compile(r"[a-z0-9_][a-z0-9_-]{0,119}")
UNAVAILABLE = "plots-unavailable"


def safe_stem(text: str, max_len: int = 48) -> str:
    """A file-name stem for a name that came from input: the name itself when it is plain (lower-case
    letters, digits, `_`, at most `max_len`), else a slug cut to `max_len` plus a hash of the whole name,
    so two different names never share a file and `..`, `/`, NUL or 10 000 characters never reach a path."""
    if _PLAIN.fullmatch(text) and len(text) <= max_len:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9_]+", "-", text.lower())[:max_len].strip("-_")
    return f"{slug or 'x'}-{digest}"  # the `-` keeps it apart from every plain name


@dataclass(frozen=True, slots=True)
class Plot:
    name: str  # file stem, unique within a scenario; built with `safe_stem`, checked here
    title: str
    svg: str  # empty: nothing drawn (the note says why)
    note: str = ""
    marks: tuple[tuple[str, float], ...] = ()  # percentile lines drawn, in ms (the judged values)

    def __post_init__(self) -> None:
        if not _PLOT_NAME.fullmatch(self.name):
            raise ValueError(f"unsafe plot name {self.name!r}; build it with plots.safe_stem")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "svg.fonttype": "path",
            "svg.hashsalt": "vtlab",
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    return plt


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "vtlab"})
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return _self_contained(text[text.index("<svg") :])


def _self_contained(svg: str) -> str:
    """Inline-able SVG: no metadata block (it names outside namespaces), ids unique across plots."""
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    prefix = "v" + hashlib.sha1(svg.encode(), usedforsecurity=False).hexdigest()[:8] + "-"
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    if not ids:
        return svg
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', svg)
    return re.sub(r"#([A-Za-z_][\w.-]*)", lambda m: f"#{prefix}{m.group(1)}" if m.group(1) in ids else m.group(0), svg)


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


def _unavailable(lang: Lang, why: str) -> Plot:
    if lang.code == "nb":
        title, note = "Diagrammer ikke tegnet", f"Diagrammene er ikke tegnet: {why}. Tallene over er uberørt."
    else:
        title, note = "Plots not drawn", f"The plots were not drawn: {why}. The figures above are unaffected."
    return Plot(UNAVAILABLE, title, "", note)


def matplotlib_missing() -> str | None:
    """Why plots cannot be drawn here (None when they can)."""
    try:
        _plt()
    except ImportError as exc:
        return f"matplotlib is not installed ({exc.name or exc}); pip install matplotlib"
    return None


def is_capacity(definition: Mapping[str, Any]) -> bool:
    """A scenario the report's capacity section shows: a load run (`load:`) or one with a throughput criterion."""
    crits = definition.get("resolved_criteria") or definition.get("criteria") or []
    return bool(definition.get("load")) or any(
        isinstance(c, Mapping) and c.get("metric") == "throughput" for c in crits
    )


CAPACITY_METRIC = "alarm_latency"  # the latency the capacity section plots over time


def capacity_plot_names() -> frozenset[str]:
    """The plots of a capacity scenario that the capacity section shows (the scenario's section does not repeat
    them)."""
    return frozenset({"throughput", f"{CAPACITY_METRIC}-over-time", "generator"})


def scenario_plots(reader: EvidenceReader, scenario: str, criteria: list[dict[str, Any]], lang: Lang) -> list[Plot]:
    """All plots worth drawing for one scenario (may be empty); one note instead when matplotlib is missing.

    A capacity scenario (a load run, or a throughput criterion) always gets throughput and latency over time,
    a load run also the asked shape and the generator's health."""
    rec = next((r for r in reader.scenarios() if r.id == scenario), None)
    definition: dict[str, Any] = rec.definition if rec else {}
    capacity = is_capacity({**definition, "resolved_criteria": criteria or definition.get("resolved_criteria", [])})
    matches = reader.matches(scenario)
    metrics = compute(reader.stimuli(scenario), reader.arrivals(scenario), matches,
                      float(definition.get("time_scale", 1)))
    stim = reader.rows("SELECT MIN(t_ns) AS t0, COUNT(*) AS n FROM stimuli WHERE scenario = ?", (scenario,))
    t0: int | None = stim[0]["t0"] if stim and stim[0]["t0"] is not None else None
    jobs: list[Any] = []
    for metric, lat in sorted(metrics.latencies.items()):
        if metric == "ack_roundtrip":
            continue  # ack_latency tells the same story for the reader
        arrived = _arrived(lat)
        if len(arrived) >= 3:
            jobs.append(
                lambda m=metric, la=lat: _latency_distribution(
                    m, [ns / 1e6 for _, ns in _arrived(la)], _time_limits(criteria, m), lang, latency=la
                )
            )
        enough = 1 if capacity and metric == CAPACITY_METRIC else 5
        if t0 is not None and len([1 for t, _ in arrived if t >= t0]) >= enough:
            jobs.append(
                lambda m=metric, la=lat, start=t0: _latency_over_time(
                    m, _arrived(la), start, lang, _not_arrived(reader, scenario, m, matches), _time_limits(criteria, m)
                )
            )
    if stim and t0 is not None and (stim[0]["n"] >= 50 or (capacity and stim[0]["n"] >= 2)):
        asked = (definition.get("resolved_load") or {}).get("asked_per_second") if definition.get("load") else None
        jobs.append(lambda start=t0, a=asked: _throughput(reader, scenario, start, lang, a))
    if definition.get("load") and t0 is not None:
        jobs.append(lambda start=t0: _generator(reader, scenario, start, definition, lang))
    if not jobs:
        return []
    missing = matplotlib_missing()
    if missing:
        return [_unavailable(lang, missing)]
    return [p for p in (job() for job in jobs) if p is not None]


def _not_arrived(reader: EvidenceReader, scenario: str, metric: str, matches: list[Any]) -> list[int]:
    """Stimulus times (t_ns) of the expectations of `metric` that never arrived in place (lost, misrouted,
    ambiguous, not reached): they have no latency to draw, so they are marked above the samples."""
    stim = {r["cid"]: r["t_ns"] for r in reader.rows("SELECT cid, t_ns FROM stimuli WHERE scenario = ?", (scenario,))}
    out = []
    for m in matches:
        if m["metric"] == metric and m["latency_ns"] is None and m["outcome"] not in ("ok", "altered", "refused"):
            t = stim.get(m["stimulus_cid"])
            if t is not None:
                out.append(int(t))
    return sorted(out)


def _arrived(latency: Latency) -> list[tuple[int, int]]:
    """(stimulus t_ns, latency ns) of every sample that arrived, in time or late, in stimulus order."""
    return sorted([*latency.samples, *getattr(latency, "late_samples", [])])


def _marks(latency: Latency) -> tuple[tuple[str, float], ...]:
    """The judged percentiles (harness.metrics.Latency, as the criteria see them), in ms; inf when the
    percentile falls among the alarms that did not arrive in time."""
    out = []
    for q in PERCENTILES:
        v = latency.statistic(q)
        if v is not None:
            out.append((q, v / 1e6))
    return tuple(out)


def _latency_distribution(
    metric: str, ms: list[float], limits: list[tuple[str, float]], lang: Lang, latency: Latency | None = None
) -> Plot:
    """Histogram and ECDF of `ms`, with the judged percentiles of `latency` (by default: of `ms` alone)."""
    if latency is None:
        latency = Latency(metric)
        for v in ms:
            latency.record(0, round(v * 1e6))
    marks = _marks(latency)
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
    above = []
    for i, (q, v) in enumerate(marks):
        if math.isinf(v):
            above.append(q)
            continue
        col = colours.get(q, "#444")
        for ax in (ax1, ax2):
            ax.axvline(v, color=col, linestyle="--", linewidth=1)
        ax2.text(v, 0.02 + 0.12 * i, f" {q} {lang.number(round(v, 2))}", color=col, fontsize=7)
    notes = []
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
        notes.append(lang.t("limit_off_scale", limit=", ".join(off), max=f"{lang.number(round(biggest, 2))} ms"))
    not_arrived = getattr(latency, "censored", 0)
    if above:
        qs, total = ", ".join(above), f"{latency.statistic('count') or 0:.0f}"
        if lang.code == "nb":
            notes.append(
                f"{qs} ligger blant alarmene som ikke kom fram i tide ({not_arrived} av {total}), "
                "over enhver grense; ikke tegnet inn."
            )
        else:
            notes.append(
                f"{qs} falls among the alarms that did not arrive in time ({not_arrived} of {total}), "
                "above any limit; not drawn."
            )
    title = lang.t("latency_hist", metric=metric)
    counts = f" – n = {lang.number(n)}"
    if not_arrived:
        counts += f" + {lang.number(not_arrived)} " + ("ikke i tide" if lang.code == "nb" else "not in time")
    fig.suptitle(title + counts, fontsize=9)
    fig.tight_layout()
    return Plot(f"{safe_stem(metric)}-distribution", title, _svg(fig), " ".join(notes), marks)


def _latency_over_time(
    metric: str,
    samples: list[tuple[int, int]],
    t0: int,
    lang: Lang,
    lost: Sequence[int] = (),
    limits: Sequence[tuple[str, float]] = (),
) -> Plot:
    """`samples`: (stimulus t_ns, latency ns), as harness.metrics.Latency keeps them (late ones included);
    `lost`: stimulus times of expectations that never arrived, drawn as marks along the top."""
    plt = _plt()
    pts = [((t - t0) / 1e9, ns / 1e6) for t, ns in samples if t >= t0]
    fig, ax = plt.subplots(figsize=(7.2, 2.4))
    ax.plot(
        [p[0] for p in pts],
        [p[1] for p in pts],
        ".",
        markersize=3,
        color="#4C78A8",
        label=("ankommet" if lang.code == "nb" else "arrived") + f" ({lang.number(len(pts))})",
    )
    top = max([p[1] for p in pts], default=1.0)
    drawn = [(text, ms) for text, ms in limits if ms <= max(top, 1e-9) * _LIMIT_FITS]
    for text, ms in drawn:
        ax.axhline(ms, color="black", linewidth=1.2)
        ax.text(0, ms, f" {text}", fontsize=7, va="bottom")
        top = max(top, ms)
    if lost:
        y = top * 1.08 if top > 0 else 1.0
        ax.plot(
            [(t - t0) / 1e9 for t in lost],
            [y] * len(lost),
            "x",
            color="#E45756",
            markersize=5,
            label=lang.t("not_arrived_value") + f" ({lang.number(len(lost))})",
        )
    ax.set_xlabel("s" + (" (fra første stimulus)" if lang.code == "nb" else " (from first stimulus)"))
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return Plot(f"{safe_stem(metric)}-over-time", lang.t("latency_time", metric=metric), _svg(fig))


def _throughput(
    reader: EvidenceReader, scenario: str, t0: int, lang: Lang, asked: Sequence[float] | None = None
) -> Plot | None:
    """Sent and received alarms per second over the scenario; for a load run also the rate its shape asked for
    (the schedule's alarms per second, from the scenario definition in the store)."""
    arr = reader.rows("SELECT t_ns FROM arrivals WHERE scenario = ? AND kind = 'alarm' ORDER BY t_ns", (scenario,))
    sent = reader.rows("SELECT t_ns FROM stimuli WHERE scenario = ? ORDER BY t_ns", (scenario,))
    if not arr and not asked:
        return None
    plt = _plt()
    end = max([r["t_ns"] for r in arr[-1:]] + [sent[-1]["t_ns"]])
    span = max(1.0, (end - t0) / 1e9, float(len(asked or [])))
    width = 1.0 if asked or span > 30 else (0.5 if span > 5 else 0.1)
    nbins = int(span / width) + 1

    def rate(rows: list[Any]) -> list[float]:
        bins = [0] * nbins
        for r in rows:
            bins[min(nbins - 1, max(0, int((r["t_ns"] - t0) / 1e9 / width)))] += 1
        return [b / width for b in bins]

    xs = [i * width for i in range(nbins)]
    fig, ax = plt.subplots(figsize=(7.2, 2.4))
    if asked:
        ax.step(
            range(len(asked)),
            asked,
            where="post",
            color="black",
            linewidth=1.2,
            linestyle="--",
            label="bestilt" if lang.code == "nb" else "asked",
        )
    ax.step(xs, rate(sent), where="post", label="sendt" if lang.code == "nb" else "sent", color="#F58518")
    ax.step(xs, rate(arr), where="post", label="mottatt" if lang.code == "nb" else "received", color="#4C78A8")
    ax.set_xlabel("s")
    ax.set_ylabel("/s")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return Plot("throughput", lang.t("shape_asked") if asked else lang.t("throughput"), _svg(fig))


def send_lags(reader: EvidenceReader, scenario: str) -> list[tuple[int, int]]:
    """(intended t_ns, send lag ns) of a load run's alarms: the lag the generator recorded with each stimulus."""
    out = []
    for r in reader.rows("SELECT t_ns, payload FROM stimuli WHERE scenario = ? ORDER BY t_ns", (scenario,)):
        if '"_send_lag_ns"' not in r["payload"]:
            continue
        try:
            lag = json.loads(r["payload"]).get("_send_lag_ns")
        except ValueError:
            continue
        if isinstance(lag, int | float):
            out.append((int(r["t_ns"]), int(lag)))
    return out


def generator_samples(run_dir: Path) -> list[dict[str, Any]]:
    """The load generator's own samples (CPU, loop lag, connected devices) from the run folder's
    load/capacity.json, which `vtlab load` writes and the manifest covers; [] when there is none."""
    try:
        data = json.loads((run_dir / "load" / "capacity.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    gen = data.get("generator") if isinstance(data, dict) else None
    return [g for g in gen if isinstance(g, dict)] if isinstance(gen, list) else []


def _generator(
    reader: EvidenceReader, scenario: str, t0: int, definition: Mapping[str, Any], lang: Lang
) -> Plot | None:
    """Send lag over the schedule (from the stimuli) and CPU per generator process over time (its samples)."""
    from datetime import datetime

    lags = send_lags(reader, scenario)
    samples = [g for g in generator_samples(reader.path.parent) if g.get("cpu") is not None and g.get("wall")]
    if not lags and not samples:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7.2, 2.4))
    ax1.plot([(t - t0) / 1e9 for t, _ in lags], [v / 1e6 for _, v in lags], ".", markersize=2, color="#4C78A8")
    load = definition.get("load") or {}
    try:
        from harness.units import parse_duration

        max_lag_ms = parse_duration(str(load.get("max_lag", "100ms"))) / 1e6
        ax1.axhline(max_lag_ms, color="black", linewidth=1.2)
        ax1.text(0, max_lag_ms, f" max_lag {load.get('max_lag', '100ms')}", fontsize=7, va="bottom")
    except Exception:
        pass
    ax1.set_xlabel("s")
    ax1.set_ylabel("ms")
    ax1.set_title("forsinkelse i sendeplanen" if lang.code == "nb" else "schedule lag", fontsize=8)
    ax1.set_ylim(bottom=0)

    def seconds(wall: str) -> float:
        return datetime.fromisoformat(wall.replace("Z", "+00:00")).timestamp()

    try:
        start = min(seconds(str(g["wall"])) for g in samples) if samples else 0.0
        for node in sorted({str(g.get("node")) for g in samples}):
            mine = [g for g in samples if str(g.get("node")) == node]
            ax2.plot(
                [seconds(str(g["wall"])) - start for g in mine],
                [float(g["cpu"]) * 100 for g in mine],
                "-",
                linewidth=1,
                label=node,
            )
    except (ValueError, TypeError):
        pass
    ax2.set_xlabel("s")
    ax2.set_ylabel("% CPU")
    ax2.set_title("CPU per generatorprosess" if lang.code == "nb" else "CPU per generator process", fontsize=8)
    ax2.set_ylim(bottom=0)
    if samples:
        ax2.legend(fontsize=6)
    fig.tight_layout()
    return Plot("generator", lang.t("lag_time"), _svg(fig))


def write_plots(run_dir: Path, plots: Mapping[str, Sequence[Plot]]) -> list[Path]:
    """Write each drawn plot to RUN_DIR/plots/<scenario stem>/<plot name>.svg and return the paths.

    Every target is checked to lie inside the run folder with no symlink on the way (InputError otherwise),
    and written through a new temporary file renamed into place, so a link planted at the target is
    replaced, never followed. A file whose content is unchanged is left alone."""
    root = run_dir.resolve()
    written: list[Path] = []
    for sid, ps in plots.items():
        folder = Path("plots") / safe_stem(sid)
        for p in ps:
            if not p.svg:
                continue
            if not _PLOT_NAME.fullmatch(p.name):  # a Plot built around its own check
                raise InputError(f"unsafe plot name {p.name!r}", place=str(run_dir))
            target = inside(root, folder / f"{p.name}.svg")
            data = p.svg.encode("utf-8")
            if target.is_file() and not target.is_symlink() and target.read_bytes() == data:
                written.append(target)
                continue
            write_inside(root, target, data)
            written.append(target)
    return written


def inside(root: Path, rel: Path) -> Path:
    """`root/rel` after checking that it stays inside `root` (already resolved): `rel` relative, without
    `..`, and no existing part of the way a symlink. Creates the missing folders."""
    if rel.is_absolute() or any(part in ("", ".", "..") for part in rel.parts) or "\0" in str(rel):
        raise InputError(f"refusing to write outside the run folder: {str(rel)!r}", place=str(root))
    cur = root
    for part in rel.parts[:-1]:
        cur = cur / part
        if cur.is_symlink() or (cur.exists() and not cur.is_dir()):
            raise InputError(
                f"{cur.relative_to(root)} is a link or not a folder; refusing to write through it",
                place=str(root),
                fix="remove it (links are never evidence)",
            )
        cur.mkdir(exist_ok=True)
    target = cur / rel.parts[-1]
    if not target.parent.resolve().is_relative_to(root) or target.parent.resolve() != target.parent:
        raise InputError(f"refusing to write outside the run folder: {str(rel)!r}", place=str(root))
    return target


def write_inside(root: Path, target: Path, data: bytes) -> None:
    """Write `data` to `target` (inside `root`) through a fresh temporary file and an atomic rename."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
