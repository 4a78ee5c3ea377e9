"""The per-requirement table printed at the end of a run (and by `vtlab report`)."""

from __future__ import annotations

from typing import Any

MARK = {"pass": "PASS", "marginal": "MARGINAL", "fail": "FAIL", "error": "ERROR", "not_run": "NOT RUN",
        "not_covered": "UNCOVERED", "verified_otherwise": "OTHERWISE"}


def _measured(c: dict[str, Any]) -> str:
    if c.get("censored"):
        text = "not arrived"
    elif c["measured"] is None:
        text = "-"
    else:
        unit = "" if c["unit"] == "count" else f" {c['unit']}"
        text = f"{c['measured']:g}{unit}"
    if c.get("n") is not None:
        text += f" [n={c['n']}, arrived {c['arrived']}, not {c['not_arrived']}]"
    return text


def requirement_table(summary: dict[str, Any]) -> list[str]:
    lines = [f"{'requirement':<10} {'pri':<3} {'cls':<3} {'verdict':<9}  criterion (measured vs limit)"]
    for req in summary["requirements"]:
        mark = MARK.get(req["verdict"], req["verdict"])
        head = f"{req['id']:<10} {req['priority']:<3} {req['severity']:<3} {mark:<9}"
        crits = req["criteria"]
        if not crits:
            how = req.get("verified_by")
            where = f" (verified by {how['method']}: {how['where']})" if how else ""
            lines.append(f"{head}  {req['title']}{where}")
            continue
        for i, c in enumerate(crits):
            text = f"{c['metric']} {c['statistic']} = {_measured(c)} (limit {c['limit']})  {c['verdict']}"
            lines.append(f"{head if i == 0 else ' ' * len(head)}  {text}")
    if summary["deviations"]:
        lines.append("")
        lines.append("deviations (avvik):")
        for d in summary["deviations"]:
            lines.append(f"  {d['id']} [{d['severity']}] {d['summary']}")
            lost = d["evidence"].get("lost_alarms")
            if lost:
                shown = ", ".join(lost[:10]) + (f" ... ({len(lost)} in all)" if len(lost) > 10 else "")
                lines.append(f"      lost alarms: {shown}")
    faults = summary.get("harness_faults") or []
    if faults:
        lines.append("")
        lines.append("harness faults (vtlab's own parts; not charged to the supplier):")
        lines.extend(f"  [{f.get('scenario') or '-'}] {f['text']}" for f in faults[:20])
    if summary["uncovered"]:
        lines.append("")
        lines.append(f"not covered by any scenario: {', '.join(summary['uncovered'])}")
    return lines
