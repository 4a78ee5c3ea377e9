"""The built-in scenario steps. Each is registered through the `vtlab_steps` hook; its docstring and
argument model are its documentation (`vtlab steps`, `vtlab schema`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.clock import now_ns
from harness.errors import InputError
from harness.hookspecs import hookimpl
from harness.outcomes import Outcome
from harness.scenario.plan import ScenarioPlan, StepPlan
from harness.scenario.registry import StepKind
from harness.scenario.runner import Iteration, Stimulus
from harness.tracking import Arrival
from harness.units import parse_bounded_duration, parse_duration

METRIC_NAME = r"^[a-z][a-z0-9_]*$"
"""A metric name is a plain word: it becomes a key in summary.json and part of a plot's file name."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _duration(v: str) -> str:
    """A step's time limit: above zero and at most a day."""
    parse_bounded_duration(v, what="a step duration")
    return v


def _ns(text: str) -> int:
    return parse_duration(text)


# --- trigger ---------------------------------------------------------------------------------------
class TriggerArgs(_Args):
    device: str = Field(description="Device name from the scenario's `devices:`")
    event: str = Field(description="Event of the device model, e.g. button_press, fall, low_battery, heartbeat_stop")


async def trigger(it: Iteration, step: StepPlan) -> None:
    """Make an event happen on a device: the simulated device sends it (or, for `heartbeat_stop`, falls
    silent). The moment is stamped as the stimulus; latency to every later expectation starts here."""
    args: TriggerArgs = step.args
    binding = it.plan.devices[args.device]
    device_id = binding.id_for(it.index)
    device = it.bed.device(device_id)
    spec = binding.model.events[args.event]
    cid = it.run.new_cid(it.index)
    seq = it.bed.next_seq(device_id)
    key = None
    if spec.wire:
        sent = device.send(spec, cid, seq)
        t, payload, key = sent.t_ns, dict(sent.fields), sent.key
    elif spec.heartbeat == "resume":
        t = device.resume_heartbeat()
        payload = {"event": spec.event, "device": device_id, "note": "device beats again (first heartbeat)"}
    else:
        t = device.stop_heartbeat()
        payload = {"event": spec.event, "device": device_id, "note": "device fell silent (last heartbeat)"}
    it.bed.evidence.stimulus(it.plan.id, cid, device_id, spec.event, seq, it.index, t,
                             {**payload, "_key": key} if key else payload)
    it.stimuli[args.device] = Stimulus(cid, device_id, args.device, spec, seq, t, key)
    if key is not None:
        it.run.keys_in_flight[key] += 1
    it.record(step, "ok", cid)


def check_trigger(plan: ScenarioPlan, step: StepPlan) -> None:
    args: TriggerArgs = step.args
    binding = plan.binding(args.device, step.place)
    if args.event not in binding.model.events:
        raise InputError(
            f"device `{args.device}` ({binding.model.name}) has no event `{args.event}`",
            place=step.place,
            fix=f"use one of {sorted(binding.model.events)}",
        )
    if binding.model.events[args.event].heartbeat == "resume" and not any(
        s.kind.name == "start_heartbeat" and s.args.device == args.device for s in plan.steps
    ):
        raise InputError(f"`{args.event}` resumes heartbeats that device `{args.device}` never started",
                         place=step.place, fix=f"add `start_heartbeat: {{device: {args.device}}}` before it")


# --- expect_alarm --------------------------------------------------------------------------------
class ExpectAlarmArgs(_Args):
    from_: str = Field(alias="from", description="Device name whose last stimulus this alarm answers")
    at: str | None = Field(None, description="Probe name; default: the probe of the user's response centre")
    event: str | None = Field(None, description="Expected alarm event; default: what the device sent")
    priority: int | None = Field(None, description="Expected priority; default: what the device sent")
    code: str | None = Field(None, description="Expected Contact ID code; default: what the device sent")
    within: str = Field(description="How long to wait, counted from the stimulus, e.g. 30s")
    metric: str = Field("alarm_latency", pattern=METRIC_NAME, max_length=48,
                        description="Name the latency is recorded under (lower-case letters, digits, _)")

    _within = field_validator("within")(_duration)


def _expected_probe(it: Iteration, args: ExpectAlarmArgs, stim: Stimulus) -> tuple[str, str]:
    """(probe name, centre the alarm must arrive at)."""
    if args.at is not None:
        return args.at, str(it.bed.lab.spec.probes[args.at].centre)
    centre = it.bed.lab.expected_centre(stim.device_id)
    probe = it.plan.probe_for_centre(centre)
    assert probe is not None  # checked at load time
    return probe, centre


def _alarm_check(
    it: Iteration, args: ExpectAlarmArgs, stim: Stimulus, centre: str
) -> Callable[[Arrival], tuple[Outcome, str | None]]:
    """Routing fields first (docs/wire.md: centre, user, device -> `misrouted`), then content (event,
    code, priority -> `altered`); a payload the codec refused is `altered` with what was wrong."""
    user = it.bed.lab.spec.devices[stim.device_id].user
    wanted_event = args.event or stim.spec.expected_alarm
    routing = {"centre": centre, "user": user, "device": stim.device_id}
    content: dict[str, object] = {"event": wanted_event}
    sent_itself = not _raised_by_platform(args, stim)  # the device's own alarm: its priority and code count
    if args.priority is not None or sent_itself:
        content["priority"] = args.priority if args.priority is not None else stim.spec.priority
    if args.code is not None or sent_itself:
        content["code"] = args.code if args.code is not None else stim.spec.code

    def check(arrival: Arrival) -> tuple[Outcome, str | None]:
        def said(k: str) -> str:
            v = arrival.field(k)
            return "absent" if v is None else repr(v)

        carried = arrival.carries

        def judged(fields: Mapping[str, object]) -> Mapping[str, object]:  # only what the protocol can carry
            return fields if carried is None else {k: v for k, v in fields.items() if k in carried}

        wrong = [f"{k} {said(k)}, expected {v!r}" for k, v in judged(routing).items() if arrival.field(k) != v]
        if wrong:
            return Outcome.MISROUTED, "arrived at " + arrival.probe + " with " + "; ".join(wrong)
        wrong = [f"{k} {said(k)}, expected {v!r}" for k, v in judged(content).items()
                 if str(arrival.field(k)) != str(v)]
        if arrival.defect:
            wrong.append(f"malformed: {arrival.defect}")
        return (Outcome.ALTERED, "arrived with " + "; ".join(wrong)) if wrong else (Outcome.OK, None)

    return check


def _raised_by_platform(args: ExpectAlarmArgs, stim: Stimulus) -> bool:
    """An alarm the platform raises itself about the stimulus (loss of supervision after a silence, a follow-up
    alarm after a reading beyond the user's plan), not the device's own message carried on."""
    return not stim.spec.wire or (args.event is not None and args.event != stim.spec.event)


async def expect_alarm(it: Iteration, step: StepPlan) -> None:
    """Wait for the alarm that answers the device's last stimulus at a response-centre probe, and check
    it: routed to the right centre, for the right user and device, with the event, code and priority
    unchanged. Correlated by the stimulus' correlation id; an alarm the platform raises itself (loss of
    supervision) is matched by device and event after the stimulus."""
    args: ExpectAlarmArgs = step.args
    stim = it.stimuli[args.from_]
    probe, centre = _expected_probe(it, args, stim)
    wanted_event = args.event or stim.spec.expected_alarm
    if not _raised_by_platform(args, stim):
        def predicate(a: Arrival) -> bool:  # by cid where it survived the trip, else by the content key
            return a.kind == "alarm" and (a.cid == stim.cid or (stim.key is not None and a.key == stim.key))
    else:
        def predicate(a: Arrival) -> bool:
            return (a.kind == "alarm" and a.field("device") == stim.device_id
                    and a.field("event") == wanted_event and a.t_ns >= stim.t_ns)
    check = _alarm_check(it, args, stim, centre)
    deadline_ns = stim.t_ns + it.plan.run_ns(_ns(args.within))
    arrival = await it.await_arrival(step, stim, probe, predicate, check, deadline_ns,
                                     (args.metric,), (stim.t_ns,), what="alarm", within=args.within)
    if arrival is None:
        return
    outcome, detail = check(arrival)
    if arrival.cid != stim.cid and stim.key is not None and not _raised_by_platform(args, stim):
        if it.run.keys_in_flight[stim.key] > 1:  # two alarms in flight look the same: never guess
            outcome = Outcome.AMBIGUOUS
            detail = f"arrival matches {it.run.keys_in_flight[stim.key]} alarms in flight (key {stim.key})"
        it.run.keys_in_flight[stim.key] -= 1
    it.match(step.index, args.metric, stim, outcome, arrival, arrival.t_ns - stim.t_ns, detail)
    it.alarms[probe] = (arrival, stim)
    it.record(step, "ok" if outcome is Outcome.OK else "mismatch", detail)


def check_expect_alarm(plan: ScenarioPlan, step: StepPlan) -> None:
    args: ExpectAlarmArgs = step.args
    binding = plan.binding(args.from_, step.place)
    stimuli = ("trigger", "measure", "observe_event")  # a reading can raise a follow-up alarm; a real device
    if not any(s.kind.name in stimuli and s.args.device == args.from_ for s in plan.steps):
        raise InputError(
            f"`expect_alarm` from `{args.from_}` has no earlier `trigger` or `measure` on that device",
            place=step.place,
            fix=f"add `- trigger: {{device: {args.from_}, event: ...}}` before this step",
        )
    if args.at is not None:
        plan.probe(args.at, step.place)
        return
    for device_id in binding.ids:
        centre = plan.lab.expected_centre(device_id)
        if plan.probe_for_centre(centre) is None:
            raise InputError(
                f"no probe in the lab file receives for centre `{centre}` (of device {device_id})",
                place=step.place,
                fix="add a response_centre probe for it to the lab file, or name the probe with `at:`",
            )


# --- expect_no_alarm -----------------------------------------------------------------------------
class ExpectNoAlarmArgs(_Args):
    from_: str = Field(alias="from", description="Device name whose last stimulus must raise no alarm")
    within: str = Field(description="How long vtlab watches every probe, counted from the stimulus, e.g. 10s")

    _within = field_validator("within")(_duration)


async def expect_no_alarm(it: Iteration, step: StepPlan) -> None:
    """Expect the device's last stimulus to raise no alarm anywhere (a door opened in the day, for a user whose
    wandering plan alarms only at night): passes when nothing answering it arrives at any probe within the
    time; an alarm that does is `unexpected`."""
    args: ExpectNoAlarmArgs = step.args
    stim = it.stimuli[args.from_]

    def predicate(a: Arrival) -> bool:
        if a.kind != "alarm":
            return False
        if a.cid == stim.cid or (stim.key is not None and a.key == stim.key):
            return True
        return (a.field("device") == stim.device_id and a.field("event") == stim.spec.expected_alarm
                and a.t_ns >= stim.t_ns)

    wait_s = max(0.0, (stim.t_ns + it.plan.run_ns(_ns(args.within)) - now_ns()) / 1e9)
    async with it.progress(f"no alarm from {stim.alias}, for {args.within}", wait_s):
        arrival = await it.bed.tracker.expect(predicate, None, wait_s)
    if stim.key is not None:
        it.run.keys_in_flight[stim.key] -= 1  # settled: no alarm is awaited for it any more
    if arrival is None:
        it.record(step, "ok", f"no alarm for {stim.cid} within {args.within}")
        return
    after = (arrival.t_ns - stim.t_ns) / 1e9
    detail = (f"alarm {arrival.field('event')!r} for {stim.cid} arrived at {arrival.probe} {after:.3f} s after the "
              "stimulus, where none must")
    it.match(step.index, "no_alarm", stim, Outcome.UNEXPECTED, arrival, arrival.t_ns - stim.t_ns, detail)
    it.record(step, "mismatch", detail)


def check_expect_no_alarm(plan: ScenarioPlan, step: StepPlan) -> None:
    args: ExpectNoAlarmArgs = step.args
    plan.binding(args.from_, step.place)
    if not any(s.kind.name == "trigger" and s.args.device == args.from_ for s in plan.steps):
        raise InputError(
            f"`expect_no_alarm` from `{args.from_}` has no earlier `trigger` on that device",
            place=step.place,
            fix=f"add `- trigger: {{device: {args.from_}, event: ...}}` before this step",
        )


# --- expect_record (patient record, EPJ) ---------------------------------------------------------
class ExpectRecordArgs(_Args):
    from_: str = Field(alias="from", description="Device name whose last stimulus this record answers")
    at: str | None = Field(None, description="Patient-record probe (kind: epj); default: the lab file's only one")
    kind: Literal["alert", "encounter", "note", "dispense", "reading"] = Field(
        "alert", description="What must arrive: alert (DetectedIssue), encounter, note (Composition), "
        "dispense (MedicationDispense), reading (Observation)")
    code: str | None = Field(None, description="Expected code, e.g. VKP alert code 1.17 (batteri lavt)")
    within: str = Field(description="How long to wait, counted from the stimulus, e.g. 5m")
    metric: str = Field("epj_latency", pattern=METRIC_NAME, max_length=48,
                        description="Name the latency is recorded under")

    _within = field_validator("within")(_duration)


def _record_probe(it: Iteration, args: ExpectRecordArgs) -> str:
    if args.at is not None:
        return args.at
    return next(n for n, p in it.bed.lab.spec.probes.items() if p.kind == "epj")


def _pulled_records_since(it: Iteration, probe: str, stim: Stimulus) -> datetime | None:
    """For a probe that pulls, the earliest `lastUpdated` a record answering `stim` can carry: the stimulus'
    wall time less the lab file's clock-skew allowance. A pulled record arrives when a search first lists
    it, so its arrival stamp alone cannot tell a record made before the stimulus from one made after."""
    epj = it.bed.lab.spec.probes[probe].epj
    if epj is None or getattr(epj, "mode", "push") != "pull":
        return None
    stim_wall = datetime.now(UTC) - timedelta(microseconds=(now_ns() - stim.t_ns) / 1000)
    skew = parse_duration(getattr(epj, "skew", "0s"))
    return stim_wall - timedelta(microseconds=skew / 1000)


def _updated_at_or_after(text: object, since: datetime) -> bool:
    if not isinstance(text, str):
        return False  # a pulled record without meta.lastUpdated cannot be placed after the stimulus
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) >= since


async def expect_record(it: Iteration, step: StepPlan) -> None:
    """Wait for the event to reach the patient record (a FHIR resource pushed to the patient-record probe,
    as through the welfare-technology hub, VKP), and check it field by field: the synthetic user as the
    patient, the device, the code; a resource the probe found fault with (unknown code, wrong unit) is
    `altered`. Correlated by device, kind and code, arriving after the stimulus."""
    args: ExpectRecordArgs = step.args
    stim = it.stimuli[args.from_]
    probe = _record_probe(it, args)
    patient = it.bed.lab.spec.devices[stim.device_id].user

    made_after = _pulled_records_since(it, probe, stim)

    def predicate(a: Arrival) -> bool:
        return (a.kind == "record" and a.field("kind") == args.kind and a.field("device") == stim.device_id
                and (args.code is None or a.field("code") == args.code) and a.t_ns >= stim.t_ns
                and (made_after is None or _updated_at_or_after(a.field("last_updated"), made_after)))

    def check(a: Arrival) -> tuple[Outcome, str | None]:
        if a.field("patient") != patient:
            return Outcome.MISROUTED, f"record for patient {a.field('patient')!r}, expected {patient!r}"
        if a.defect:
            return Outcome.ALTERED, f"record arrived with findings: {a.defect}"
        return Outcome.OK, None

    deadline_ns = stim.t_ns + it.plan.run_ns(_ns(args.within))
    arrival = await it.await_arrival(step, stim, probe, predicate, check, deadline_ns,
                                     (args.metric,), (stim.t_ns,), what=f"{args.kind} record", within=args.within,
                                     stop=False)
    if arrival is not None:
        it.settle(step, args.metric, stim, arrival, check)


def check_expect_record(plan: ScenarioPlan, step: StepPlan) -> None:
    args: ExpectRecordArgs = step.args
    plan.binding(args.from_, step.place)
    records = [n for n, p in plan.lab.spec.probes.items() if p.kind == "epj"]
    if args.at is not None and args.at not in records:
        raise InputError(f"`{args.at}` is not a patient-record probe", place=step.place,
                         fix=f"use one of {records} (probes with kind: epj in the lab file)")
    if args.at is None and len(records) != 1:
        raise InputError(f"the lab file has {len(records)} patient-record probes; say which with `at:`",
                         place=step.place, fix=f"add `at:` with one of {records}" if records else
                         "add a probe with `kind: epj` to the lab file")


# --- acknowledge ---------------------------------------------------------------------------------
class AcknowledgeArgs(_Args):
    at: str | None = Field(None, description="Probe that received the alarm; default: the one that did")
    operator: str = Field("vtlab-operator", description="Operator id written into the acknowledgement")


async def acknowledge(it: Iteration, step: StepPlan) -> None:
    """Acknowledge the alarm received in this repetition, as the response-centre operator does; the
    moment is stamped (start of `ack_latency`)."""
    args: AcknowledgeArgs = step.args
    got = it.alarms.get(args.at) if args.at is not None else next(iter(it.alarms.values()), None)
    if got is None:
        it.record(step, "skipped", "no alarm received to acknowledge")
        it.stop("no alarm to acknowledge")
        return
    arrival, stim = got
    probe = it.bed.probes[arrival.probe]
    t = probe.acknowledge(arrival, args.operator)
    it.bed.evidence.ack_sent(it.plan.id, stim.cid, probe.name, t)
    it.acked[stim.alias] = (stim.cid, t, stim)
    it.record(step, "ok", stim.cid)


def check_acknowledge(plan: ScenarioPlan, step: StepPlan) -> None:
    args: AcknowledgeArgs = step.args
    if args.at is not None:
        plan.probe(args.at, step.place)
    if not any(s.kind.name == "expect_alarm" for s in plan.steps):
        raise InputError("`acknowledge` needs an earlier `expect_alarm`", place=step.place,
                         fix="expect the alarm at the response centre before acknowledging it")


# --- expect_ack ----------------------------------------------------------------------------------
class ExpectAckArgs(_Args):
    device: str = Field(description="Device name that must get the acknowledgement")
    within: str = Field(description="How long to wait, counted from the acknowledgement, e.g. 10s")

    _within = field_validator("within")(_duration)


async def expect_ack(it: Iteration, step: StepPlan) -> None:
    """Wait for the response centre's acknowledgement to come back to the device (the user sees or
    hears that help is coming). Records `ack_latency` (from acknowledgement) and `ack_roundtrip` (from
    the stimulus)."""
    args: ExpectAckArgs = step.args
    acked = it.acked.get(args.device)
    if acked is None:
        it.record(step, "skipped", "nothing was acknowledged for this device")
        return
    cid, t_ack, stim = acked
    probe = f"device:{stim.device_id}"

    def predicate(a: Arrival) -> bool:  # an "acknowledgement" before the operator acknowledged is none
        return a.kind == "device_ack" and a.t_ns >= t_ack and (a.cid == cid if a.cid is not None else
                                                               a.key is not None and a.key == stim.key)

    def check(a: Arrival) -> tuple[Outcome, str | None]:
        return (Outcome.ALTERED, f"malformed: {a.defect}") if a.defect else (Outcome.OK, None)

    metrics, origins = ("ack_latency", "ack_roundtrip"), (t_ack, stim.t_ns)
    deadline_ns = t_ack + it.plan.run_ns(_ns(args.within))
    arrival = await it.await_arrival(step, stim, probe, predicate, check, deadline_ns, metrics, origins,
                                     what="acknowledgement", within=args.within)
    if arrival is None:
        return
    outcome, detail = check(arrival)
    for metric, origin in zip(metrics, origins, strict=True):
        it.match(step.index, metric, stim, outcome, arrival, arrival.t_ns - origin, detail)
    it.record(step, "ok", cid)


def check_expect_ack(plan: ScenarioPlan, step: StepPlan) -> None:
    plan.binding(step.args.device, step.place)
    if not any(s.kind.name == "acknowledge" for s in plan.steps[: step.index]):
        raise InputError("`expect_ack` needs an earlier `acknowledge`", place=step.place,
                         fix="add `- acknowledge: {}` after the alarm is expected")


# --- expect_receipt -------------------------------------------------------------------------------
class ExpectReceiptArgs(_Args):
    device: str = Field(description="Device name whose last alarm the platform must confirm receiving")
    within: str = Field(description="How long to wait, counted from the stimulus, e.g. 10s")
    snu: int | None = Field(None, ge=0, le=7, description="SCAIP: expected status number of the <mrs> (0 OK)")
    mre: int | None = Field(None, ge=0, le=3, description="SCAIP: expected media reply (0 none, 1 duplex ...)")
    path: Literal["primary", "backup"] | None = Field(
        None, description="DC-09: the path that must have answered (backup: the device fell back to it)")
    metric: str = Field("receipt_latency", pattern=METRIC_NAME, max_length=48,
                        description="Name the latency is recorded under")

    _within = field_validator("within")(_duration)


async def expect_receipt(it: Iteration, step: StepPlan) -> None:
    """Wait for the platform's receipt of the device's last alarm, in the device's protocol: the DC-09
    receiver's ACK, the SCAIP <mrs>, or vtlab's JSON device ack with action `received`. Checks the SCAIP
    status number and media reply, or the DC-09 path that answered, when the step names them."""
    args: ExpectReceiptArgs = step.args
    stim = it.stimuli[args.device]
    probe = f"device:{stim.device_id}"
    wanted = {k: v for k, v in (("snu", args.snu), ("mre", args.mre), ("path", args.path)) if v is not None}

    def predicate(a: Arrival) -> bool:
        return a.kind == "device_ack" and a.t_ns >= stim.t_ns and (
            a.cid == stim.cid or (stim.key is not None and a.key == stim.key))

    def check(a: Arrival) -> tuple[Outcome, str | None]:
        wrong = [f"{k} {a.field(k)!r}, expected {v!r}" for k, v in wanted.items() if a.field(k) != v]
        return (Outcome.ALTERED, "receipt with " + "; ".join(wrong)) if wrong else (Outcome.OK, None)

    deadline_ns = stim.t_ns + it.plan.run_ns(_ns(args.within))
    arrival = await it.await_arrival(step, stim, probe, predicate, check, deadline_ns,
                                     (args.metric,), (stim.t_ns,), what="receipt", within=args.within, stop=False)
    if arrival is not None:
        it.settle(step, args.metric, stim, arrival, check)


def check_expect_receipt(plan: ScenarioPlan, step: StepPlan) -> None:
    args: ExpectReceiptArgs = step.args
    plan.binding(args.device, step.place)
    if not any(s.kind.name == "trigger" and s.args.device == args.device for s in plan.steps[: step.index]):
        raise InputError(f"`expect_receipt` for `{args.device}` has no earlier `trigger` on that device",
                         place=step.place, fix=f"add `- trigger: {{device: {args.device}, event: ...}}` before it")


# --- heartbeats, waiting, notes --------------------------------------------------------------------
class StartHeartbeatArgs(_Args):
    device: str = Field(description="Device name")
    every: str | None = Field(None, description="Interval; default: the device's heartbeat in the lab file")

    @field_validator("every")
    @classmethod
    def _every(cls, v: str | None) -> str | None:
        return None if v is None else _duration(v)


async def start_heartbeat(it: Iteration, step: StepPlan) -> None:
    """Start the device's periodic heartbeat (supervision messages to the platform)."""
    args: StartHeartbeatArgs = step.args
    device_id = it.device_id(args.device)
    every = args.every or it.bed.lab.spec.devices[device_id].heartbeat
    it.bed.device(device_id).start_heartbeat(it.plan.run_ns(parse_duration(every)) / 1e9)
    it.record(step, "ok", f"every {every}" + (f" (1:{it.plan.time_scale:g})" if it.plan.time_scale != 1 else ""))


def check_start_heartbeat(plan: ScenarioPlan, step: StepPlan) -> None:
    check_device(plan, step)
    scale = plan.lab.spec.platform.time_scale
    if scale != 1 and not plan.spec.time_scaled and plan.lab.spec.platform.kind == "embedded":
        raise InputError(
            f"heartbeats on a lab whose supervision time runs {scale:g} times faster (platform.time_scale), in a "
            "scenario whose durations are real time",
            place=step.place,
            fix="add `time_scaled: true` to the scenario and write its durations in operational time "
            "(e.g. every: 60s), or remove platform.time_scale from the lab file",
        )


def check_device(plan: ScenarioPlan, step: StepPlan) -> None:
    plan.binding(step.args.device, step.place)


class WaitArgs(_Args):
    for_: str = Field(alias="for", description="How long, e.g. 3s")

    _for = field_validator("for_")(_duration)


async def wait(it: Iteration, step: StepPlan) -> None:
    """Let time pass on purpose (for example while heartbeats run). Not a way to wait for arrivals:
    `expect_*` steps wait for events with deadlines."""
    seconds = it.plan.run_ns(_ns(step.args.for_)) / 1e9
    async with it.progress(f"wait {step.args.for_}", seconds):
        await asyncio.sleep(seconds)
    it.record(step, "ok", step.args.for_)


class NoteArgs(_Args):
    text: str = Field(description="What the tester wants in the record")


async def note(it: Iteration, step: StepPlan) -> None:
    """Put a tester's note into the run's record (once, in the first repetition)."""
    if it.index == 0:
        it.bed.evidence.observation(it.plan.id, "note", step.args.text)
    it.record(step, "ok")


class ManualArgs(_Args):
    instruction: str = Field(description="What the tester does, e.g. 'Trykk på alarmknappen med våte hender'")
    expect: str = Field(description="What the tester must observe")
    mode: Literal["skip"] = "skip"


async def manual(it: Iteration, step: StepPlan) -> None:
    """A step a person performs and judges. In an interactive run (`vtlab run --interactive`) the tester is
    asked as at `manual_check`; in an unattended run it is skipped, and the skip and its reason are
    recorded so the report lists it."""
    from harness.scenario.device_steps import ManualCheckArgs, interactive, manual_check

    if interactive()[0]:
        args = ManualCheckArgs(instruction=step.args.instruction, expect=step.args.expect)
        await manual_check(it, dataclasses.replace(step, args=args))
        return
    if it.index == 0:
        it.bed.evidence.observation(
            it.plan.id, "skipped",
            f"manual step skipped in an unattended run: {step.args.instruction} -> expected: {step.args.expect}",
        )
    it.record(step, "skipped", "manual step; unattended run")


@hookimpl
def vtlab_steps() -> list[StepKind]:
    return [
        StepKind("trigger", TriggerArgs, trigger, check_trigger),
        StepKind("expect_alarm", ExpectAlarmArgs, expect_alarm, check_expect_alarm,
                 metrics=lambda a: [cast(ExpectAlarmArgs, a).metric]),
        StepKind("expect_no_alarm", ExpectNoAlarmArgs, expect_no_alarm, check_expect_no_alarm),
        StepKind("expect_record", ExpectRecordArgs, expect_record, check_expect_record,
                 metrics=lambda a: [cast(ExpectRecordArgs, a).metric]),
        StepKind("expect_receipt", ExpectReceiptArgs, expect_receipt, check_expect_receipt,
                 metrics=lambda a: [cast(ExpectReceiptArgs, a).metric]),
        StepKind("acknowledge", AcknowledgeArgs, acknowledge, check_acknowledge),
        StepKind("expect_ack", ExpectAckArgs, expect_ack, check_expect_ack,
                 metrics=lambda a: ["ack_latency", "ack_roundtrip"]),
        StepKind("start_heartbeat", StartHeartbeatArgs, start_heartbeat, check_start_heartbeat),
        StepKind("wait", WaitArgs, wait),
        StepKind("note", NoteArgs, note),
        StepKind("manual", ManualArgs, manual),
    ]
