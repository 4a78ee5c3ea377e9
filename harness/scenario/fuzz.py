"""The `fuzz` step: malformed and mutated messages to the platform's ingress while the scenario's real
alarms keep flowing.

    - fuzz: {via: mqtt, rate: 50/s, for: 10s, seed: 7}

The step starts a background task on the scenario's event loop (in the first repetition only) and returns
at once, so the steps after it, and the later repetitions, run while it sends. The task ends by itself
after `for` or `rate x for` messages, whichever comes first, or when the scenario ends (`stop_fuzzers`,
or the loop's end cancels it); either way it records what it sent. It sends only to the lab file's
addresses of the platform (the broker of mqtt.url, a device's DC-09 or SCAIP receiver) as one of the lab
file's devices. What it proves is judged by the scenario's own criteria: a platform that stops routing
under the flood shows as lost or late alarms, and the requirement's class decides the deviation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.clock import now_ns
from harness.errors import InputError, TargetError, UnreachableError
from harness.identities import device_identity, twin_identity
from harness.scenario.plan import ScenarioPlan, StepPlan
from harness.scenario.registry import StepKind
from harness.scenario.runner import Iteration, ScenarioRun
from harness.security.mutators import FuzzCase, dc09_cases, scaip_cases, wire_json_cases
from harness.units import parse_bounded_duration, parse_duration, parse_rate

MAX_FUZZ_RATE = 5000.0
MAX_FUZZ_NS = 10 * 60 * 1_000_000_000
MAX_FUZZ_MESSAGES = 1_000_000


class FuzzArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    via: Literal["mqtt", "dc09", "scaip"] = Field(description="Which ingress gets the mutated messages")
    rate: str = Field("50/s", description="Messages per second (at most 5000/s)")
    for_: str = Field("10s", alias="for", description="How long to send (at most 10m)")
    seed: int = Field(7, ge=0, le=2**32, description="The same seed sends the same messages")
    device: str | None = Field(
        None,
        description="Scenario device whose identity, DC-09 account or SCAIP id the "
        "fuzzer uses (default: the scenario's first device that speaks `via`, else the "
        "first lab-file device that does)",
    )
    max_bytes: int = Field(4096, ge=16, le=64 * 1024, description="Longest message sent")

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str) -> str:
        if parse_rate(v) > MAX_FUZZ_RATE:
            raise InputError(f"a fuzzing rate of {v} is above {MAX_FUZZ_RATE:g}/s", fix="write e.g. 50/s")
        return v

    @field_validator("for_")
    @classmethod
    def _for(cls, v: str) -> str:
        parse_bounded_duration(v, high_ns=MAX_FUZZ_NS, what="a fuzzing time")
        return v

    @property
    def count(self) -> int:
        """The bound on messages: rate x time."""
        return min(MAX_FUZZ_MESSAGES, math.ceil(parse_rate(self.rate) * parse_duration(self.for_) / 1e9))


@dataclass(slots=True)
class FuzzRun:
    """A running fuzzer's counts: what it sent, by mutation, and what went wrong on its side."""

    via: str
    seed: int
    target: str
    identity: str
    limit: int
    sent: int = 0
    send_errors: int = 0
    reconnects: int = 0
    by_mutation: Counter[str] = field(default_factory=Counter)
    ended: str = "running"
    started_ns: int = 0
    ended_ns: int = 0
    last_error: str | None = None
    stamp: str | None = None
    local: str | None = None
    task: asyncio.Task[None] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "via": self.via,
            "seed": self.seed,
            "target": self.target,
            "identity": self.identity,
            "limit": self.limit,
            "sent": self.sent,
            "send_errors": self.send_errors,
            "reconnects": self.reconnects,
            "by_mutation": dict(sorted(self.by_mutation.items())),
            "ended": self.ended,
            "seconds": round((self.ended_ns - self.started_ns) / 1e9, 3),
            "last_error": self.last_error,
            "stamp": self.stamp,
            "local": self.local,
        }


_RUNNING: weakref.WeakKeyDictionary[ScenarioRun, FuzzRun] = weakref.WeakKeyDictionary()


def running_fuzzer(run: ScenarioRun) -> FuzzRun | None:
    return _RUNNING.get(run)


async def stop_fuzzers(run: ScenarioRun) -> FuzzRun | None:
    """Stop the scenario's fuzzer (if one runs) and wait until it recorded what it sent. For the engine to
    call when the scenario's steps are done; without it, the end of the scenario's loop cancels it."""
    fz = _RUNNING.get(run)
    if fz is not None and fz.task is not None and not fz.task.done():
        fz.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fz.task
    return fz


# --- senders (I/O) ---------------------------------------------------------------------------------
class _Sender:
    async def open(self) -> None: ...

    async def send(self, case: FuzzCase) -> None: ...

    async def close(self) -> None: ...


class _MqttSender(_Sender):
    def __init__(self, settings: Any, topics: dict[str, str], fz: FuzzRun) -> None:
        from harness.transports.mqtt import MqttClient

        self.topics = topics
        self.fz = fz
        self.client = MqttClient(settings, "fuzzer", on_state=self._state, max_inflight=100)

    def _state(self, state: str, detail: str) -> None:
        if state == "lost":  # the platform may drop a connection that sends junk: that is its right
            self.fz.reconnects += 1
            self.fz.last_error = detail

    async def open(self) -> None:
        await asyncio.to_thread(self.client.connect)

    async def send(self, case: FuzzCase) -> None:
        self.client.publish(self.topics[case.topic or "device_event"], case.data)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


class _Dc09Sender(_Sender):
    def __init__(self, address: str, protocol: str, fz: FuzzRun) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port, self.protocol, self.fz = host, int(port), protocol, fz
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.udp: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        if self.protocol == "udp":
            loop = asyncio.get_running_loop()
            self.udp, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=(self.host, self.port)
            )
            return
        reader, self.writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5)

        async def drain() -> None:  # read and forget the replies, so the receiver never blocks on us
            with contextlib.suppress(Exception):
                while await reader.read(65536):
                    pass

        self.reader_task = asyncio.create_task(drain())

    async def send(self, case: FuzzCase) -> None:
        if self.udp is not None:
            self.udp.sendto(case.data)
            return
        if self.writer is None or self.writer.is_closing():
            await self.close()
            self.fz.reconnects += 1
            await self.open()
        assert self.writer is not None
        self.writer.write(case.data)
        await asyncio.wait_for(self.writer.drain(), 5)

    async def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.writer = None
        if self.reader_task is not None:
            self.reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self.reader_task


class _UdpSender(_Sender):
    """Datagrams to a SIP/SCAIP receiver; its answers are read and forgotten."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)
        self.udp: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=(self.host, self.port))

    @property
    def local(self) -> str:
        assert self.udp is not None
        host, port = self.udp.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    async def send(self, case: FuzzCase) -> None:
        assert self.udp is not None
        self.udp.sendto(case.data)

    async def close(self) -> None:
        if self.udp is not None:
            self.udp.close()


# --- binding to the lab file -------------------------------------------------------------------------
def _fuzz_device(plan: ScenarioPlan, args: FuzzArgs, place: Any) -> str:
    lab = plan.lab
    if args.device is not None:
        return plan.binding(args.device, place).ids[0]

    def speaks(d: str) -> bool:
        spec = lab.spec.devices[d]
        return (
            args.via == "mqtt"
            or (args.via == "dc09" and spec.dc09 is not None and bool(spec.dc09.account))
            or (args.via == "scaip" and spec.scaip is not None and bool(spec.scaip.cid))
        )

    ours = [b.ids[0] for b in plan.devices.values() if speaks(b.ids[0])]
    if args.via == "mqtt":
        ours = [d for d in ours if lab.spec.devices[d].via == "mqtt"] or ours
    pool = ours or [d for d in lab.spec.devices if speaks(d)]
    if not pool:
        raise InputError(
            f"`fuzz: {{via: {args.via}}}` needs a device of the lab file with {args.via} settings",
            place=place,
            fix=f"add a device with via: {args.via} to the lab file, or fuzz another ingress",
        )
    return pool[0]


def check_fuzz(plan: ScenarioPlan, step: StepPlan) -> None:
    _fuzz_device(plan, step.args, step.place)
    later = [s for s in plan.steps if s.kind.name == "fuzz" and s.index != step.index]
    if later:
        raise InputError(
            "a scenario has one `fuzz` step",
            place=step.place,
            fix="fuzz one ingress per scenario; write another scenario for another ingress",
        )


def cases_for(
    args: FuzzArgs, plan_lab: Any, device: str, *, target: str = "", local: str = "", now: datetime | None = None
) -> Iterator[FuzzCase]:
    """The deterministic case stream of this step (seeded; DC-09 frames also stamped with `now`)."""
    spec = plan_lab.spec.devices[device]
    if args.via == "mqtt":
        return wire_json_cases(args.seed, device, spec.user, max_bytes=args.max_bytes)
    if args.via == "dc09":
        from harness.links.dc09 import read_key

        key = read_key(spec.dc09, plan_lab.path.parent, str(plan_lab.src.place("devices", device)))
        return dc09_cases(args.seed, str(spec.dc09.account).upper(), key, max_bytes=args.max_bytes, now=now)
    return scaip_cases(args.seed, target, local, str(spec.scaip.cid), spec.scaip.did, max_bytes=args.max_bytes)


def _sender(it: Iteration, args: FuzzArgs, device: str, fz: FuzzRun) -> tuple[_Sender, str]:
    bed, lab = it.bed, it.bed.lab
    if args.via == "mqtt":
        settings = cast(Any, bed).mqtt_settings(twin_identity(device_identity(device)))  # never the bed's own
        topics = {n: lab.topic(n, device=device) for n in ("device_event", "device_heartbeat")}
        return _MqttSender(settings, topics, fz), settings.url
    spec = lab.spec.devices[device]
    if args.via == "dc09":
        assert spec.dc09 is not None  # checked at load time
        address = spec.dc09.to or cast(Any, bed).endpoint("device", "dc09")
        if not address:
            raise InputError(
                f"device `{device}`: no DC-09 receiver address to fuzz",
                place="fuzz",
                fix="set dc09.to: HOST:PORT in the lab file",
            )
        return _Dc09Sender(address, spec.dc09.protocol, fz), address
    assert spec.scaip is not None
    address = spec.scaip.to or cast(Any, bed).endpoint("device", "scaip")
    if not address:
        raise InputError(
            f"device `{device}`: no SCAIP receiver address to fuzz",
            place="fuzz",
            fix="set scaip.to: HOST:PORT in the lab file",
        )
    return _UdpSender(address), address


async def _run(it: Iteration, step: StepPlan, args: FuzzArgs, device: str, fz: FuzzRun, sender: _Sender) -> None:
    rate = parse_rate(args.rate)
    duration_s = parse_duration(args.for_) / 1e9
    loop = asyncio.get_running_loop()
    fz.started_ns = now_ns()
    try:
        await sender.open()
    except (UnreachableError, TargetError, OSError, TimeoutError) as exc:
        fz.ended, fz.ended_ns = "not started", now_ns()
        text = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
        fz.last_error = text
        it.bed.harness_fault(f"fuzz ({args.via}): could not reach {fz.target}: {text}")
        it.bed.evidence.observation(it.plan.id, "fuzz", json.dumps(fz.to_json(), sort_keys=True))
        return
    local = sender.local if isinstance(sender, _UdpSender) else ""
    fz.local = local or None
    stamp = datetime.now(UTC).replace(microsecond=0)
    fz.stamp = stamp.isoformat()
    cases = cases_for(args, it.bed.lab, device, target=fz.target, local=local, now=stamp)
    start = loop.time()
    try:
        for i, case in enumerate(cases):
            if i >= fz.limit:
                fz.ended = "count"
                break
            due = start + i / rate
            if due - start >= duration_s:
                fz.ended = "time"
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await sender.send(case)
                fz.sent += 1
                fz.by_mutation[case.mutation] += 1
            except (TargetError, OSError, TimeoutError, ConnectionError) as exc:
                fz.send_errors += 1
                fz.last_error = getattr(exc, "problem", None) or f"{type(exc).__name__}: {exc}"
    except asyncio.CancelledError:
        fz.ended = "scenario end"
        raise
    finally:
        fz.ended_ns = now_ns()
        with contextlib.suppress(BaseException):
            await asyncio.shield(sender.close())
        it.bed.evidence.observation(it.plan.id, "fuzz", json.dumps(fz.to_json(), sort_keys=True))
        it.bed.evidence.step(
            it.plan.id,
            it.index,
            step.index,
            "fuzz",
            "ok",
            f"sent {fz.sent} of at most {fz.limit} ({fz.ended}); {fz.send_errors} send errors",
            now_ns(),
        )


async def fuzz(it: Iteration, step: StepPlan) -> None:
    """Send malformed and mutated messages (seeded mutators over the ingress's codec: wire_json, DC-09 or
    SCAIP/SIP) to the platform at `rate` for `for`, in the background, while the scenario's real alarms
    keep flowing. Bounded in count (rate x for) and time; reproducible by `seed`; only to the lab file's
    addresses. Records how many it sent, by mutation. The scenario's criteria (lost, latency) judge
    whether the platform kept routing."""
    args: FuzzArgs = step.args
    if it.index != 0 or it.run in _RUNNING:
        it.record(step, "skipped", "the fuzzer runs once per scenario (started in the first repetition)")
        return
    device = _fuzz_device(it.plan, args, step.place)
    fz = FuzzRun(args.via, args.seed, "", device_identity(device) if args.via == "mqtt" else device, args.count)
    sender, fz.target = _sender(it, args, device, fz)
    _RUNNING[it.run] = fz
    fz.task = asyncio.create_task(_run(it, step, args, device, fz, sender), name=f"vtlab-fuzz-{it.plan.id}")
    it.record(
        step,
        "ok",
        f"fuzzing {args.via} at {fz.target}: {args.rate} for {args.for_} (at most {fz.limit}), seed {args.seed}",
    )


def fuzz_step() -> StepKind:
    return StepKind("fuzz", FuzzArgs, fuzz, check_fuzz)
