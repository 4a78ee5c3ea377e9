"""Retests: earlier runs of the same contract in the same report folder, and what they mean for this run.

A deviation is identified by (requirement, scenario, metric). A deviation that failed in an earlier run
and passes in a later run of the scenario that covers it is `retested` (fixed and confirmed); one that
fails in the latest run that tested it stays `open`. Per requirement, the verdict is the one of the latest
run that tested it, and the report names that run.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from harness.acceptance import approve, reason_text, run_state
from harness.contract import ApprovalRule

Key = tuple[str, str, str]


def _load_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "summary.json"
    try:
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        from harness.report.summary import build_summary

        return build_summary(run_dir)
    except Exception:
        return None


def earlier_runs(run_dir: Path, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Summaries of other runs of the same contract in the same report folder that started before this one."""
    here = run_dir.resolve()
    cid = summary["contract"]["id"]
    found = []
    for other in sorted(here.parent.iterdir()):
        if other.is_symlink() or not other.is_dir() or other.name.startswith(".") or other.resolve() == here:
            continue
        if not (other / "evidence.sqlite").exists():
            continue
        s = _load_summary(other)
        if not s or s.get("contract", {}).get("id") != cid or not s.get("started"):
            continue
        if summary.get("started") and s["started"] >= summary["started"]:
            continue
        found.append(s)
    return sorted(found, key=lambda s: s["started"])


def _key(d: dict[str, Any]) -> Key:
    return (d["requirement"], d["scenario"], d["evidence"].get("metric", ""))


def _tested(summary: dict[str, Any]) -> dict[Key, str]:
    """What a run tested, per deviation key: the criterion verdict."""
    out: dict[Key, str] = {}
    for req in summary["requirements"]:
        for c in req["criteria"]:
            k = (req["id"], c["scenario"], c["metric"])
            prev = out.get(k)
            out[k] = "fail" if "fail" in (prev, c["verdict"]) else c["verdict"]
    return out


def apply_history(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """A copy of `summary` with retest history applied (the summary itself if there is no earlier run).

    Adds `history` (runs considered), per deviation `history` (run id, started, verdict) and `found_in`,
    per requirement `decided_by` (run id)."""
    runs = earlier_runs(run_dir, summary)
    eff = copy.deepcopy(summary)
    eff["history"] = [{"run_id": s["run_id"], "started": s["started"], "verdict": s["verdict"]} for s in runs]
    for d in eff["deviations"]:
        d["found_in"] = summary["run_id"]
        d["history"] = []
    for r in eff["requirements"]:
        r["decided_by"] = summary["run_id"] if r["verdict"] not in ("not_run", "not_covered") else None
    if not runs:
        for d in eff["deviations"]:
            d["history"] = [{"run_id": summary["run_id"], "started": summary["started"], "verdict": "fail"}]
        return _decided(eff, summary)
    chain = [*runs, summary]
    tested = [(s, _tested(s)) for s in chain]
    # every deviation ever found, keyed; the first finding names it
    first: dict[Key, tuple[dict[str, Any], dict[str, Any]]] = {}
    for s in chain:
        for d in s["deviations"]:
            first.setdefault(_key(d), (s, d))
    deviations = []
    for k, (found_run, d) in first.items():
        hist = [{"run_id": s["run_id"], "started": s["started"], "verdict": t[k]} for s, t in tested if k in t]
        latest = hist[-1]["verdict"] if hist else "fail"
        dev = copy.deepcopy(d)
        dev["found_in"] = found_run["run_id"]
        dev["history"] = hist
        if latest == "fail":
            dev["status"] = "open"
            current = next((x for x in summary["deviations"] if _key(x) == k), None)
            if current is not None:
                dev = {**copy.deepcopy(current), "found_in": found_run["run_id"], "history": hist, "status": "open"}
        else:
            dev["status"] = "retested"
        deviations.append(dev)
    for i, dev in enumerate(deviations):
        if dev["found_in"] != summary["run_id"] or len(dev["history"]) > 1:
            dev["id"] = f"AVVIK-{i + 1:03d}"
    eff["deviations"] = deviations
    # per requirement: the latest run that tested it decides
    for r in eff["requirements"]:
        if r["verdict"] in ("not_run", "not_covered") or not r["criteria"]:
            for s in reversed(runs):
                old = next((x for x in s["requirements"] if x["id"] == r["id"]), None)
                if old and old["criteria"] and old["verdict"] not in ("not_run", "not_covered"):
                    r.update({"verdict": old["verdict"], "criteria": old["criteria"], "scenarios": old["scenarios"],
                              "decided_by": s["run_id"]})
                    break
    eff["uncovered"] = [r["id"] for r in eff["requirements"] if r["verdict"] == "not_covered"]
    return _decided(eff, summary)


def _decided(eff: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The effective verdict, by the one approval rule (harness.acceptance.approve)."""
    c = summary["contract"]
    rule = ApprovalRule(blocking=c.get("blocking", ["A", "B"]), require_tested=c.get("require_tested", []))
    state = run_state([(s["id"], s["status"]) for s in summary["scenarios"]], summary.get("ended") is not None,
                      bool(summary.get("partial")))
    verdict, reason = approve(rule, eff["requirements"], eff["deviations"], state)
    eff["verdict"], eff["reason"], eff["reason_code"] = verdict.value, reason_text(reason), reason.to_json()
    return eff
