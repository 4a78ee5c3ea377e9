"""The lab config model and its error messages (no broker needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import InputError
from harness.lab.config import AccessRule, LabConfig, Topics, load_config
from harness.labfile import DEFAULT_TOPICS, LabFile


def test_defaults_follow_wire_md() -> None:
    cfg = LabConfig()
    assert cfg.topic("device_event", device="d1") == "vtlab/lab/device/d1/event"
    assert cfg.topic("centre_alarm", centre="rc-1") == "vtlab/lab/centre/rc-1/alarm"
    assert cfg.topic("lab_control") == "vtlab/lab/lab/control"
    assert cfg.supervision.misses == 2 and cfg.supervision.enabled
    assert cfg.broker.kind == "auto"


def test_topic_names_and_mqtt_default_are_the_lab_files() -> None:
    """One vocabulary: the lab config's topic keys, templates and MQTT version default are the lab file's."""
    assert Topics().model_dump() == DEFAULT_TOPICS
    assert LabConfig().broker.mqtt_version == LabFile.model_fields["mqtt"].default.version == "5"


def test_no_magic_default_centre() -> None:
    cfg = LabConfig.model_validate({"devices": {"a": {"user": "u1"}}})
    assert cfg.default_centre is None
    assert cfg.centre_for("a", "u1") is None  # no route, no default: the router refuses it with a reason
    assert "rc-1" not in cfg.to_json()


def test_centre_resolution_order() -> None:
    cfg = LabConfig.model_validate(
        {
            "devices": {"a": {"user": "u1", "centre": "rc-a"}, "b": {"user": "u1"}, "c": {}},
            "routing": {"u1": "rc-u", "u2": "rc-v"},
            "default_centre": "rc-d",
        }
    )
    assert cfg.centre_for("a", None) == "rc-a"
    assert cfg.centre_for("b", "u2") == "rc-u"  # configured user wins over the payload's
    assert cfg.centre_for("c", "u2") == "rc-v"
    assert cfg.centre_for("c", None) == "rc-d"
    assert cfg.centre_for("x", "u2") is None  # unknown devices are never routed


def test_centres_listed_must_cover_every_route() -> None:
    with pytest.raises(ValueError, match=r"\['rc-9'\] are routed to but not listed"):
        LabConfig.model_validate({"centres": ["rc-a"], "routing": {"u": "rc-9"}})


@pytest.mark.parametrize("bad", ["a/b", "a+", "#", "a b", "x\nuser lab", "", "-x", "a" * 65])
def test_ids_that_would_break_topics_or_acls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        LabConfig.model_validate({"devices": {bad: {}}})
    with pytest.raises(ValueError, match="letters, digits"):
        LabConfig.model_validate({"routing": {"u": bad}})


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("vtlab/{site}/device/+/event", "without spaces"),
        ("vtlab/{site}/device/x{device}/event", "whole topic level"),
        ("vtlab/{site}/device/event", "must contain {device}"),
        ("vtlab/{site}/{who}/{device}", "unknown placeholder"),
    ],
)
def test_bad_topic_templates(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Topics(device_event=template)


def test_identities_and_access_rules() -> None:
    cfg = LabConfig.model_validate(
        {"site": "s", "devices": {"d1": {"user": "u"}}, "centres": ["rc-a"], "routing": {"u": "rc-a"}}
    )
    assert cfg.identities() == ["lab", "harness", "device-d1", "centre-rc-a", "device-d1.twin", "centre-rc-a.twin"]
    rules = {(r.identity, r.access, r.topic_filter) for r in cfg.access_rules()}
    twins = {r for r in rules if r[0].endswith(".twin")}
    assert twins and rules - twins == {
        ("lab", "subscribe", "vtlab/s/device/+/event"),
        ("lab", "subscribe", "vtlab/s/device/+/heartbeat"),
        ("lab", "subscribe", "vtlab/s/centre/+/ack"),
        ("lab", "subscribe", "vtlab/s/lab/control"),
        ("lab", "publish", "vtlab/s/centre/+/alarm"),
        ("lab", "publish", "vtlab/s/device/+/ack"),
        ("harness", "publish", "vtlab/s/lab/control"),
        ("device-d1", "publish", "vtlab/s/device/d1/event"),
        ("device-d1", "publish", "vtlab/s/device/d1/heartbeat"),
        ("device-d1", "subscribe", "vtlab/s/device/d1/ack"),
        ("centre-rc-a", "subscribe", "vtlab/s/centre/rc-a/alarm"),
        ("centre-rc-a", "publish", "vtlab/s/centre/rc-a/ack"),
    }
    assert {(i.removesuffix(".twin"), a, t) for i, a, t in twins} == {r for r in rules - twins if r[0] != "lab"
                                                                     and r[0] != "harness"}  # same rights
    assert all(isinstance(r, AccessRule) for r in cfg.access_rules())


def test_faults_are_stored_canonically() -> None:
    assert LabConfig(faults="dup=1%, drop=3%").faults == "drop=0.03,dup=0.01"


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
