"""The acceptance report as one self-contained HTML page (inline CSS, inline SVG plots, no URLs), rendered
from the run's evidence store, summary, contract and lab file. The PDF is made from the same HTML."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.evidence import EvidenceReader
from harness.report.i18n import Lang
from harness.report.plots import Plot

TEMPLATES = Path(__file__).parent / "templates"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _steps(reader: EvidenceReader, s: Any) -> list[dict[str, Any]]:
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    kinds: dict[int, str] = {}
    details: dict[int, str] = {}
    for r in reader.steps(s.id):
        counts[r["step"]][r["outcome"]] += 1
        kinds[r["step"]] = r["kind"]
        if r["outcome"] not in ("ok",) and r["detail"] and r["step"] not in details:
            details[r["step"]] = r["detail"]
    out = []
    for i, step in enumerate(s.definition.get("steps", [])):
        kind, args = next(iter(step.items())) if isinstance(step, dict) and step else (str(step), {})
        out.append(
            {
                "n": i + 1,
                "kind": kind,
                "args": ", ".join(f"{k}: {v}" for k, v in (args or {}).items()),
                "outcomes": dict(counts.get(i, {})),
                "detail": details.get(i, ""),
            }
        )
    return out


def build_context(
    run_dir: Path, summary: dict[str, Any], manifest: dict[str, Any], lang: Lang, plots: dict[str, list[Plot]]
) -> dict[str, Any]:
    from harness.report import sections
    from harness.report.plots import capacity_plot_names, is_capacity

    reader = EvidenceReader(run_dir)
    try:
        run = reader.run()
        info = run["info"]
        lab_file = (info.get("lab") or {}).get("file") or {}
        scen_records = {s.id: s for s in reader.scenarios()}
        definitions = {sid: {**r.definition, "covers": r.covers} for sid, r in scen_records.items()}
        titles = {s["id"]: s.get("title", s["id"]) for s in summary["scenarios"]}
        capacity_names = capacity_plot_names()
        scenarios = []
        for s in summary["scenarios"]:
            rec = scen_records.get(s["id"])
            cap = is_capacity(definitions.get(s["id"], {}))
            scenarios.append(
                {
                    **s,
                    "anchor": "sc-" + slug(s["id"]),
                    "steps": _steps(reader, rec) if rec else [],
                    "plots": [p for p in plots.get(s["id"], []) if not (cap and p.name in capacity_names)],
                    "latencies": sections.scenario_latencies(lang, s),
                    "repeat": rec.definition.get("repeat") if rec else None,
                    "pace": rec.definition.get("pace") if rec else None,
                }
            )
        anchors = {s["id"]: s["anchor"] for s in scenarios}
        shown_elsewhere = {"security", "fuzz", "harness_fault"}  # each has its own section
        observations = [dict(o) for o in reader.observations() if o["kind"] not in shown_elsewhere]
        files = [{"role": f["role"], "path": f["path"], "sha256": f["sha256"]} for f in reader.files()]
        security = sections.security_section(reader, definitions, summary, lang, titles)
        integration = sections.integration_section(reader, lab_file, definitions, summary, lang, titles)
        capacity = sections.capacity_section(reader, run_dir, definitions, summary, info, lang, plots, anchors)
    finally:
        reader.close()
    incomplete = summary["verdict"] == "incomplete"
    team = lab_file.get("test_team") or []
    sut = lab_file.get("system_under_test") or {}
    return {
        "L": lang,
        "t": lang.t,
        "s": summary,
        "run": run,
        "info": info,
        "lab_file": lab_file,
        "lab_yaml": _yaml(lab_file),
        "sut": sut,
        "team": team,
        "scenarios": scenarios,
        "observations": observations,
        "files": files,
        "manifest": manifest,
        "incomplete": incomplete,
        "generated": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "verdict_sentence": lang.t(summary["verdict"]),
        "scenario_anchor": anchors,
        "tls_off": (info.get("lab") or {}).get("tls_verify") is False,
        "harness_faults": sections.harness_faults(summary),
        "verified_otherwise": sections.verified_otherwise(lang, summary),
        "security": security,
        "integration": integration,
        "capacity": capacity,
    }


def _yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=90)


def render_html(context: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, ensure_ascii=False, indent=1)
    return env.get_template("report.html.j2").render(**context)
