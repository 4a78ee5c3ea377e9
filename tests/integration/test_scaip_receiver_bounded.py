"""A SCAIP receiving centre that runs for days keeps only recent arrivals for inspection; its callback sees
every alarm (a small bound on a real receiver and device over UDP). And the unknown-device check judged
against receivers that refuse or accept a controller they do not know."""

from __future__ import annotations

import asyncio

import pytest

from harness.transports import sip
from harness.transports.sip import ScaipDevice, ScaipReceiver


def test_a_long_running_receiver_keeps_recent_arrivals_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sip, "KEPT", 10)
    seen: list[str] = []

    async def main() -> int:
        async with ScaipReceiver(on_arrival=lambda a: seen.append(a.mrq.ref)) as rc, \
                ScaipDevice(rc.address, cid="4711") as dev:
            for i in range(35):
                await dev.send(dev.mrq(stc="0010", dco=f"{i + 1:03d}"))
            return len(rc.arrivals)

    kept = asyncio.run(main())
    assert len(seen) == 35 and len(set(seen)) == 35  # the callback saw every alarm
    assert 5 <= kept <= 10  # the receiver kept only the most recent ones


def test_a_mock_receiver_that_takes_any_controller_makes_the_unknown_device_check_a_finding() -> None:
    """The check against a MOCK receiver that answers every `<mrq>` snu 0, and one that answers snu 3."""
    from harness.protocols.scaip import StatusNumber, reply_for
    from harness.security.alarm_checks import scaip_unknown_device_check

    async def main(snu: StatusNumber) -> tuple[str, str]:
        async with ScaipReceiver(on_message=lambda mrq, *_: reply_for(mrq, snu)) as rc:
            result = await scaip_unknown_device_check(rc.address, "udp", "9000001", timeout_s=3.0)
            return str(result.outcome), result.detail

    outcome, detail = asyncio.run(main(StatusNumber.OK))
    assert outcome == "accepted" and "snu 0" in detail
    outcome, detail = asyncio.run(main(StatusNumber.WRONG_DATA_CONTENT))
    assert outcome == "refused" and "snu 3" in detail
