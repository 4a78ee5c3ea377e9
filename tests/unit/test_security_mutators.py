"""The fuzzer's mutators: reproducible by seed, bounded in size, every codec covered, and never a message
vtlab's own codec reads as a valid alarm (checked with hypothesis over seeds). The fuzz step's bounds."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols.base import ProtocolError
from harness.scenario.fuzz import FuzzArgs
from harness.security import mutators
from harness.security.mutators import dc09_cases, scaip_cases, wire_json_cases

KEY = b"0123456789ABCDEF"


def take(gen: object, n: int) -> list[mutators.FuzzCase]:
    return list(itertools.islice(gen, n))  # type: ignore[call-overload]


def streams(seed: int, max_bytes: int = 4096) -> dict[str, list[mutators.FuzzCase]]:
    return {
        "mqtt": take(wire_json_cases(seed, "sa-1", "persona/a", max_bytes=max_bytes), 60),
        "dc09": take(dc09_cases(seed, "1234", KEY, max_bytes=max_bytes), 60),
        "scaip": take(scaip_cases(seed, "127.0.0.1:5060", "127.0.0.1:40000", "4711", "1", max_bytes=max_bytes), 60),
    }


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others() -> None:
    a, b, c = streams(7), streams(7), streams(8)
    for via in a:
        assert [x.data for x in a[via]] == [x.data for x in b[via]]
        assert [x.data for x in a[via]] != [x.data for x in c[via]]


def test_every_codec_gets_several_kinds_of_mutation() -> None:
    for via, cases in streams(3).items():
        kinds = {c.mutation.split(":")[1] for c in cases}
        assert len(kinds) >= 5, (via, kinds)
        assert all(c.mutation.startswith(("wire_json:", "dc09:", "scaip:")) for c in cases)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32), max_bytes=st.integers(16, 8192))
def test_no_case_is_a_valid_alarm_and_none_is_too_long(seed: int, max_bytes: int) -> None:
    from datetime import UTC, datetime, timedelta

    from harness.protocols import scaip, wire_json
    from harness.protocols.dc09 import Account, ReceiverPolicy, ReceiverState
    from harness.protocols.sip.message import parse_message

    years = timedelta(days=3650)
    for via, cases in streams(seed, max_bytes).items():
        for case in cases:
            assert len(case.data) <= max_bytes
            if via == "mqtt":
                for kind in (wire_json.DeviceEvent, wire_json.Heartbeat):
                    with pytest.raises(ProtocolError):
                        wire_json.decode(case.data, kind)
            elif via == "dc09":
                state = ReceiverState([Account("1234", KEY, require_encryption=False)], ReceiverPolicy(years, years))
                try:
                    decision = state.receive(case.data, datetime(2024, 1, 1, tzinfo=UTC))
                except ProtocolError:
                    continue
                assert not (
                    decision.accepted
                    and decision.content is not None
                    and decision.message is not None
                    and decision.message.token == "ADM-CID"
                )
            else:
                try:
                    body = getattr(parse_message(case.data), "body", b"")
                except ProtocolError:
                    continue
                with pytest.raises(ProtocolError):
                    scaip.decode_mrq(body)


def test_fuzz_arguments_are_bounded_in_rate_time_and_count() -> None:
    args = FuzzArgs.model_validate({"via": "mqtt", "rate": "50/s", "for": "10s", "seed": 7})
    assert args.count == 500
    with pytest.raises(ValueError, match="above 5000/s"):  # the loader turns it into an InputError at its line
        FuzzArgs.model_validate({"via": "dc09", "rate": "6000/s"})
    with pytest.raises(ValueError, match="fuzzing time"):
        FuzzArgs.model_validate({"via": "dc09", "for": "11m"})
    with pytest.raises(ValueError):
        FuzzArgs.model_validate({"via": "ble"})
