"""JSON Schemas for the files people write, and the step reference, generated from the registered steps
and the file models (never written by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.contract import Contract
from harness.labfile import LabFile
from harness.metrics import COUNT_METRICS, RATE_METRICS, TIME_STATISTICS
from harness.scenario.plan import ScenarioFile
from harness.scenario.registry import device_models, step_kinds

_LIMIT = {"type": "string", "pattern": r"^\s*(<=|>=|==|<|>)\s*\S+", "description": 'e.g. "<= 30s", "== 0", "<= 0.5%"'}


def _schema(model: type[BaseModel], title: str) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = title
    return schema


def scenario_schema() -> dict[str, Any]:
    schema = _schema(ScenarioFile, "vtlab scenario")
    defs = schema.setdefault("$defs", {})
    variants = []
    for name, kind in step_kinds().items():
        sub = kind.args.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        sub["description"] = kind.doc
        defs[f"step_{name}"] = sub
        variants.append({
            "type": "object", "additionalProperties": False, "required": [name], "minProperties": 1,
            "maxProperties": 1, "properties": {name: {"$ref": f"#/$defs/step_{name}"}}, "description": kind.doc,
        })
    schema["properties"]["steps"]["items"] = {"oneOf": variants}
    stats = {s: _LIMIT for s in (*TIME_STATISTICS, "rate")}
    schema["properties"]["criteria"]["items"] = {
        "type": "object",
        "required": ["metric"],
        "properties": {
            "metric": {"type": "string", "examples": ["alarm_latency", "ack_latency", "ack_roundtrip",
                                                      *COUNT_METRICS, *RATE_METRICS]},
            "statistic": {"enum": [*TIME_STATISTICS, "rate"]},
            "limit": _LIMIT,
            "marginal": _LIMIT,
            "requirement": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            **stats,
        },
        "additionalProperties": False,
    }
    return schema


def _load_schema() -> dict[str, Any]:
    """A capacity scenario (top-level `load:`, run by `vtlab load`): its own file model."""
    from harness.load.scenario import LoadScenarioFile

    return _schema(LoadScenarioFile, "vtlab load scenario (capacity run)")


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "scenario.schema.json": scenario_schema(),
        "contract.schema.json": _schema(Contract, "vtlab contract (kravspesifikasjon)"),
        "lab.schema.json": _schema(LabFile, "vtlab lab file"),
        "load-scenario.schema.json": _load_schema(),
    }
    written = []
    for name, schema in files.items():
        path = out / name
        path.write_text(json.dumps(schema, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _type_of(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " | ".join(_type_of(p) for p in prop["anyOf"])
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    return str(prop.get("type", "any"))


def step_reference() -> str:
    """Markdown reference of every registered step, from its docstring and argument model."""
    out = ["# vtlab scenario steps", ""]
    for name, kind in step_kinds().items():
        out += [f"## {name}", "", kind.doc, ""]
        schema = kind.args.model_json_schema(by_alias=True)
        required = set(schema.get("required", []))
        for arg, prop in schema.get("properties", {}).items():
            need = "required" if arg in required else f"default {json.dumps(prop.get('default'))}"
            out.append(f"- `{arg}` ({_type_of(prop)}, {need}): {prop.get('description', '')}")
        out.append("")
    out += ["# Device models", ""]
    for model in device_models().values():
        out += [f"## {model.name}", "", model.description, ""]
        for event, spec in model.events.items():
            raised = f"; the platform must raise `{spec.raises}`" if spec.raises else ""
            scaip = f", SCAIP stc {spec.scaip_stc}" if spec.scaip_stc else ""
            out.append(f"- `{event}`: sends `{spec.event}` (Contact ID {spec.code}{scaip}, priority {spec.priority}) - "
                       f"{spec.description}{raised}")
        out.append("")
    from harness.transports.registry import transport_kinds

    out += ["# Transports (`via:` of a device or a probe in the lab file)", ""]
    out += [f"- `{kind.name}`: {kind.description}" for kind in transport_kinds().values()]
    out.append("")
    return "\n".join(out)
