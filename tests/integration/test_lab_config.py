"""The lab config model and its error messages (no broker needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import InputError
from harness.lab.config import LabConfig, load_config


def test_defaults_follow_wire_md() -> None:
    cfg = LabConfig()
    assert cfg.topic("event", device="d1") == "vtlab/lab/device/d1/event"
    assert cfg.topic("centre_alarm", centre="rc-1") == "vtlab/lab/centre/rc-1/alarm"
    assert cfg.topic("control") == "vtlab/lab/lab/control"
    assert cfg.supervision.misses == 2 and cfg.supervision.enabled
    assert cfg.broker.kind == "auto" and cfg.broker.mqtt_version == "3.1.1"


def test_centre_resolution_order() -> None:
    cfg = LabConfig.model_validate(
        {
            "devices": {"a": {"user": "u1", "centre": "rc-a"}, "b": {"user": "u1"}},
            "routing": {"u1": "rc-u", "u2": "rc-v"},
            "default_centre": "rc-d",
        }
    )
    assert cfg.centre_for("a", None) == "rc-a"
    assert cfg.centre_for("b", "u2") == "rc-u"  # configured user wins over the payload's
    assert cfg.centre_for("x", "u2") == "rc-v"
    assert cfg.centre_for("x", None) == "rc-d"


def test_round_trip_through_json(tmp_path: Path) -> None:
    cfg = LabConfig.model_validate({"faults": "drop=3%", "ledger": str(tmp_path / "l.jsonl")})
    p = tmp_path / "lab.json"
    p.write_text(cfg.to_json())
    assert load_config(p) == cfg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        load_config(tmp_path / "nope.json")
    assert e.value.problem == "no such file"
    assert e.value.fix == "pass --config with the path of a lab JSON file"


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "lab.json"
    p.write_text('{\n  "site": "x",\n  oops\n}')
    with pytest.raises(InputError) as e:
        load_config(p)
    assert str(e.value.place) == f"{p}:3"
    assert e.value.problem.startswith("not valid JSON")


def test_unknown_field_names_it(tmp_path: Path) -> None:
    p = tmp_path / "lab.json"
    p.write_text(json.dumps({"broker": {"kind": "hivemq"}}))
    with pytest.raises(InputError) as e:
        load_config(p)
    assert e.value.problem.startswith("`broker.kind`:")


def test_bad_fault_spec_names_the_lab_file(tmp_path: Path) -> None:
    p = tmp_path / "lab.json"
    p.write_text(json.dumps({"faults": "delay=400"}))
    with pytest.raises(InputError) as e:
        load_config(p)
    assert str(e.value.place) == str(p)
    assert e.value.problem == "`delay=400` has no unit"
    assert e.value.fix == "write 400ms or 0.4s"


def test_external_url_must_be_mqtt() -> None:
    with pytest.raises(ValueError, match="mqtt://host:port"):
        LabConfig.model_validate({"broker": {"external_url": "http://x"}})
