"""Security steps: the platform must refuse whoever comes without the credentials the contract demands."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.clock import now_ns
from harness.errors import TargetError, UnreachableError
from harness.evidence import Match
from harness.hookspecs import hookimpl
from harness.outcomes import Outcome
from harness.scenario.plan import StepPlan
from harness.scenario.registry import StepKind
from harness.scenario.runner import Iteration
from harness.transports.mqtt import MqttSettings, MqttTransport
from harness.units import parse_duration

Attempt = Literal["plain_tcp", "no_client_certificate", "untrusted_certificate", "no_credentials"]


class ExpectRefusedArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempt: Attempt = Field(
        description="plain_tcp: MQTT without TLS to the broker's port; no_client_certificate: TLS without a "
        "client certificate; untrusted_certificate: a client certificate from a CA the platform must not "
        "trust; no_credentials: no username or password"
    )
    within: str = Field("3s", description="How long the platform may take to refuse")


def intruder(settings: MqttSettings, attempt: Attempt, workdir: Path) -> MqttSettings:
    """The harness's own connection settings, minus what the attempt leaves out."""
    if attempt == "plain_tcp":
        return MqttSettings(url=settings.url.replace("mqtts://", "mqtt://"), version=settings.version)
    if attempt == "no_client_certificate":
        return dataclasses.replace(settings, cert=None, key=None, key_password=None)
    if attempt == "untrusted_certificate":
        from harness.pki import make_pki

        stranger = make_pki(workdir, clients=("intruder",)).clients["intruder"]
        return dataclasses.replace(settings, cert=stranger.cert, key=stranger.key, key_password=None)
    return dataclasses.replace(settings, username=None, password=None)


async def expect_refused(it: Iteration, step: StepPlan) -> None:
    """Try to connect to the platform's broker as an intruder would, and expect to be refused. An
    accepted connection is a security finding, counted as `insecure_accepted`."""
    args: ExpectRefusedArgs = step.args
    with tempfile.TemporaryDirectory(prefix="vtlab-intruder-") as tmp:
        settings = dataclasses.replace(
            intruder(it.bed.mqtt_settings(), args.attempt, Path(tmp)),
            connect_timeout_s=parse_duration(args.within) / 1e9,
        )
        t0 = now_ns()
        transport = MqttTransport(settings, "intruder")
        cid = it.run.new_cid(it.index)
        try:
            await asyncio.to_thread(transport.connect)
        except UnreachableError as exc:
            # nothing listened: that shows no security at all; vtlab could not make the attempt
            outcome, detail = Outcome.NOT_REACHED, f"could not make the attempt: {exc.problem}"
            it.bed.evidence.harness_fault(it.plan.id, f"expect_refused ({args.attempt}): {detail}")
        except TargetError as exc:
            outcome, detail = Outcome.REFUSED, f"refused: {exc.problem}"
        else:
            outcome, detail = Outcome.ACCEPTED, f"the broker at {settings.url} accepted a connection ({args.attempt})"
            await asyncio.to_thread(transport.close)
    it.bed.evidence.stimulus(it.plan.id, cid, "intruder", f"connect:{args.attempt}", 0, it.index, t0,
                             {"attempt": args.attempt, "url": settings.url})
    it.bed.evidence.match(Match(it.plan.id, it.index, step.index, "refusal", cid, "intruder", 0, outcome,
                                None, now_ns() - t0, detail))
    it.record(step, "ok" if outcome is Outcome.REFUSED else "finding", detail)


@hookimpl
def vtlab_steps() -> list[StepKind]:
    return [StepKind("expect_refused", ExpectRefusedArgs, expect_refused, metrics=lambda a: ["refusal"])]
