"""summary.json and the judgement behind it, rebuilt from a run's evidence store alone."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from harness.acceptance import CriterionDef, ScenarioJudgement, Verdict, decide, judge, reason_text
from harness.contract import Contract
from harness.errors import InputError
from harness.evidence import EvidenceReader
from harness.metrics import compute
from harness.outcomes import ScenarioStatus

SUMMARY_FILE = "summary.json"


def effective(summary: dict[str, Any], eff: dict[str, Any]) -> dict[str, Any]:
    """`summary` (this run alone) with the effective verdict and reason of `eff` (history applied)."""
    out = dict(summary)
    out["run_verdict"] = {"verdict": summary["verdict"], "reason": summary["reason"],
                          "reason_code": summary["reason_code"]}
    for key in ("verdict", "reason", "reason_code"):
        out[key] = eff[key]
    return out


def contract_of(reader: EvidenceReader) -> Contract:
    """The contract the run was judged against, from the copy in the store."""
    files = [f for f in reader.files() if f["role"] == "contract"]
    if not files:
        raise InputError("the evidence store holds no contract", place=str(reader.path),
                         fix="the run stopped before it started; run the suite again")
    return Contract.model_validate(yaml.safe_load(files[0]["text"]))


def judge_run(reader: EvidenceReader, contract: Contract) -> tuple[list[ScenarioJudgement], Verdict]:
    judgements = []
    for s in reader.scenarios():
        metrics = compute(reader.stimuli(s.id), reader.arrivals(s.id), reader.matches(s.id),
                          float(s.definition.get("time_scale", 1)))
        criteria = [CriterionDef.from_json(c) for c in s.definition.get("resolved_criteria", [])]
        status = ScenarioStatus(s.status) if s.status in ScenarioStatus.__members__.values() else ScenarioStatus.ERROR
        results = judge(s.id, criteria, metrics) if status is ScenarioStatus.COMPLETED else []
        judgements.append(ScenarioJudgement(s.id, s.title, status, s.covers, results, metrics, s.detail))
    run = reader.run()
    suite: dict[str, list[str]] = {}
    for scenario in run["info"].get("suite", []):
        for req in scenario["covers"]:
            suite.setdefault(req, []).append(scenario["id"])
    return judgements, decide(contract, judgements, run_ended=run.get("ended") is not None, suite=suite)


def build_summary(run_dir: Path) -> dict[str, Any]:
    reader = EvidenceReader(run_dir)
    try:
        run = reader.run()
        contract = contract_of(reader)
        judgements, verdict = judge_run(reader, contract)
        lab_actions = Counter(e["action"] for e in reader.lab_events())
        info = run["info"]
        scen_rows = {s.id: s for s in reader.scenarios()}
        return {
            "run_id": run["run_id"],
            "lab": info.get("lab", {}),
            "target": info.get("target", {}),
            "started": run["started"],
            "ended": run["ended"],
            "verdict": verdict.verdict.value,
            "reason": reason_text(verdict.reason),
            "reason_code": verdict.reason.to_json(),
            "contract": {
                **contract.contract.model_dump(mode="json"),
                "approval_rule": contract.approval.text,
                "blocking": [s.value for s in contract.approval.blocking],
                "require_tested": [str(p) for p in contract.approval.require_tested],
            },
            "requirements": verdict.requirements,
            "deviations": [d.to_json() for d in verdict.deviations],
            "uncovered": verdict.uncovered,
            "not_run": verdict.not_run,
            "partial": verdict.partial,
            "scenarios": [
                {
                    "id": j.id, "title": j.title, "file": scen_rows[j.id].file, "status": j.status.value,
                    "detail": j.detail, "covers": j.covers, "started": scen_rows[j.id].started,
                    "ended": scen_rows[j.id].ended,
                    "time_scale": scen_rows[j.id].definition.get("time_scale", 1),
                    "criteria": [r.to_json() for r in j.results],
                    "metrics": j.metrics.to_json() if j.metrics else None,
                }
                for j in judgements
            ],
            "faults": info.get("faults", ""),
            "lab_events": dict(lab_actions),
            "findings": [dict(o) for o in reader.observations() if o["kind"] == "finding"],
            "harness_faults": [dict(o) for o in reader.observations() if o["kind"] == "harness_fault"],
            "provenance": {k: info.get(k) for k in ("vtlab_version", "git_revision", "machine", "clock", "argv")},
        }
    finally:
        reader.close()


def write_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json with the verdict that the exit code, the terminal and the report all use: this
    run's judgement with the retest history of earlier runs in the same report folder applied
    (`run_verdict` keeps this run's own)."""
    from harness.report.history import apply_history

    own = build_summary(run_dir)
    summary = effective(own, apply_history(run_dir, own))
    tmp = run_dir / (SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(run_dir / SUMMARY_FILE)
    return summary
