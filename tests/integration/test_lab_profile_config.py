"""The lab file's `platform: {profile, insecure}` turned into the reference lab's config (embedded_target):
the secure profile keeps every protection on, `insecure` switches off what it lists (all when the list is
empty), and contradictions are refused with the place and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import InputError
from harness.labfile import Lab, load_lab
from harness.reference_lab import PROTECTIONS, embedded_target, switched_off
from tests.helpers import LAB


def lab_with(tmp_path: Path, platform: dict[str, Any], url: str | None = None) -> Lab:
    data = yaml.safe_load(LAB.read_text(encoding="utf-8"))
    data["users"] = str(LAB.parent / data["users"])
    data["platform"] = {**data["platform"], **platform}
    if url is not None:
        data["mqtt"]["url"] = url
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_lab(path)


def test_the_secure_profile_keeps_every_protection_on(tmp_path: Path) -> None:
    target = embedded_target(lab_with(tmp_path, {}), "")
    try:
        c = target.config
        assert target.insecure == frozenset()
        assert c.broker.access_rules and c.broker.bind_client_ids and c.validate_messages
        assert c.broker.tls_min_version == "1.2" and c.broker.ciphers is None
        assert c.broker.tls is not None and c.broker.tls.require_client_cert
        assert c.ingress.dc09_require_encryption and c.ingress.dc09_window
    finally:
        target.cleanup()


def test_the_insecure_profile_switches_off_every_protection_when_it_lists_none(tmp_path: Path) -> None:
    target = embedded_target(lab_with(tmp_path, {"profile": "insecure"}, url="mqtt://127.0.0.1:0"), "")
    try:
        c = target.config
        assert target.insecure == frozenset(PROTECTIONS)
        assert not (c.broker.access_rules or c.broker.bind_client_ids or c.validate_messages)
        assert c.broker.tls_min_version == "1.1" and c.broker.ciphers == "ALL:eNULL:@SECLEVEL=0"
        assert c.broker.tls is None  # TLS follows mqtt.url
        assert not c.ingress.dc09_require_encryption and not c.ingress.dc09_window
    finally:
        target.cleanup()


def test_an_insecure_list_switches_off_only_what_it_names(tmp_path: Path) -> None:
    target = embedded_target(lab_with(tmp_path, {"profile": "insecure", "insecure": ["bind_client_ids"]}), "")
    try:
        c = target.config
        assert target.insecure == {"bind_client_ids"}
        assert not c.broker.bind_client_ids
        assert c.broker.access_rules and c.validate_messages and c.broker.tls_min_version == "1.2"
        assert c.broker.tls is not None and c.broker.tls.require_client_cert
    finally:
        target.cleanup()


@pytest.mark.parametrize(
    ("platform", "url", "problem"),
    [
        ({"insecure": ["access_rules"]}, None, "but the profile is secure"),
        ({"profile": "insecure", "insecure": ["no_such"]}, None, "unknown protection"),
        ({"profile": "insecure", "insecure": ["tls"]}, None, "mqtt.url is mqtts://"),
    ],
)
def test_contradictory_profiles_are_refused_with_the_fix(
    tmp_path: Path, platform: dict[str, Any], url: str | None, problem: str
) -> None:
    with pytest.raises(InputError, match=problem) as err:
        switched_off(lab_with(tmp_path, platform, url))
    assert err.value.fix
