"""Scenario steps for devices over BLE and serial: inject a reading and expect it where it must arrive,
put a device fault on request, wait for what a real (observed) device reports, and ask the tester to do
something by hand. A plugin module with its own `vtlab_steps` hook (register it in harness.plugins).

    - measure: {device: bt-meter, systolic: 182 mmHg, diastolic: 95 mmHg, pulse: 71 bpm}
    - expect_reading: {from: bt-meter, at: oppfolging, within: 5m}
    - device_fault: {device: dispenser, fault: garbled}
    - manual_check: {instruction: "Trykk på alarmknappen nå", expect: "Alarmen vises i responssenteret"}
    - observe_event: {device: dispenser, event: dose_missed, within: 2m}
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from devices.catalog import CATALOG, FAULT_KINDS, DeviceFault, parse_reading
from harness.clock import now_ns, utc_text
from harness.errors import InputError
from harness.hookspecs import hookimpl
from harness.links.gateway import MeasuredOutgoing, compare_readings, measured_now, readings_json
from harness.outcomes import Outcome
from harness.scenario.plan import ScenarioPlan, StepPlan
from harness.scenario.registry import StepKind
from harness.scenario.runner import Iteration, Stimulus
from harness.tracking import Arrival
from harness.units import parse_bounded_duration, parse_duration

METRIC_NAME = r"^[a-z][a-z0-9_]*$"
FAULT_LINKS = ("serial", "ble")
"""Transports whose device links apply device faults."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _duration(v: str) -> str:
    parse_bounded_duration(v, what="a step duration")
    return v


# --- per-run memory of what was measured --------------------------------------------------------------------------


def _measured(it: Iteration) -> dict[tuple[int, str], tuple[dict[str, tuple[Decimal, str]], str]]:
    """Readings sent in this run, by (repetition, device alias): what `expect_reading` compares against."""
    store = getattr(it.run, "_vtlab_readings", None)
    if store is None:
        store = {}
        it.run._vtlab_readings = store  # type: ignore[attr-defined]
    return cast(dict[tuple[int, str], tuple[dict[str, tuple[Decimal, str]], str]], store)


# --- measure ---------------------------------------------------------------------------------------------------


class MeasureArgs(BaseModel):
    """`device:` and one `<reading>: <value> <unit>` per value the meter measures (e.g. systolic: 182 mmHg)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    device: str = Field(description="Device name from the scenario's `devices:` (a health meter)")


def _readings(plan_model: str, args: MeasureArgs) -> dict[str, tuple[Decimal, str]]:
    traits = CATALOG.get(plan_model)
    specs = traits.readings if traits else {}
    if not specs:
        raise InputError(
            f"`{plan_model}` takes no readings", fix="measure on a health meter, e.g. blood_pressure_meter"
        )
    given = dict(args.model_extra or {})
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise InputError(f"{plan_model} does not measure {', '.join(unknown)}", fix=f"use: {', '.join(specs)}")
    missing = [n for n, s in specs.items() if s.required and n not in given]
    if missing:
        example = " ".join(f"{n}: ... {specs[n].units[0]}," for n in missing)
        raise InputError(f"a {plan_model} reading needs {', '.join(missing)}", fix=f"add {example.rstrip(',')}")
    return {name: parse_reading(name, text, specs[name]) for name, text in given.items()}


async def measure(it: Iteration, step: StepPlan) -> None:
    """Take a reading on a health meter: the simulated meter sends the values with its own time stamp
    (indicated over BLE once its gateway listens). The values, units and time stamp are recorded as the
    stimulus; `expect_reading` compares what arrives field by field."""
    args: MeasureArgs = step.args
    binding = it.plan.devices[args.device]
    device_id = binding.id_for(it.index)
    readings = _readings(binding.model.name, args)
    device = it.bed.device(device_id)
    spec = binding.model.events["measurement"]
    cid = it.run.new_cid(it.index)
    seq = it.bed.next_seq(device_id)
    measured = measured_now()
    out = MeasuredOutgoing(
        cid=cid,
        device=device_id,
        user=device.user,
        event=spec.event,
        code=spec.code,
        priority=spec.priority,
        seq=seq,
        battery=device.battery,
        readings=readings,
        measured=measured,
    )
    sent = device.link.send(out)
    payload = {**dict(sent.fields), "readings": readings_json(readings), "measured": measured}
    it.bed.evidence.stimulus(
        it.plan.id,
        cid,
        device_id,
        spec.event,
        seq,
        it.index,
        sent.t_ns,
        {**payload, "_key": sent.key} if sent.key else payload,
    )
    it.stimuli[args.device] = Stimulus(cid, device_id, args.device, spec, seq, sent.t_ns, sent.key)
    _measured(it)[(it.index, args.device)] = (readings, measured)
    it.record(step, "ok", f"{cid}: " + ", ".join(f"{n} {v} {u}" for n, (v, u) in readings.items()))


def check_measure(plan: ScenarioPlan, step: StepPlan) -> None:
    args: MeasureArgs = step.args
    binding = plan.binding(args.device, step.place)
    try:
        _readings(binding.model.name, args)
    except InputError as exc:
        raise InputError(exc.problem, place=step.place, fix=exc.fix) from None
    if "measurement" not in binding.model.events:
        raise InputError(
            f"device `{args.device}` ({binding.model.name}) has no `measurement` event",
            place=step.place,
            fix="measure on a health meter",
        )


# --- expect_reading ----------------------------------------------------------------------------------------------


class ExpectReadingArgs(_Args):
    from_: str = Field(alias="from", description="Device name whose last `measure` this reading answers")
    at: str | None = Field(None, description="Probe name; default: the probe of the user's response centre")
    within: str = Field(description="How long to wait, counted from the measurement, e.g. 5m")
    metric: str = Field(
        "reading_latency", pattern=METRIC_NAME, max_length=48, description="Name the latency is recorded under"
    )

    _within = field_validator("within")(_duration)


async def expect_reading(it: Iteration, step: StepPlan) -> None:
    """Wait for the reading taken by the last `measure` on the device where it must arrive, and compare it
    field by field: every value (exactly, as a decimal), its unit and the meter's time stamp. Any change
    is `altered`; a reading for another user is `misrouted`; none is `lost` (or `late`)."""
    args: ExpectReadingArgs = step.args
    stim = it.stimuli[args.from_]
    sent, measured = _measured(it)[(it.index, args.from_)]
    if args.at is not None:
        probe = args.at
    else:
        found = it.plan.probe_for_centre(it.bed.lab.expected_centre(stim.device_id))
        assert found is not None  # checked at load time
        probe = found
    user = it.bed.lab.spec.devices[stim.device_id].user

    def predicate(a: Arrival) -> bool:
        if a.kind != "alarm" or a.field("readings") is None or a.t_ns < stim.t_ns:
            return False
        if a.field("event") not in (None, stim.spec.event):  # a follow-up alarm carries the reading, is not it
            return False
        return a.cid == stim.cid if a.cid is not None and a.key is None else a.field("device") == stim.device_id

    def check(a: Arrival) -> tuple[Outcome, str | None]:
        if a.field("user") not in (None, user):
            return Outcome.MISROUTED, f"reading for user {a.field('user')!r}, expected {user!r}"
        wrong = compare_readings(sent, measured, a.payload)
        if a.defect:
            wrong.append(f"malformed: {a.defect}")
        return (Outcome.ALTERED, "arrived with " + "; ".join(wrong)) if wrong else (Outcome.OK, None)

    deadline_ns = stim.t_ns + it.plan.run_ns(parse_duration(args.within))
    arrival = await it.await_arrival(step, stim, probe, predicate, check, deadline_ns,
                                     (args.metric,), (stim.t_ns,), what="reading", within=args.within)
    if arrival is not None:
        it.settle(step, args.metric, stim, arrival, check)


def check_expect_reading(plan: ScenarioPlan, step: StepPlan) -> None:
    args: ExpectReadingArgs = step.args
    binding = plan.binding(args.from_, step.place)
    if not any(s.kind.name == "measure" and s.args.device == args.from_ for s in plan.steps):
        raise InputError(
            f"`expect_reading` from `{args.from_}` has no earlier `measure` on that device",
            place=step.place,
            fix=f"add `- measure: {{device: {args.from_}, ...}}` before this step",
        )
    if args.at is not None:
        plan.probe(args.at, step.place)
        return
    for device_id in binding.ids:
        if plan.probe_for_centre(plan.lab.expected_centre(device_id)) is None:
            raise InputError(
                f"no probe in the lab file receives for the centre of device {device_id}",
                place=step.place,
                fix="name the probe with `at:`",
            )


# --- device_fault ------------------------------------------------------------------------------------------------


class DeviceFaultArgs(_Args):
    device: str = Field(description="Device name from the scenario's `devices:` (on a serial or BLE link)")
    fault: str = Field(description="One of: " + "; ".join(f"{k}: {v}" for k, v in FAULT_KINDS.items()))
    count: int = Field(1, ge=0, description="How many events it affects (0: until the scenario ends)")
    battery: int = Field(5, ge=0, le=100, description="low_battery: the level the device reports")
    drift: str = Field("0s", description="clock_drift: how far the device's clock is off, e.g. 90s or -2m")
    size: int = Field(4096, gt=0, le=1_000_000, description="flood: bytes of babble")

    @field_validator("fault")
    @classmethod
    def _fault(cls, v: str) -> str:
        if v not in FAULT_KINDS:
            raise InputError(f"unknown device fault `{v}`", fix=f"use one of: {', '.join(FAULT_KINDS)}")
        return v

    @field_validator("drift")
    @classmethod
    def _drift(cls, v: str) -> str:
        text = v.lstrip("-")
        if text not in ("0", "0s"):
            parse_duration(text)
        return v

    def drift_s(self) -> float:
        text = self.drift.lstrip("-")
        value = 0.0 if text in ("0", "0s") else parse_duration(text) / 1e9
        return -value if self.drift.startswith("-") else value


async def device_fault(it: Iteration, step: StepPlan) -> None:
    """Make a device misbehave on request from now on: drop out, run its battery low, garble or cut off
    frames, flood its line, drift its clock, report out-of-range readings, vanish. Recorded in the run's
    record, so the report says which deviations a fault provoked."""
    args: DeviceFaultArgs = step.args
    device_id = it.device_id(args.device)
    link = it.bed.device(device_id).link
    faults = getattr(link, "faults", None)
    if faults is None:
        it.record(step, "skipped", f"the link of {device_id} applies no device faults")
        return
    fault = DeviceFault(cast(Any, args.fault), args.count, args.battery, args.drift_s(), args.size)
    faults.add(fault)
    if it.index == 0 or args.count:
        it.bed.evidence.observation(
            it.plan.id, "fault", f"device fault on {device_id}: {args.fault} (count {args.count or 'until the end'})"
        )
    it.record(step, "ok", args.fault)


def check_device_fault(plan: ScenarioPlan, step: StepPlan) -> None:
    args: DeviceFaultArgs = step.args
    binding = plan.binding(args.device, step.place)
    for device_id in binding.ids:
        via = plan.lab.spec.devices[device_id].via
        if via not in FAULT_LINKS:
            raise InputError(
                f"device {device_id} is on `via: {via}`, whose link applies no device faults",
                place=step.place,
                fix=f"use a device on {' or '.join(FAULT_LINKS)}, or the lab's platform faults (--fault) for MQTT",
            )


# --- observe_event -----------------------------------------------------------------------------------------------


class ObserveEventArgs(_Args):
    device: str = Field(description="Device name (a real device that vtlab observes, serial `mode: observe`)")
    event: str = Field(description="Event of the device model the device must report, e.g. dose_missed")
    within: str = Field(description="How long to wait for it, e.g. 2m")

    _within = field_validator("within")(_duration)


async def observe_event(it: Iteration, step: StepPlan) -> None:
    """Wait for a real device to report an event (after the tester made it happen). The moment its frame
    arrived is the stimulus; an `expect_alarm` from the device then measures from there."""
    args: ObserveEventArgs = step.args
    binding = it.plan.devices[args.device]
    device_id = binding.id_for(it.index)
    link = it.bed.device(device_id).link
    wait_event = getattr(link, "wait_event", None)
    if wait_event is None:
        it.record(step, "skipped", f"{device_id} is not an observed device")
        it.stop(f"{device_id} is not observed")
        return
    spec = binding.model.events[args.event]
    started = now_ns()
    within_s = it.plan.run_ns(parse_duration(args.within)) / 1e9
    got = await asyncio.to_thread(wait_event, lambda g: g.fields.get("event") == spec.event, within_s, started)
    if got is None:
        it.record(step, "timeout", f"{device_id} reported no {spec.event} within {args.within}")
        it.stop(f"{device_id} reported no {spec.event}")
        return
    cid = it.run.new_cid(it.index)  # the frame itself went to the evidence through the test bed (on_event)
    seq = it.bed.next_seq(device_id)
    evidence = got.evidence if isinstance(got.evidence, Mapping) else dict(got.fields)
    it.bed.evidence.stimulus(
        it.plan.id, cid, device_id, spec.event, seq, it.index, got.t_ns, {**evidence, "observed": True}
    )
    it.stimuli[args.device] = Stimulus(cid, device_id, args.device, spec, seq, got.t_ns, got.key)
    if got.key is not None:
        it.run.keys_in_flight[got.key] += 1
    it.record(step, "ok", cid)


def check_observe_event(plan: ScenarioPlan, step: StepPlan) -> None:
    args: ObserveEventArgs = step.args
    binding = plan.binding(args.device, step.place)
    if args.event not in binding.model.events:
        raise InputError(
            f"device `{args.device}` ({binding.model.name}) has no event `{args.event}`",
            place=step.place,
            fix=f"use one of {sorted(binding.model.events)}",
        )


# --- manual_check ------------------------------------------------------------------------------------------------

_INTERACTIVE: list[bool] = []
YES = {"y", "yes", "j", "ja", "ok"}
NO = {"n", "no", "nei"}


def set_interactive(on: bool) -> None:
    """Turn prompting on for this process (the CLI's `--interactive`); VTLAB_INTERACTIVE=1 does the same."""
    _INTERACTIVE[:] = [on]


def interactive() -> tuple[bool, str]:
    """(prompt the tester?, why not)."""
    wanted = _INTERACTIVE[0] if _INTERACTIVE else os.environ.get("VTLAB_INTERACTIVE", "") in ("1", "true", "yes")
    if not wanted:
        return False, "unattended run (start it with --interactive, or VTLAB_INTERACTIVE=1, to be asked)"
    if not sys.stdin or not sys.stdin.isatty():
        return False, "interactive run, but standard input is not a terminal (under pytest: run with -s)"
    return True, ""


class ManualCheckArgs(_Args):
    instruction: str = Field(description="What the tester does, e.g. 'Trykk på alarmknappen nå'")
    expect: str | None = Field(None, description="What the tester must see, e.g. 'Alarmen vises i responssenteret'")
    device: str | None = Field(None, description="Device the instruction is about (for the record)")
    answer_within: str = Field("5m", description="How long the tester has to answer")

    _within = field_validator("answer_within")(_duration)


def _read_answer() -> str:
    line = sys.stdin.readline()
    return line.strip()


async def manual_check(it: Iteration, step: StepPlan) -> None:
    """A step a person performs and judges ("press the button on the real device now", "put the dispenser's
    lid back"). In an interactive run the tester is prompted on the terminal and the answer (yes, no,
    skip, with a note) and how long it took are recorded as evidence; a "no" is a finding. In an
    unattended run the step is skipped and the reason is recorded, so the report lists it."""
    args: ManualCheckArgs = step.args
    ok, why_not = interactive()
    device = it.device_id(args.device) if args.device else None
    what = args.instruction + (f" -> expected: {args.expect}" if args.expect else "")
    if not ok:
        if it.index == 0:
            it.bed.evidence.observation(it.plan.id, "skipped", f"manual check skipped ({why_not}): {what}")
        it.record(step, "skipped", f"manual check; {why_not}")
        return
    prompt = f"\n[vtlab] {it.plan.id}, repetition {it.index + 1}" + (f", device {device}" if device else "")
    prompt += f"\n  DO:     {args.instruction}\n" + (f"  EXPECT: {args.expect}\n" if args.expect else "")
    prompt += "  Did it go as expected? [y]es / [n]o / [s]kip, optionally followed by a note: "
    asked_wall, asked = utc_text(), time.monotonic()
    print(prompt, end="", flush=True, file=sys.stderr)
    try:
        answer = await asyncio.wait_for(asyncio.to_thread(_read_answer), parse_duration(args.answer_within) / 1e9)
    except TimeoutError:
        answer = None
    took_s = round(time.monotonic() - asked, 3)
    tester = _tester()
    word, _, note = (answer or "").partition(" ")
    verdict = (
        "timeout" if answer is None else "yes" if word.lower() in YES else "no" if word.lower() in NO else "skipped"
    )
    record = {
        "instruction": args.instruction,
        "expect": args.expect,
        "device": device,
        "answer": verdict,
        "note": note.strip() or (answer if verdict == "skipped" else ""),
        "asked": asked_wall,
        "answered_after_s": took_s,
        "tester": tester,
        "repetition": it.index,
    }
    it.bed.evidence.observation(it.plan.id, "manual", json.dumps(record, ensure_ascii=False), author=tester)
    if verdict == "no":
        it.bed.evidence.observation(
            it.plan.id,
            "finding",
            f"manual check failed: {what}" + (f" (tester: {note.strip()})" if note.strip() else ""),
            author=tester,
        )
        it.record(step, "mismatch", f"tester answered no after {took_s}s")
    elif verdict == "yes":
        it.record(step, "ok", f"tester answered yes after {took_s}s")
    else:
        it.record(step, "skipped", f"tester {'did not answer in time' if verdict == 'timeout' else 'skipped it'}")


def _tester() -> str:
    try:
        return os.environ.get("VTLAB_TESTER") or getpass.getuser()
    except (OSError, KeyError):  # no user name in a container
        return "unknown"


@hookimpl
def vtlab_steps() -> list[StepKind]:
    return [
        StepKind("measure", MeasureArgs, measure, check_measure),
        StepKind(
            "expect_reading",
            ExpectReadingArgs,
            expect_reading,
            check_expect_reading,
            metrics=lambda a: [cast(ExpectReadingArgs, a).metric],
        ),
        StepKind("device_fault", DeviceFaultArgs, device_fault, check_device_fault),
        StepKind("observe_event", ObserveEventArgs, observe_event, check_observe_event),
        StepKind("manual_check", ManualCheckArgs, manual_check),
    ]
