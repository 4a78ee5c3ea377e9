"""`vtlab steps` and `vtlab schema` are generated from the registered steps and file models."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness.cli import main
from harness.scenario.registry import step_kinds
from tests.helpers import CONTRACT, LAB, ROOT


def test_step_reference_lists_every_registered_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["steps"]) == 0
    out = capsys.readouterr().out
    for name, kind in step_kinds().items():
        assert f"## {name}" in out
        assert kind.doc.splitlines()[0] in out
    assert "`within` (string, required)" in out
    assert "button_press" in out and "Contact ID 101" in out


def test_schemas_accept_the_example_files_and_refuse_an_unknown_step(tmp_path: Path) -> None:
    assert main(["schema", "--out", str(tmp_path)]) == 0
    scenario = json.loads((tmp_path / "scenario.schema.json").read_text())
    load = json.loads((tmp_path / "load-scenario.schema.json").read_text())
    kinds = {"functional": 0, "load": 0}
    for path in sorted((ROOT / "scenarios").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        kind = "load" if "load" in data else "functional"  # `vtlab load` runs the ones with `load:`
        jsonschema.validate(data, load if kind == "load" else scenario)
        kinds[kind] += 1
    assert kinds["functional"] >= 10 and kinds["load"] >= 4
    contract_schema = json.loads((tmp_path / "contract.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(CONTRACT.read_text()), contract_schema)
    jsonschema.validate(yaml.safe_load(LAB.read_text()), json.loads((tmp_path / "lab.schema.json").read_text()))
    bad = yaml.safe_load((ROOT / "scenarios" / "alarm" / "alarmknapp.yaml").read_text())
    bad["steps"][0] = {"trykk": {"device": "knapp"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, scenario)
