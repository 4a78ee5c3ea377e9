"""The reference lab's device lookups (`LabConfig.device_for_account`, `device_for_scaip`) are indexed: every
DC-09 frame and SCAIP `<mrq>` asks, and a fleet has thousands of devices.

Cost is measured as the number of Python lines executed by one lookup (sys.settrace), a count that does not
depend on how busy the machine is: a lookup in a 10,000-device config must cost about what it costs in a
10-device config. The same measure applied to the scan the index replaced shows it would notice a scan.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Any

import pytest

from harness.lab.config import LabConfig, Limits


def _config(n: int, *, seed: int = 0) -> LabConfig:
    rng = random.Random(seed)
    devices: dict[str, Any] = {}
    for i in range(n):
        d: dict[str, Any] = {"user": f"u{i % 7}"}
        kind = rng.random()
        if kind < 0.4:
            d["dc09_account"] = f"{i + 1:06x}" if rng.random() < 0.5 else f"{i + 1:06X}"
        elif kind < 0.9:
            # some controllers hold several devices; some devices are configured without a did
            loose = i % 3 == 0 and rng.random() < 0.5  # at most one did-less device per controller
            d["scaip"] = {"cid": str(900 + i // 3), "did": None if loose else str(i % 3 + 1)}
        devices[f"dev-{i:05d}"] = d
    return LabConfig.model_validate({"devices": devices})


def _scan_account(config: LabConfig, account: str) -> str | None:
    """The lookup as it was before the index (the reference the index must agree with)."""
    wanted = account.upper()
    for d, settings in config.devices.items():
        if settings.dc09_account and settings.dc09_account.upper() == wanted:
            return d
    return None


def _scan_scaip(config: LabConfig, cid: str, did: str | None) -> str | None:
    loose = None
    for d, settings in config.devices.items():
        s = settings.scaip
        if s is None or s.cid != cid:
            continue
        if s.did == did:
            return d
        if s.did is None and loose is None:
            loose = d
    return loose


def _lines(call: Callable[[], object]) -> int:
    """Python lines executed by `call()` (its callees included)."""
    count = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(None)
    return count


def test_indexed_lookups_answer_as_the_scan_did() -> None:
    config = _config(600, seed=3)
    accounts = [s.dc09_account for s in config.devices.values() if s.dc09_account]
    asked_accounts = [a.lower() for a in accounts] + [a.upper() for a in accounts] + ["ABCDEF", "0", "fff"]
    for account in asked_accounts:
        assert config.device_for_account(account) == _scan_account(config, account), account
    cids = sorted({s.scaip.cid for s in config.devices.values() if s.scaip} | {"1", "42"})
    for cid in cids:
        for did in (None, "1", "2", "3", "9"):
            assert config.device_for_scaip(cid, did) == _scan_scaip(config, cid, did), (cid, did)
    # the test must see both kinds of answer, or it would prove nothing about the did-less rule
    assert any(config.device_for_scaip(c, "9") for c in cids)
    assert any(config.device_for_scaip(c, "9") is None for c in cids)


def test_a_lookup_in_10000_devices_costs_what_it_costs_in_10() -> None:
    small, big = _config(10), _config(10_000)

    def cost(config: LabConfig, ask: Callable[[LabConfig], object]) -> int:
        return max(_lines(lambda: ask(config)) for _ in range(3))

    last_account = [s.dc09_account for s in big.devices.values() if s.dc09_account][-1]
    small_account = [s.dc09_account for s in small.devices.values() if s.dc09_account][-1]
    last_scaip = [s.scaip for s in big.devices.values() if s.scaip][-1]
    small_scaip = [s.scaip for s in small.devices.values() if s.scaip][-1]
    assert last_account and small_account and last_scaip and small_scaip
    for ask_big, ask_small in (
        (lambda c: c.device_for_account(last_account), lambda c: c.device_for_account(small_account)),
        (lambda c: c.device_for_account("FFFFFF0"), lambda c: c.device_for_account("FFFFFF0")),  # unknown
        (
            lambda c: c.device_for_scaip(last_scaip.cid, last_scaip.did),
            lambda c: c.device_for_scaip(small_scaip.cid, small_scaip.did),
        ),
        (lambda c: c.device_for_scaip("77777", "1"), lambda c: c.device_for_scaip("77777", "1")),
    ):
        ratio = cost(big, ask_big) / cost(small, ask_small)
        assert ratio <= 1.5, f"a lookup among 10,000 devices costs {ratio:.1f}x one among 10"
    # the measure notices a scan: the old lookup is ~1000x dearer in the big config
    scan_ratio = cost(big, lambda c: _scan_account(c, "FFFFFF0")) / cost(small, lambda c: _scan_account(c, "FFFFFF0"))
    assert scan_ratio > 100


def test_the_index_follows_a_new_devices_table() -> None:
    config = _config(20)
    account = next(s.dc09_account for s in config.devices.values() if s.dc09_account)
    assert config.device_for_account(account) is not None
    moved = config.model_copy(update={"devices": {"other": config.devices[config.device_for_account(account)]}})
    assert moved.device_for_account(account) == "other"
    assert config.device_for_account(account) != "other"


def test_the_dc09_connection_limit_holds_a_10000_device_fleet_and_is_bounded() -> None:
    assert Limits().dc09_connections >= 10_000
    assert Limits(dc09_connections=20_000).dc09_connections == 20_000
    with pytest.raises(ValueError):
        Limits(dc09_connections=1_000_000)
    with pytest.raises(ValueError):
        Limits(dc09_connections=0)
