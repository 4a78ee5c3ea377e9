"""The report's sections that appear only when a run has something for them — security, the patient record
(EPJ), capacity — and the latency tables with n / arrived / not arrived beside every figure.

Plain data for the template, read from the evidence store (and, for a load run, the generator's samples in
load/capacity.json of the same sealed run folder). Nothing is re-run and nothing is re-judged: latency figures
are summary.json's (harness.metrics, the numbers the verdict used); a security attempt's outcome is the one its
step recorded. Evidence never holds a secret; `scrub` hides anything that looks like one all the same.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.evidence import EvidenceReader
from harness.metrics import Latency
from harness.report.i18n import CERT_FIELDS, Lang
from harness.report.plots import Plot, capacity_plot_names, generator_samples, is_capacity, send_lags

LATENCY_STATS = ("p50", "p95", "p99", "max")
_SECRETISH = re.compile(r"pass|secret|token|private|credential|assertion", re.I)
_HARMLESS = {"", "none", "given", "wrong (random)", "absent", "missing", "yes", "no", "true", "false"}
_PEM = re.compile(r"-----BEGIN|PRIVATE KEY|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")
HIDDEN = "[***]"


# --- helpers ------------------------------------------------------------------------------------------------
def scrub(key: str, value: Any) -> str:
    """A value for the page: text as recorded, except what could be a secret (a PEM block, a JWT, or a value
    under a password/token/key-ish name that is not one of the harmless descriptions the checks record)."""
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        text = ", ".join(scrub(key, v) for v in value) or "–"
        return text
    text = str(value)
    if _PEM.search(text):
        return HIDDEN
    if _SECRETISH.search(key) and text.strip().lower() not in _HARMLESS:
        return HIDDEN
    return text


def flat(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(key, value) pairs of a recorded dict; nested dicts become `outer.inner`."""
    if not isinstance(data, Mapping):
        return [(prefix or "–", scrub(prefix, data))] if data not in (None, {}, []) else []
    out: list[tuple[str, str]] = []
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.extend(flat(v, key))
        else:
            out.append((key, scrub(key, v)))
    return out


def _json(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def latency_row(lang: Lang, metric: str, summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """One row of a latency table from harness.metrics.Latency.summary() as stored in summary.json (ns): a
    censored statistic (None over n > 0) reads "ikke ankommet"/"not arrived", never a number."""
    s = summary or {}
    n = s.get("n")
    return {
        "metric": metric,
        "n": lang.number(n) if n is not None else "–",
        "arrived": lang.number(s.get("arrived")) if s.get("arrived") is not None else "–",
        "not_arrived": lang.number(s.get("not_arrived")) if s.get("not_arrived") is not None else "–",
        "not_arrived_count": int(s.get("not_arrived") or 0),
        "stats": {q: lang.statistic(s.get(q), n) for q in LATENCY_STATS},
    }


def scenario_latencies(lang: Lang, sc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The latency table of one scenario of summary.json (every time metric it measured)."""
    lat = ((sc.get("metrics") or {}).get("latency")) or {}
    return [latency_row(lang, m, v) for m, v in sorted(lat.items()) if m != "ack_roundtrip"]


def _requirements(definition: Mapping[str, Any] | None, metrics: Iterable[str]) -> list[str]:
    """Requirements judged by criteria on `metrics`, else the ones the scenario covers."""
    if not definition:
        return []
    wanted = set(metrics)
    found: list[str] = []
    for c in definition.get("resolved_criteria") or []:
        if isinstance(c, Mapping) and c.get("metric") in wanted:
            found += [r for r in c.get("requirements") or [] if r not in found]
    return found or list(definition.get("covers") or [])


# --- requirements verified otherwise, harness faults -------------------------------------------------------
def verified_otherwise(lang: Lang, summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in summary.get("requirements") or []:
        vb = r.get("verified_by")
        if r.get("verdict") != "verified_otherwise" and not vb:
            continue
        vb = vb or {}
        method = str(vb.get("method", ""))
        out.append(
            {
                "id": r["id"],
                "title": r.get("title", ""),
                "source": r.get("source", ""),
                "verdict": r.get("verdict"),
                "method": lang.t(f"vm_{method}") if f"vm_{method}" in lang.text else method or "–",
                "where": vb.get("where") or "–",
            }
        )
    return out


def harness_faults(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"scenario": f.get("scenario"), "wall": f.get("wall"), "text": f.get("text", "")}
        for f in summary.get("harness_faults") or []
    ]


# --- security -----------------------------------------------------------------------------------------------
_SEC_VERDICT = {  # recorded outcome -> (css/verdict class, text key)
    "refused": ("pass", "sec_refused"),
    "ok": ("pass", "sec_ok"),
    "accepted": ("fail", "sec_accepted"),
    "not_reached": ("error", "sec_not_reached"),
}


def security_section(
    reader: EvidenceReader,
    definitions: Mapping[str, Mapping[str, Any]],
    summary: Mapping[str, Any],
    lang: Lang,
    titles: Mapping[str, str],
) -> dict[str, Any] | None:
    """Every `security` observation (one per attempt of expect_refused / check_certificate) and every `fuzz`
    observation of the run; None when there is none."""
    checks: list[dict[str, Any]] = []
    certs: dict[str, dict[str, Any]] = {}
    fuzz: list[dict[str, Any]] = []
    observations = reader.observations()
    for o in observations:
        if o["kind"] != "security":
            continue
        rec = _json(o["text"]) or {"check": "?", "outcome": "?", "detail": o["text"]}
        label = str(rec.get("check", "?"))
        sid = o["scenario"]
        number = f"S{len(checks) + 1}"
        css, key = _SEC_VERDICT.get(str(rec.get("outcome")), ("error", ""))
        cert = rec.get("certificate")
        if label == "server_certificate" and rec.get("outcome") == "accepted":
            key = "sec_cert_bad"
        if isinstance(cert, Mapping):
            ident = str(cert.get("sha256") or json.dumps(cert, sort_keys=True, default=str))
            entry = certs.setdefault(
                ident, {"fields": [(lang.cert_field(k), scrub(k, cert[k])) for k in _cert_order(cert)], "seen_in": []}
            )
            entry["seen_in"].append(number)
        checks.append(
            {
                "number": number,
                "scenario": sid,
                "scenario_title": titles.get(sid or "", sid or "–"),
                "requirements": _requirements(
                    definitions.get(sid or ""), ("insecure_accepted", "refusal", "certificate")
                ),
                "attempt": label,
                "what": lang.attempt(label),
                "expected": lang.expected(label),
                "request": [kv for kv in flat(rec.get("request") or {}) if kv[0] != "attempt"],
                "seen": flat(rec.get("refusal") or {}),
                "detail": scrub("detail", rec.get("detail") or ""),
                "outcome": rec.get("outcome"),
                "css": css,
                "verdict": lang.t(key) if key else str(rec.get("outcome")),
                "has_cert": isinstance(cert, Mapping),
                "wall": o["wall"],
            }
        )
    scen_summary = {s["id"]: s for s in summary.get("scenarios") or []}
    for o in observations:
        if o["kind"] != "fuzz":
            continue
        rec = _json(o["text"]) or {}
        sid = o["scenario"] or ""
        lab = Counter(e["action"] for e in reader.lab_events(sid)) if sid else Counter()
        refusals = {a: n for a, n in sorted(lab.items()) if re.search(r"reject|refus|malformed|invalid|drop", a)}
        malformed = reader.rows(
            "SELECT probe, COUNT(*) AS n FROM arrivals WHERE scenario = ? AND kind = 'malformed'"
            " GROUP BY probe ORDER BY probe",
            (sid,),
        )
        mutations = sorted((rec.get("by_mutation") or {}).items(), key=lambda kv: (-int(kv[1]), kv[0]))
        fuzz.append(
            {
                "scenario": sid,
                "scenario_title": titles.get(sid, sid),
                "requirements": _requirements(definitions.get(sid), ("lost", "alarm_latency")),
                "via": rec.get("via", "–"),
                "target": scrub("target", rec.get("target")),
                "identity": scrub("identity", rec.get("identity")),
                "seed": rec.get("seed", "–"),
                "sent": lang.t(
                    "fuzz_sent_of",
                    sent=lang.number(rec.get("sent")),
                    limit=lang.number(rec.get("limit")),
                    seconds=lang.number(rec.get("seconds")),
                    ended=_ended(lang, rec.get("ended")),
                ),
                "errors": f"{lang.number(rec.get('send_errors', 0))} / {lang.number(rec.get('reconnects', 0))}",
                "last_error": scrub("last_error", rec.get("last_error")) if rec.get("last_error") else "",
                "mutations": [(m, lang.number(n)) for m, n in mutations],
                "lab": [(a, lang.number(n)) for a, n in refusals.items()],
                "malformed": [(r["probe"], lang.number(r["n"])) for r in malformed],
                "criteria": (scen_summary.get(sid) or {}).get("criteria") or [],
            }
        )
    if not checks and not fuzz:
        return None
    return {"checks": checks, "certificates": list(certs.values()), "fuzz": fuzz}


# --- integration with the patient record --------------------------------------------------------------------
_REFUSAL = re.compile(
    r"^(?P<probe>\S+) received a malformed message(?: on (?P<where>.*?))?: "
    r"HTTP (?P<status>\d{3}): (?P<reason>.*): (?P<raw>'.*'|\".*\")$",
    re.S,
)


def _record_steps(definition: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(metric, record kind) of each expect_record step of a scenario definition."""
    out = []
    for step in definition.get("steps") or []:
        if isinstance(step, Mapping) and "expect_record" in step:
            args = step["expect_record"] or {}
            pair = (str(args.get("metric") or "epj_latency"), args.get("kind"))
            if pair not in out:
                out.append(pair)
    return out


def integration_section(
    reader: EvidenceReader,
    lab_file: Mapping[str, Any],
    definitions: Mapping[str, Mapping[str, Any]],
    summary: Mapping[str, Any],
    lang: Lang,
    titles: Mapping[str, str],
) -> dict[str, Any] | None:
    """Records that reached the patient-record probe(s), by kind; the latency of each expect_record metric
    (summary.json's, as judged); the requests the probe refused with their HTTP status. None when the run has
    none of these."""
    probes = {n for n, p in (lab_file.get("probes") or {}).items() if isinstance(p, Mapping) and p.get("kind") == "epj"}
    kinds: dict[str, dict[str, Any]] = {}
    findings: list[dict[str, str]] = []
    for r in reader.rows("SELECT scenario, probe, payload, wall FROM arrivals WHERE kind = 'record' ORDER BY id"):
        probes.add(r["probe"])
        p = _json(r["payload"]) or {}
        kind = str(p.get("kind") or "other")
        k = kinds.setdefault(
            kind,
            {
                "kind": kind,
                "count": 0,
                "resources": Counter(),
                "codes": Counter(),
                "readings": 0,
                "patients": set(),
                "findings": 0,
            },
        )
        k["count"] += 1
        k["resources"][str(p.get("resource") or "?")] += 1
        if p.get("code"):
            k["codes"][f"{p['code']}" + (f" {p['display']}" if p.get("display") else "")] += 1
        k["readings"] += len(p.get("readings") or [])
        if p.get("patient"):
            k["patients"].add(str(p["patient"]))
        for f in p.get("findings") or []:
            k["findings"] += 1
            findings.append(
                {
                    "scenario": r["scenario"] or "–",
                    "probe": r["probe"],
                    "wall": r["wall"],
                    "resource": f"{p.get('resource') or '?'}/{p.get('id') or '?'}",
                    "text": scrub("finding", f),
                }
            )
    records = []
    for kind in sorted(kinds):
        k = kinds[kind]
        records.append(
            {
                "kind": kind,
                "label": lang.t(f"rk_{kind}") if f"rk_{kind}" in lang.text else kind,
                "count": lang.number(k["count"]),
                "resources": ", ".join(f"{n} ({lang.number(c)})" for n, c in k["resources"].most_common()),
                "codes": ", ".join(f"{n} ({lang.number(c)})" for n, c in k["codes"].most_common(8)) or "–",
                "readings": lang.number(k["readings"]),
                "patients": lang.number(len(k["patients"])),
                "findings": lang.number(k["findings"]),
            }
        )
    latencies = []
    for sc in summary.get("scenarios") or []:
        definition = definitions.get(sc["id"]) or {}
        steps = _record_steps(definition)
        if not steps:
            continue
        outcomes: dict[str, Counter[str]] = {}
        for m in reader.matches(sc["id"]):
            outcomes.setdefault(m["metric"], Counter())[m["outcome"]] += 1
        lat = ((sc.get("metrics") or {}).get("latency")) or {}
        for metric, rkind in steps:
            row = latency_row(lang, metric, lat.get(metric))
            crit = [c for c in sc.get("criteria") or [] if c.get("metric") == metric]
            label = lang.t(f"rk_{rkind}") if rkind and f"rk_{rkind}" in lang.text else (rkind or "–")
            latencies.append(
                {
                    **row,
                    "scenario": sc["id"],
                    "scenario_title": sc.get("title", sc["id"]),
                    "kind": label,
                    "outcomes": ", ".join(f"{o} {lang.number(n)}" for o, n in sorted(outcomes.get(metric, {}).items())),
                    "criteria": crit,
                }
            )
    refusals = []
    for o in reader.observations():
        if o["kind"] != "finding":
            continue
        hit = _REFUSAL.match(o["text"])
        if not hit or hit["probe"] not in probes:
            continue
        refusals.append(
            {
                "scenario": o["scenario"] or "–",
                "wall": o["wall"],
                "probe": hit["probe"],
                "request": scrub("request", hit["raw"].strip("'\"")),
                "status": hit["status"],
                "reason": scrub("reason", hit["reason"]),
                "client": "" if not hit["where"] or hit["where"].endswith(" None") else scrub("client", hit["where"]),
            }
        )
    malformed = sum(
        int(r["n"])
        for r in reader.rows("SELECT probe, COUNT(*) AS n FROM arrivals WHERE kind = 'malformed' GROUP BY probe")
        if r["probe"] in probes
    )
    if not records and not latencies and not refusals:
        return None
    return {
        "probes": sorted(probes),
        "records": records,
        "findings": findings,
        "latencies": latencies,
        "refusals": refusals,
        "malformed": malformed,
    }


# --- capacity -----------------------------------------------------------------------------------------------
def _lag_stats(lags: Sequence[tuple[int, int]]) -> dict[str, float | None]:
    lat = Latency("send_lag")
    for t, v in lags:
        lat.record(t, max(1, v))
    return {q: lat.statistic(q) for q in ("p50", "p99", "max")} if lags else {}


def capacity_section(
    reader: EvidenceReader,
    run_dir: Path,
    definitions: Mapping[str, Mapping[str, Any]],
    summary: Mapping[str, Any],
    info: Mapping[str, Any],
    lang: Lang,
    plots: Mapping[str, Sequence[Plot]],
    anchors: Mapping[str, str],
) -> list[dict[str, Any]]:
    """One entry per scenario with a throughput criterion or a `load:` shape: asked against delivered, the
    latency figures (as judged), the capacity plots, and for a load run the generator's health."""
    out = []
    names = capacity_plot_names()
    for sc in summary.get("scenarios") or []:
        d = definitions.get(sc["id"]) or {}
        if not is_capacity(d):
            continue
        m = sc.get("metrics") or {}
        load = d.get("load") if isinstance(d.get("load"), Mapping) else None
        resolved = d.get("resolved_load") or {}
        sent = int(m.get("stimuli") or 0)
        delivered = int(m.get("delivered", m.get("arrivals")) or 0)
        span = float(m.get("span_s") or 0.0)
        if load:
            shape = f"{load.get('shape')} · {lang.t('cap_devices', devices=lang.number(resolved.get('devices') or load.get('devices')))}"  # noqa: E501
            rate = load.get("rate")
            if rate and str(rate) not in ("0", "0/s"):
                shape += f" · {rate}"
            shape += f" · {load.get('duration')}"
            asked = resolved.get("planned_alarms")
        else:
            shape = lang.t("cap_pace", pace=d.get("pace") or "–", repeat=lang.number(d.get("repeat") or 1))
            triggers = [st for st in d.get("steps") or [] if isinstance(st, Mapping) and "trigger" in st]
            asked = int(d.get("repeat") or 1) * len(triggers) if triggers else None
        entry: dict[str, Any] = {
            "id": sc["id"],
            "title": sc.get("title", sc["id"]),
            "anchor": anchors.get(sc["id"], ""),
            "status": sc.get("status"),
            "shape": shape,
            "asked": lang.number(asked) if asked is not None else "–",
            "sent": lang.number(sent),
            "delivered": lang.number(delivered),
            "not_delivered": lang.number(max(0, sent - delivered)),
            "throughput": lang.t("cap_per_s", rate=lang.number(round(delivered / span, 2))) if span > 0 else "–",
            "criteria": [c for c in sc.get("criteria") or []],
            "latencies": [r for r in scenario_latencies(lang, sc) if r["metric"] != "ack_roundtrip"],
            "plots": [p for p in plots.get(sc["id"], []) if p.name in names],
            "generator": None,
        }
        if load:
            entry["generator"] = _generator_health(reader, run_dir, sc["id"], load, info, lang)
        out.append(entry)
    return out


def _generator_health(
    reader: EvidenceReader, run_dir: Path, sid: str, load: Mapping[str, Any], info: Mapping[str, Any], lang: Lang
) -> dict[str, Any]:
    from harness.units import parse_duration

    found = info.get("load")
    run_load: Mapping[str, Any] = found if isinstance(found, Mapping) and found.get("scenario") in (None, sid) else {}
    merged = run_load.get("merged") or {}
    nodes = [n for n in merged.get("nodes") or [] if isinstance(n, Mapping)]
    lags = send_lags(reader, sid)
    stats = _lag_stats(lags)
    rows: list[dict[str, str]] = []
    try:
        max_lag_ns: float | None = parse_duration(str(load.get("max_lag") or "100ms"))
    except Exception:
        max_lag_ns = None
    p99 = stats.get("p99")
    if lags:
        ok = p99 is not None and max_lag_ns is not None and p99 <= max_lag_ns
        rows.append(
            {
                "what": lang.t("cap_lag"),
                "value": " · ".join(f"{q} {lang.duration(v)}" for q, v in stats.items()),
                "limit": lang.t("cap_limit", limit=f"p99 {load.get('max_lag') or '100ms'}"),
                "css": "pass" if ok else "fail",
                "state": lang.t("cap_within" if ok else "cap_over"),
            }
        )
    max_cpu = _fraction(load.get("max_cpu") or "90%")
    cpus = [(str(n.get("node")), float(n["cpu_mean"])) for n in nodes if n.get("cpu_mean") is not None]
    if cpus:
        ok = max_cpu is None or all(float(c) <= max_cpu for _, c in cpus)
        rows.append(
            {
                "what": lang.t("cap_cpu"),
                "value": ", ".join(f"{n}: {lang.number(round(float(c) * 100, 1))}\u00a0%" for n, c in cpus),
                "limit": lang.t("cap_limit", limit=str(load.get("max_cpu") or "90%")),
                "css": "pass" if ok else "fail",
                "state": lang.t("cap_within" if ok else "cap_over"),
            }
        )
    samples = generator_samples(run_dir)
    loop = [float(n["loop_lag_max_ms"]) for n in nodes if n.get("loop_lag_max_ms") is not None]
    if loop:
        rows.append(
            {
                "what": lang.t("cap_loop"),
                "value": f"{lang.number(round(max(loop), 2))}\u00a0ms",
                "limit": "",
                "css": "",
                "state": "",
            }
        )
    rss = [float(g["rss_mb"]) for g in samples if g.get("rss_mb") is not None]
    if rss:
        rows.append(
            {
                "what": lang.t("cap_rss"),
                "value": f"{lang.number(round(max(rss), 1))}\u00a0MB",
                "limit": "",
                "css": "",
                "state": "",
            }
        )
    connected = [int(g["connected"]) for g in samples if g.get("connected") is not None]
    if connected:
        devices = load.get("devices")
        ok = devices is None or max(connected) >= int(devices)
        rows.append(
            {
                "what": lang.t("cap_connected"),
                "value": f"{lang.number(max(connected))}",
                "limit": lang.t("cap_devices", devices=lang.number(devices)) if devices else "",
                "css": "pass" if ok else "fail",
                "state": "",
            }
        )
    if nodes:
        rows.append(
            {
                "what": lang.t("cap_nodes"),
                "value": ", ".join(str(n.get("node")) for n in nodes),
                "limit": "",
                "css": "",
                "state": "",
            }
        )
    files = []
    for rel in (
        "load/locust.html",
        "load/locust_stats.csv",
        "load/locust_stats_history.csv",
        "load/locust_failures.csv",
        "load/capacity.json",
        "load/merged.json",
    ):
        if (run_dir / rel).is_file():
            files.append(rel)
    faults = [dict(o) for o in reader.observations() if o["kind"] == "harness_fault" and o["scenario"] == sid]
    return {
        "rows": rows,
        "files": files,
        "faults": [f["text"] for f in faults],
        "capacity_file": (run_dir / "load" / "capacity.json").is_file(),
    }


def _cert_order(cert: Mapping[str, Any]) -> list[str]:
    """Subject, issuer, serial, validity, names, key, hash, fingerprint; then anything else recorded."""
    known = list(CERT_FIELDS["en"])
    return [k for k in known if k in cert] + sorted(k for k in cert if k not in known)


def _ended(lang: Lang, ended: Any) -> str:
    key = "fz_" + re.sub(r"\W+", "_", str(ended or "running"))
    return lang.t(key) if key in lang.text else str(ended)


def _fraction(text: Any) -> float | None:
    t = str(text).strip()
    try:
        return float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        return None


__all__ = [
    "HIDDEN",
    "capacity_section",
    "flat",
    "harness_faults",
    "integration_section",
    "latency_row",
    "scenario_latencies",
    "scrub",
    "security_section",
    "verified_otherwise",
]
