"""`vtlab load`: run one load scenario with locust against the lab, and judge it like any scenario.

This process (never gevent-patched) owns the run: the folder and evidence store (harness.session), the
target (the embedded reference lab with a fleet lab file, or the supplier's platform), the locust
processes (one, or a master and workers on loopback), and the judgement. Locust processes append what
happens to `run_dir/load/node-*.jsonl`; this process copies those lines into the evidence store while
the run goes on (stimuli with their intended send times, arrivals, matches, findings), prints a live
progress line, and afterwards judges the scenario from the evidence alone, exactly as `vtlab run` does,
so summary.json and the signed report treat a load run like any other.

A run is `harness_fault` (so the run is incomplete, never a supplier deviation) when the generator fell
behind its own schedule (p99 send lag above `max_lag`, or a generator process above `max_cpu`), when
the locust processes did not finish in time, when the merged histograms disagree with the evidence, or
when the reference lab died. Every load run stops by itself: locust's own run time, then a hard deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.acceptance import CriterionDef, judge
from harness.contract import find_contract, load_contract
from harness.errors import InputError
from harness.evidence import EvidenceReader, EvidenceStore, Match
from harness.labfile import Lab, load_lab
from harness.load import hist
from harness.load.centres import listener_addresses, open_listeners
from harness.load.fleet import JOB_FILE, Job, fleet_devices, fleet_lab, make_job
from harness.load.scenario import STORM_METRIC, LoadPlan, load_load_scenario
from harness.metrics import compute
from harness.outcomes import Outcome, ScenarioStatus
from harness.run.folder import ROOT

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LOAD_DIR = "load"


@dataclass(slots=True)
class LoadOptions:
    """What `vtlab load` was asked (None: the scenario's own value)."""

    users: int | None = None
    rate: str | None = None
    duration: str | None = None
    workers: int = 0
    ui: bool = False
    run_id: str | None = None
    report_dir: Path = Path("reports")
    faults: str | None = None
    contract: Path | None = None
    argv: list[str] | None = None
    startup_s: float | None = None
    direct: bool = False  # benchmarks only: no router, probes read the devices' own topic
    progress: Callable[[str], None] | None = None
    on_started: Callable[[Any, Job], None] | None = None  # tests: the target and job once locust runs


@dataclass(slots=True)
class LoadResult:
    run_dir: Path
    status: ScenarioStatus
    summary: dict[str, Any]
    merged: dict[str, Any] | None
    faults: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _overrides(opts: LoadOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if opts.users is not None:
        out["devices"] = opts.users
    if opts.rate is not None:
        out["rate"] = opts.rate
    if opts.duration is not None:
        out["duration"] = opts.duration
    return out


class Ingest:
    """Copies the locust nodes' JSONL lines into the evidence store as they are written."""

    def __init__(self, out_dir: Path, ev: EvidenceStore, scenario: str) -> None:
        self.out_dir = out_dir
        self.ev = ev
        self.scenario = scenario
        self._offsets: dict[Path, int] = {}
        self._arrivals: dict[tuple[str, int], int] = {}
        self.counts: dict[str, int] = {}
        self.faults: list[str] = []
        self.finals: dict[str, dict[str, Any]] = {}
        self.gen: list[dict[str, Any]] = []
        self.stimuli_t: list[int] = []

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def poll(self) -> int:
        n = 0
        for path in sorted(self.out_dir.glob("node-*.jsonl")):
            offset = self._offsets.get(path, 0)
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                continue
            complete = data[: data.rfind(b"\n") + 1]
            self._offsets[path] = offset + len(complete)
            for raw in complete.splitlines():
                try:
                    line = json.loads(raw)
                except ValueError:
                    self._count("bad_lines")
                    continue
                self._one(path.stem, line)
                n += 1
        return n

    def _one(self, node: str, d: dict[str, Any]) -> None:
        k, sc, ev = d.get("k"), self.scenario, self.ev
        if k == "stim":
            payload = {
                **d["p"],
                "_intended_ns": d["t"],
                "_sent_ns": d["sent"],
                "_send_lag_ns": d["sent"] - d["t"],
                "_node": node,
            }
            ev.stimulus(sc, d["cid"], d["device"], d["event"], d["seq"], d["it"], d["t"], payload)
            self.stimuli_t.append(d["t"])
            self._count("stimuli")
        elif k == "arr":
            row = ev.arrival(sc, d["cid"], d["probe"], d["kind"], d["t"], d["p"])
            self._arrivals[(node, d["n"])] = row
            self._count("arrivals")
        elif k == "match":
            arrival = self._arrivals.get((node, d["arr"])) if d.get("arr") is not None else None
            ev.match(
                Match(
                    sc,
                    int(d["it"]),
                    int(d["step"]),
                    d["metric"],
                    d["cid"],
                    d["device"],
                    int(d["seq"]),
                    Outcome(d["outcome"]),
                    arrival,
                    d.get("lat"),
                    d.get("d"),
                )
            )
            self._count(f"{d['metric']}:{d['outcome']}")
        elif k == "ack":
            ev.ack_sent(sc, d["cid"], d["probe"], d["t"])
        elif k == "obs":
            kind = d.get("kind", "load")
            if kind == "harness_fault":
                self.faults.append(d["text"])
                ev.harness_fault(sc, d["text"])
            else:
                ev.observation(sc, kind, d["text"])
        elif k == "gen":
            self.gen.append({**d, "node": node})
        elif k == "final":
            self.finals[node] = d


def _progress_line(out_dir: Path, t0: float, job: Job) -> str | None:
    try:
        p = json.loads((out_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return None
    now = time.time()
    if now < job.schedule_start:
        phase = f"connecting {p['connected']}/{len(job.devices)} devices"
    elif now < job.end_of_sending:
        phase = f"t+{now - job.schedule_start:.0f}s"
    else:
        phase = "draining"
    elapsed = max(1e-9, min(now, job.end_of_sending) - job.schedule_start)
    rate = p["sent"] / elapsed if now > job.schedule_start else 0.0
    cpu = [c for c in p.get("cpu", []) if c is not None]
    return (
        f"{phase}  sent {p['sent']} ({rate:.1f}/s)  delivered {p['delivered']}  "
        f"p99 {p['p99_ms'] if p.get('p99_ms') is not None else '-'} ms  lost/overdue {p['overdue']}  "
        f"generator lag p99 {p['lag_p99_ms'] if p.get('lag_p99_ms') is not None else '-'} ms  "
        f"cpu {'/'.join(f'{c * 100:.0f}%' for c in cpu) or '-'}  devices {p['connected']}/{len(job.devices)}"
    )


def _locust_commands(
    job_path: Path, out_dir: Path, devices: int, spawn_rate: float, run_time_s: int, workers: int, ui: bool
) -> tuple[list[list[str]], str | None]:
    base = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--exit-code-on-error",
        "0",
        "--stop-timeout",
        "0",
        "--loglevel",
        "WARNING",
    ]
    lead = [
        *base,
        "-u",
        str(devices),
        "-r",
        f"{spawn_rate:.3f}",
        "-t",
        f"{run_time_s}s",
        "--csv",
        str(out_dir / "locust"),
        "--csv-full-history",
        "--html",
        str(out_dir / "locust.html"),
        "--logfile",
        str(out_dir / "locust-master.log" if workers else out_dir / "locust.log"),
    ]
    url = None
    if ui:
        port = _free_port()
        lead += ["--web-host", "127.0.0.1", "--web-port", str(port), "--autostart", "--autoquit", "2"]
        url = f"http://127.0.0.1:{port}"
    else:
        lead += ["--headless"]
    if not workers:
        return [lead], url
    port = _free_port()
    lead += [
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(workers),
    ]
    cmds = [lead]
    for i in range(workers):
        cmds.append(
            [
                *base,
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
                "--logfile",
                str(out_dir / f"locust-worker-{i}.log"),
            ]
        )
    return cmds, url


def run_load(scenario: Path, lab_path: Path | None = None, opts: LoadOptions | None = None) -> LoadResult:
    """Run one load scenario end to end; returns once summary.json is written."""
    from harness.report.summary import write_summary
    from harness.session import DEFAULT_LAB, RunSession

    opts = opts or LoadOptions()
    say = opts.progress or (lambda text: print(text, flush=True))
    contract_path = opts.contract or find_contract(ROOT)
    contract, contract_src = load_contract(contract_path)
    lab = load_lab(lab_path or DEFAULT_LAB)
    if opts.workers < 0 or opts.workers > 64:
        raise InputError(
            f"--workers {opts.workers} is outside 0..64",
            place="--workers",
            fix="give 0 (one process) or the number of locust workers, e.g. 2",
        )
    try:
        scenario_id = str(scenario.resolve().relative_to(ROOT))
    except ValueError:
        scenario_id = str(scenario)
    overrides = _overrides(opts)
    plan = load_load_scenario(scenario, contract, scenario_id, overrides or None)
    workers = opts.workers
    if workers > 1 and plan.devices % workers:
        rounded = plan.devices + workers - plan.devices % workers
        say(f"vtlab load: {plan.devices} devices rounded up to {rounded}, a multiple of {workers} workers")
        plan = load_load_scenario(scenario, contract, scenario_id, {**overrides, "devices": rounded})
    tmp = Path(tempfile.mkdtemp(prefix="vtlab-fleet-"))
    try:
        run_lab = fleet_lab(lab, plan, plan.devices, tmp)
        session = RunSession(
            lab=run_lab,
            contract=contract,
            contract_src=contract_src,
            report_dir=opts.report_dir.resolve(),
            run_id=opts.run_id,
            faults=opts.faults,
            argv=opts.argv,
            suite=[{"id": plan.id, "covers": plan.covers}],
        )
    finally:
        fleet_file = tmp / "fleet-lab.yaml"
        saved = fleet_file.read_text(encoding="utf-8") if fleet_file.exists() else None
        shutil.rmtree(tmp, ignore_errors=True)
    out_dir = session.run_dir / LOAD_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    if saved is not None:
        (out_dir / "fleet-lab.yaml").write_text(saved, encoding="utf-8")
    return _run(plan, run_lab, session, out_dir, opts, say, write_summary)


def _run(
    plan: LoadPlan,
    lab: Lab,
    session: Any,
    out_dir: Path,
    opts: LoadOptions,
    say: Callable[[str], None],
    write_summary: Callable[[Path], dict[str, Any]],
) -> LoadResult:
    ev: EvidenceStore = session.evidence
    procs: list[subprocess.Popen[bytes]] = []
    ingest = Ingest(out_dir, ev, plan.id)
    status = ScenarioStatus.ERROR
    detail: str | None = None
    faults: list[str] = []
    merged: dict[str, Any] | None = None
    run_status = "completed"
    started_scenario = False
    listening: list[Any] = []
    try:
        say(
            f"vtlab load: {plan.title} ({plan.spec.load.shape}, {plan.devices} devices, "
            f"{plan.schedule.planned()} alarms planned over {plan.schedule.duration_ns / 1e9:g}s)"
        )
        # centres that receive over DC-09 or SCAIP listen before the lab is told where to deliver
        listening = open_listeners(lab, plan.spec.load.centres)
        session.target.start(session.run_dir, listener_addresses(listening) if listening else None)
        ev.run_info_update(target=session.target.info())
        devices = fleet_devices(lab, plan, plan.devices)
        startup = opts.startup_s if opts.startup_s is not None else 3.0 + 1.0 * opts.workers
        job = make_job(
            plan,
            lab,
            session.target,
            devices,
            tag=f"{session.folder.nonce}-L1",
            out_dir=out_dir,
            workers=max(1, opts.workers),
            startup_s=startup,
            direct=opts.direct,
            listening=listening,
        )
        job_path = out_dir / JOB_FILE
        job.write(job_path)
        definition = plan.definition()
        definition["resolved_criteria"] = [CriterionDef.of(c).to_json() for c in plan.criteria]
        definition["workers"] = opts.workers
        session.record_scenario_file(plan.source)
        ev.scenario_started(plan.id, str(plan.path), plan.title, plan.covers, definition)
        started_scenario = True
        run_time = int(job.end - time.time() + 3)
        spawn_rate = max(1.0, plan.devices / max(0.5, 0.8 * plan.connect_ns / 1e9))
        cmds, url = _locust_commands(job_path, out_dir, plan.devices, spawn_rate, run_time, opts.workers, opts.ui)
        env = {
            **os.environ,
            "VTLAB_LOAD_JOB": str(job_path),
            "PYTHONPATH": str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
        }
        fds = tuple(listener.sock.fileno() for listener in listening)
        for i, cmd in enumerate(cmds):
            log = (out_dir / (f"locust-{i}.out")).open("wb")
            runs_devices = i > 0 or not opts.workers  # the probing node is one of these (worker 0, or alone)
            procs.append(
                subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(ROOT),
                    start_new_session=True,
                    pass_fds=fds if runs_devices else (),
                )
            )
            log.close()
        for listener in listening:  # the locust processes hold them now
            listener.sock.close()
        if url:
            say(f"vtlab load: locust web UI at {url} (starts by itself; stops at the end of the schedule)")
        if opts.on_started is not None:
            opts.on_started(session.target, job)
        deadline = job.end + 60.0 + 0.002 * plan.devices
        last_print = 0.0
        tty = sys.stdout.isatty() and opts.progress is None
        while any(p.poll() is None for p in procs):
            if time.time() > deadline:
                faults.append("the locust processes did not stop by the run's deadline; they were stopped")
                break
            ingest.poll()
            session.bed.collect_target_events(plan.id)
            failure = session.target.failure()
            if failure and failure not in faults:
                faults.append(failure)
            now = time.time()
            if now - last_print >= (1.0 if tty else 5.0):
                line = _progress_line(out_dir, job.schedule_start, job)
                if line and tty:
                    print("\r" + line + "   ", end="", flush=True)
                elif line:
                    say(line)
                last_print = now
            time.sleep(0.2)
        if tty:
            print()
        _stop(procs)
        bad = [i for i, p in enumerate(procs) if p.returncode not in (0, None) and p.returncode != -signal.SIGTERM]
        for i in bad:
            faults.append(f"locust process {i} exited with {procs[i].returncode} (see {out_dir}/locust-{i}.out)")
        ingest.poll()
        session.bed.collect_target_events(plan.id)
        merged = _read_json(out_dir / "merged.json")
        faults += _checks(plan, job, ingest, merged, opts.workers)
        _storm_recovery(plan, job, ingest, merged, ev)
        faults += ingest.faults
        _capacity_file(out_dir, plan, job, ingest, merged)
        if faults:
            for text in faults:
                if text not in ingest.faults:
                    ev.harness_fault(plan.id, text)
            status, detail = ScenarioStatus.HARNESS_FAULT, "; ".join(faults[:5])
        else:
            status = ScenarioStatus.COMPLETED
        ev.scenario_ended(plan.id, status, detail)
        ev.flush()
        ev.run_info_update(load=_run_info(plan, job, ingest, merged, opts))
        if status is ScenarioStatus.COMPLETED:
            _verdicts(plan, ev)
    except KeyboardInterrupt:
        run_status = "interrupted"
        _stop(procs)
        ingest.poll()
        if started_scenario:
            ev.scenario_ended(plan.id, ScenarioStatus.ERROR, "interrupted")
        raise
    except BaseException as exc:
        _stop(procs)
        with contextlib.suppress(Exception):
            ingest.poll()
        if started_scenario:
            ev.scenario_ended(plan.id, ScenarioStatus.ERROR, f"{type(exc).__name__}: {exc}")
        run_status = "error"
        raise
    finally:
        _stop(procs)
        for listener in listening:
            listener.sock.close()  # closing twice is harmless
        session.close(run_status)
        summary = write_summary(session.run_dir)
        session.folder.link_latest()
    counts = dict(ingest.counts)
    say(
        f"vtlab load: {status.value}; stimuli {counts.get('stimuli', 0)}, arrivals {counts.get('arrivals', 0)}, "
        f"lost {counts.get('alarm_latency:lost', 0)}; verdict {summary['verdict']} - {summary['reason']}"
    )
    say(f"summary: {session.run_dir / 'summary.json'}")
    return LoadResult(session.run_dir, status, summary, merged, faults, counts)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    end = time.time() + 15
    for p in procs:
        try:
            p.wait(max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _checks(plan: LoadPlan, job: Job, ingest: Ingest, merged: dict[str, Any] | None, workers: int) -> list[str]:
    """The generator's honesty: did it keep its schedule, did every node report, do the numbers agree?"""
    faults: list[str] = []
    nodes = max(1, workers)
    if merged is None or len(merged.get("nodes", [])) != nodes:
        got = 0 if merged is None else len(merged.get("nodes", []))
        faults.append(f"{got} of {nodes} locust node(s) sent their final histograms: the run's figures are partial")
        return faults
    lag = merged.get("lag") or {}
    if lag.get("p99") is not None and lag["p99"] * 1e6 > plan.max_lag_ns:
        faults.append(
            f"the generator fell behind its schedule: p99 send lag {lag['p99']} ms (max {lag['max']} ms) "
            f"is above max_lag {plan.max_lag_ns / 1e6:g} ms, so latencies would include the generator's "
            "own delay"
        )
    for n in merged["nodes"]:
        cpu = n.get("cpu_mean")
        if cpu is not None and cpu > plan.max_cpu:
            faults.append(
                f"generator process {n['node']} used {cpu * 100:.0f}% of a core while sending (max_cpu "
                f"{plan.max_cpu * 100:.0f}%): it cannot be trusted to keep the schedule"
            )
    ok_alarms = ingest.counts.get("alarm_latency:ok", 0) + ingest.counts.get("alarm_latency:altered", 0)
    if (merged.get("alarm") or {}).get("count", 0) != ok_alarms:
        faults.append(
            f"the merged histogram holds {merged['alarm']['count']} alarms but the evidence {ok_alarms}: "
            "a node's records are missing"
        )
    counts = merged.get("counts", {})
    never = counts.get("connect_failed", 0)
    planned, sent = plan.schedule.planned(), ingest.counts.get("stimuli", 0)
    if sent != planned and not never:
        faults.append(f"the generator sent {sent} of the {planned} alarms the schedule asked for")
    return faults


def _storm_recovery(plan: LoadPlan, job: Job, ingest: Ingest, merged: dict[str, Any] | None, ev: EvidenceStore) -> None:
    """One expectation: every storm alarm delivered; its value the time from the end of the storm window to
    the last storm alarm delivered (never delivered: censored above any limit)."""
    if plan.schedule.storm is None or merged is None:
        return
    storms = [n["storm"] for n in merged["nodes"] if n.get("storm")]
    missing = sum(s["missing"] for s in storms)
    count = sum(s["count"] for s in storms)
    recoveries = [s["recovery_ns"] for s in storms if s.get("recovery_ns") is not None]
    cid = f"{job.tag}-storm"
    if missing or not recoveries:
        ev.match(
            Match(
                plan.id,
                0,
                2,
                STORM_METRIC,
                cid,
                "fleet",
                0,
                Outcome.NOT_REACHED,
                None,
                None,
                f"{missing} of {count} storm alarms were never delivered: the platform did not recover",
            )
        )
    else:
        ev.match(
            Match(
                plan.id,
                0,
                2,
                STORM_METRIC,
                cid,
                "fleet",
                0,
                Outcome.OK,
                None,
                max(1, max(recoveries)),
                f"all {count} storm alarms delivered",
            )
        )


def _verdicts(plan: LoadPlan, ev: EvidenceStore) -> None:
    reader = EvidenceReader(ev.path)
    try:
        metrics = compute(reader.stimuli(plan.id), reader.arrivals(plan.id), reader.matches(plan.id))
    finally:
        reader.close()
    for r in judge(plan.id, [CriterionDef.of(c) for c in plan.criteria], metrics):
        for req in r.requirements:
            ev.verdict(plan.id, req, r.metric, r.statistic, r.limit, r.measured, r.unit, r.verdict, r.detail)


def _run_info(
    plan: LoadPlan, job: Job, ingest: Ingest, merged: dict[str, Any] | None, opts: LoadOptions
) -> dict[str, Any]:
    return {
        "scenario": plan.id,
        "shape": plan.spec.load.shape,
        "via": plan.spec.load.via,
        "devices": plan.devices,
        "workers": opts.workers,
        "planned_alarms": plan.schedule.planned(),
        "sent_alarms": ingest.counts.get("stimuli", 0),
        "merged": {k: v for k, v in (merged or {}).items() if not k.endswith("_hist")},
        "capacity_file": f"{LOAD_DIR}/capacity.json",
        "locust_html": f"{LOAD_DIR}/locust.html",
        "direct": opts.direct,
    }


def _capacity_file(out_dir: Path, plan: LoadPlan, job: Job, ingest: Ingest, merged: dict[str, Any] | None) -> None:
    """Per-second series for the report's capacity section: asked vs sent, delivered, p99, lag, CPU."""
    ingest.ev.flush()
    r = EvidenceReader(ingest.ev.path)
    try:
        stim = {row["cid"]: row["t_ns"] for row in r.stimuli(plan.id)}
        matches = [m for m in r.matches(plan.id) if m["metric"] == "alarm_latency"]
    finally:
        r.close()
    seconds = max(1, int(plan.schedule.duration_ns / 1e9 + plan.drain_ns / 1e9 + 1))
    start_ns = min(stim.values(), default=0)
    sent = [0] * seconds
    delivered = [0] * seconds
    lat: list[list[int]] = [[] for _ in range(seconds)]
    lost = [0] * seconds
    for t in stim.values():
        i = min(seconds - 1, max(0, (t - start_ns) // 1_000_000_000))
        sent[i] += 1
    for m in matches:
        t = stim.get(m["stimulus_cid"])
        if t is None:
            continue
        i = min(seconds - 1, max(0, (t - start_ns) // 1_000_000_000))
        if m["outcome"] in ("ok", "altered", "late"):
            delivered[i] += 1
            lat[i].append(int(m["latency_ns"]))
        else:
            lost[i] += 1
    p99: list[float | None] = []
    for values in lat:
        if not values:
            p99.append(None)
            continue
        h = hist.new_histogram()
        for v in values:
            hist.record(h, v)
        p99.append(round(h.get_value_at_percentile(99.0) / 1e6, 3))
    data = {
        "shape": plan.spec.load.shape,
        "devices": plan.devices,
        "asked_per_second": [round(x, 3) for x in plan.schedule.asked_per_second()],
        "sent_per_second": sent,
        "delivered_by_send_second": delivered,
        "not_delivered_by_send_second": lost,
        "p99_ms_by_send_second": p99,
        "generator": [
            {
                k: g.get(k)
                for k in (
                    "wall",
                    "node",
                    "sent",
                    "delivered",
                    "cpu",
                    "loop_lag_ms",
                    "connected",
                    "rss_mb",
                    "heartbeats",
                )
            }
            for g in ingest.gen
        ],
        "merged": {k: v for k, v in (merged or {}).items() if k != "nodes"},
        "nodes": (merged or {}).get("nodes", []),
    }
    (out_dir / "capacity.json").write_text(json.dumps(data, indent=1), encoding="utf-8")


__all__ = ["LOAD_DIR", "LoadOptions", "LoadResult", "run_load"]
