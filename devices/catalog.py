"""The device catalog: every device a welfare-technology delivery brings, as data.

Each entry is a `DeviceModel` (event vocabulary with Ademco Contact ID codes and SCAIP status codes, as
`devices.model` defines them) plus `DeviceTraits`: heartbeat behaviour, battery drain, a dose schedule,
the transports it can use, the readings a health meter takes (names, units, measuring range) and the
BLE profile or serial profile a simulated one speaks.

Codes. Contact ID and SCAIP codes are the published ones (shared/domain/PROTOCOLS.md sections 3 and 4)
where one exists. Contact ID has no event for a dose, a bed exit, a geofence exit or a health reading; for
those the catalog assigns a code in the 9xx range (`VTLAB_CODES`), which Contact ID does not use for
these events, so nothing is passed off as standard: a platform that forwards them over Contact ID needs a
mapping, and a lab file says so. Within one model, (code, qualifier) is unique: a receiving centre can
tell every event apart.

Faults. What a broken device does (drops out, runs its battery down, garbles frames, drifts its clock,
reports out-of-range readings, floods the line, vanishes) is a `DeviceFault`, plain data a link applies to
its next sends (harness.links.serial, harness.links.ble), so a scenario can ask for it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal

from devices.model import DeviceModel, EventSpec
from devices.safety_alarm import HEARTBEAT_RESUMED, HEARTBEAT_STOPPED, LOW_BATTERY
from harness.errors import InputError
from harness.hookspecs import hookimpl

# --- events shared by several models ----------------------------------------------------------------------------

RF_LOW_BATTERY = EventSpec(
    "low_battery",
    "384",
    priority=4,
    scaip_stc="0016",
    description="a radio sensor's battery is low (Contact ID 384 RF low battery)",
)
TAMPER = EventSpec("tamper", "137", priority=2, description="casing opened or device moved (Contact ID 137)")
SENSOR_FAULT = EventSpec(
    "sensor_fault",
    "147",
    priority=3,
    description="the sensor reports it cannot sense (Contact ID 147 sensor supervision failure)",
)

VTLAB_CODES: dict[str, str] = {
    "981": "dose missed (SCAIP 0081 pill not taken)",
    "982": "dose due (SCAIP 0082 pill reminder)",
    "983": "dose taken (SCAIP 0083 pill taken)",
    "990": "dispenser lid or refill door opened",
    "991": "out of bed and not back within the set time",
    "992": "motion seen (information)",
    "993": "left the safe zone (geofence exit; 3 = back inside)",
    "994": "position report (information)",
    "995": "health reading taken",
}
"""Codes vtlab assigns where Contact ID has none (9 + the SCAIP status code's last two digits where one exists)."""

# --- medicine dispenser ----------------------------------------------------------------------------------------

MEDICINE_DISPENSER = DeviceModel(
    name="medicine_dispenser",
    scaip_dty="0011",
    description="Medicine dispenser (medisindispenser): doses on a schedule, alarms when one is missed",
    events={
        "dose_due": EventSpec("dose_due", "982", priority=5, scaip_stc="0082", description="a dose is due now"),
        "dose_taken": EventSpec(
            "dose_taken", "983", priority=5, scaip_stc="0083", description="the user took the dose out of the dispenser"
        ),
        "dose_missed": EventSpec(
            "dose_missed",
            "981",
            priority=2,
            scaip_stc="0081",
            description="the dose was not taken in time: home care must follow up",
        ),
        "tamper": TAMPER,
        "lid_open": EventSpec("lid_open", "990", priority=4, description="lid or refill door opened"),
        "low_battery": EventSpec(
            "low_battery", "302", priority=4, scaip_stc="0016", description="battery below the warning level"
        ),
        "power_lost": EventSpec(
            "power_lost", "301", priority=3, scaip_stc="0085", description="mains power lost (Contact ID 301 new)"
        ),
        "power_restored": EventSpec(
            "power_restored",
            "301",
            qualifier="3",
            priority=5,
            scaip_stc="0086",
            description="mains power back (Contact ID 301 restore)",
        ),
        "heartbeat_stop": HEARTBEAT_STOPPED,
        "heartbeat_resume": HEARTBEAT_RESUMED,
    },
)

# --- sensors ---------------------------------------------------------------------------------------------------

DOOR_SENSOR = DeviceModel(
    name="door_sensor",
    scaip_dty="0014",
    description="Door sensor (dørsensor): reports the door opening; at night, for a user with a wandering plan, "
    "the platform raises an alarm",
    events={
        "door_open": EventSpec(
            "door_open",
            "134",
            priority=2,
            scaip_stc="0009",
            description="the door opened (Contact ID 134 entry/exit; SCAIP automatic alarm)",
        ),
        "door_closed": EventSpec(
            "door_closed", "134", qualifier="3", priority=5, description="the door closed again (restore)"
        ),
        "tamper": TAMPER,
        "low_battery": RF_LOW_BATTERY,
        "heartbeat_stop": HEARTBEAT_STOPPED,
        "heartbeat_resume": HEARTBEAT_RESUMED,
    },
)

BED_SENSOR = DeviceModel(
    name="bed_sensor",
    scaip_dty="0012",
    description="Bed sensor (sengesensor): the user left the bed and did not come back within the set time",
    events={
        "out_of_bed": EventSpec(
            "out_of_bed",
            "991",
            priority=2,
            scaip_stc="0009",
            description="out of bed longer than allowed (automatic alarm)",
        ),
        "back_in_bed": EventSpec("back_in_bed", "991", qualifier="3", priority=5, description="back in bed (restore)"),
        "low_battery": RF_LOW_BATTERY,
        "sensor_fault": SENSOR_FAULT,
        "heartbeat_stop": HEARTBEAT_STOPPED,
        "heartbeat_resume": HEARTBEAT_RESUMED,
    },
)

EPILEPSY_SENSOR = DeviceModel(
    name="epilepsy_sensor",
    scaip_dty="0012",  # usually a bed monitor under the mattress; SCAIP lists no epilepsy device type
    description="Epilepsy sensor (epilepsialarm): a seizure detected at night raises a medical alarm",
    events={
        "seizure": EventSpec(
            "seizure",
            "100",
            priority=1,
            scaip_stc="0009",
            description="seizure detected (Contact ID 100 medical; SCAIP automatic alarm)",
        ),
        "low_battery": RF_LOW_BATTERY,
        "sensor_fault": SENSOR_FAULT,
        "heartbeat_stop": HEARTBEAT_STOPPED,
        "heartbeat_resume": HEARTBEAT_RESUMED,
    },
)

MOTION_SENSOR = DeviceModel(
    name="motion_sensor",
    scaip_dty="0004",  # fixed trigger: SCAIP lists no motion or inactivity sensor
    description="Motion sensor (bevegelsessensor): no movement in the home for too long raises an alarm",
    events={
        "inactivity": EventSpec(
            "inactivity",
            "102",
            priority=2,
            scaip_stc="0009",
            description="no movement for the set time (Contact ID 102 fail to report in)",
        ),
        "motion": EventSpec("motion", "992", priority=5, description="movement seen (information)"),
        "low_battery": RF_LOW_BATTERY,
        "tamper": TAMPER,
        "heartbeat_stop": HEARTBEAT_STOPPED,
        "heartbeat_resume": HEARTBEAT_RESUMED,
    },
)

FALL_SENSOR = DeviceModel(
    name="fall_sensor",
    scaip_dty="0005",
    description="Fall sensor on the wall or ceiling (fallsensor, not worn): an automatic alarm on a fall",
    events={
        "fall": EventSpec(
            "fall_detected", "100", priority=1, scaip_stc="0009", description="a fall is detected (automatic alarm)"
        ),
        "low_battery": RF_LOW_BATTERY,
        "sensor_fault": SENSOR_FAULT,
        "heartbeat_stop": HEARTBEAT_STOPPED,
        "heartbeat_resume": HEARTBEAT_RESUMED,
    },
)

ALARM_BUTTON = DeviceModel(
    name="alarm_button",
    scaip_dty="0003",
    description="Wearable BLE alarm button and fall detector reporting to a home gateway by advertisement or by "
    "GATT notification",
    events={
        "button_press": EventSpec(
            "personal_emergency", "101", priority=1, scaip_stc="0010", description="the user presses the button"
        ),
        "fall": EventSpec("fall_detected", "100", priority=1, scaip_stc="0009", description="a fall is detected"),
        "cancel": EventSpec(
            "alarm_cancelled",
            "406",
            priority=3,
            description="the wearer cancels the alarm just raised (Contact ID 406 cancel; GATT report only)",
        ),
        "low_battery": RF_LOW_BATTERY,
        "tamper": TAMPER,
        "heartbeat_stop": HEARTBEAT_STOPPED,
        "heartbeat_resume": HEARTBEAT_RESUMED,
    },
)

GPS_TRACKER = DeviceModel(
    name="gps_tracker",
    scaip_dty="0051",
    description="GPS tracker (lokaliseringsteknologi) for a person who wanders: positions and geofence exits",
    events={
        "geofence_exit": EventSpec(
            "geofence_exit",
            "993",
            priority=1,
            scaip_stc="0009",
            description="the user left the agreed safe zone (automatic alarm, with position)",
        ),
        "geofence_return": EventSpec(
            "geofence_return", "993", qualifier="3", priority=5, description="back inside the safe zone (restore)"
        ),
        "button_press": EventSpec(
            "personal_emergency",
            "101",
            priority=1,
            scaip_stc="0010",
            description="the user presses the tracker's alarm button",
        ),
        "position": EventSpec("position", "994", priority=5, description="periodic position report"),
        "low_battery": LOW_BATTERY,
        "heartbeat_stop": HEARTBEAT_STOPPED,
        "heartbeat_resume": HEARTBEAT_RESUMED,
    },
)

# --- health meters (digital hjemmeoppfølging) -------------------------------------------------------------------

MEASUREMENT = EventSpec("measurement", "995", priority=5, description="a reading taken (values, units, time)")
THRESHOLD_ALARM = EventSpec(
    "threshold_alarm",
    "100",
    priority=2,
    wire=False,
    raises="follow_up_alarm",
    description="a reading beyond the user's threshold: the follow-up platform must raise an alarm",
)


def _meter(name: str, description: str) -> DeviceModel:
    return DeviceModel(
        name=name,
        scaip_dty="0000",  # health meters do not speak SCAIP: no device type
        heartbeat=False,
        description=description,
        events={"measurement": MEASUREMENT, "threshold_alarm": THRESHOLD_ALARM, "low_battery": LOW_BATTERY},
    )


BLOOD_PRESSURE_METER = _meter("blood_pressure_meter", "Blood pressure meter (BLE Blood Pressure service 0x1810)")
PULSE_OXIMETER = _meter("pulse_oximeter", "Pulse oximeter (BLE Pulse Oximeter service 0x1822, spot-check)")
WEIGHT_SCALE = _meter("weight_scale", "Weight scale (BLE Weight Scale service 0x181D)")
GLUCOSE_METER = _meter("glucose_meter", "Blood glucose meter (BLE Glucose service 0x1808)")
THERMOMETER = _meter("thermometer", "Thermometer (BLE Health Thermometer service 0x1809)")


# --- readings ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadingSpec:
    """One value a meter measures: the units it may be written in and its measuring range per unit
    (a value outside it is what the `out_of_range` fault sends)."""

    name: str
    units: tuple[str, ...]
    ranges: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    required: bool = True

    def out_of_range(self, unit: str) -> Decimal:
        """A value the meter cannot really measure, in `unit` (just above the range)."""
        _low, high = self.ranges.get(unit, (Decimal(0), Decimal(999)))
        return high + (Decimal(1) if high >= 10 else Decimal("0.5"))


def _r(name: str, *units_ranges: tuple[str, str, str], required: bool = True) -> ReadingSpec:
    return ReadingSpec(
        name,
        tuple(u for u, _, _ in units_ranges),
        {u: (Decimal(lo), Decimal(hi)) for u, lo, hi in units_ranges},
        required,
    )


@dataclass(frozen=True, slots=True)
class DeviceTraits:
    """What a model does over time and how it can be reached; simulated devices follow it."""

    model: DeviceModel
    transports: tuple[str, ...]
    heartbeat_s: float | None = None  # default supervision interval (the lab file's `heartbeat:` wins)
    battery_drain_per_day: float = 0.0  # percentage points per day in normal use
    schedule: tuple[str, ...] = ()  # local times (HH:MM) of the dose schedule
    readings: dict[str, ReadingSpec] = field(default_factory=dict)
    ble_profile: str | None = None  # harness.transports.ble.PROFILES name a simulated one serves
    serial_profile: str | None = None  # fixtures/profiles/<name>.yaml a simulated one speaks
    report: Literal["gatt", "notification", "manufacturer", "bthome", "serial", "ip"] = "ip"
    # gatt: readings on a standard profile; notification: alarms on vtlab's vendor alarm service
    # (harness.protocols.ble_alarm); manufacturer / bthome: connectionless advertisements


BP_READINGS = {
    r.name: r
    for r in (
        _r("systolic", ("mmHg", "0", "300"), ("kPa", "0", "40")),
        _r("diastolic", ("mmHg", "0", "300"), ("kPa", "0", "40")),
        _r("mean_arterial_pressure", ("mmHg", "0", "300"), ("kPa", "0", "40"), required=False),
        _r("pulse", ("bpm", "20", "250"), required=False),
    )
}

CATALOG: dict[str, DeviceTraits] = {
    t.model.name: t
    for t in (
        DeviceTraits(
            MEDICINE_DISPENSER,
            ("serial", "mqtt", "scaip", "dc09", "memory"),
            heartbeat_s=600,
            battery_drain_per_day=0.5,
            schedule=("08:00", "14:00", "20:00"),
            serial_profile="medicine_dispenser",
            report="serial",
        ),
        DeviceTraits(
            DOOR_SENSOR,
            ("mqtt", "scaip", "dc09", "ble", "memory"),
            heartbeat_s=600,
            battery_drain_per_day=0.05,
            report="bthome",  # over BLE: the BTHome v2 `door` object, as common door/window sensors send it
        ),
        DeviceTraits(BED_SENSOR, ("mqtt", "scaip", "dc09", "memory"), heartbeat_s=600, battery_drain_per_day=0.05),
        DeviceTraits(EPILEPSY_SENSOR, ("mqtt", "scaip", "dc09", "memory"), heartbeat_s=300, battery_drain_per_day=0.1),
        DeviceTraits(MOTION_SENSOR, ("mqtt", "scaip", "dc09", "memory"), heartbeat_s=600, battery_drain_per_day=0.05),
        DeviceTraits(FALL_SENSOR, ("mqtt", "scaip", "dc09", "memory"), heartbeat_s=300, battery_drain_per_day=0.1),
        DeviceTraits(ALARM_BUTTON, ("ble", "memory"), heartbeat_s=60, battery_drain_per_day=0.1, report="manufacturer"),
        DeviceTraits(GPS_TRACKER, ("mqtt", "scaip", "memory"), heartbeat_s=300, battery_drain_per_day=8.0),
        DeviceTraits(
            BLOOD_PRESSURE_METER, ("ble", "memory"), readings=BP_READINGS, ble_profile="blood_pressure", report="gatt"
        ),
        DeviceTraits(
            PULSE_OXIMETER,
            ("ble", "memory"),
            ble_profile="pulse_oximeter",
            report="gatt",
            readings={r.name: r for r in (_r("spo2", ("%", "0", "100")), _r("pulse", ("bpm", "20", "250")))},
        ),
        DeviceTraits(
            WEIGHT_SCALE,
            ("ble", "memory"),
            ble_profile="weight_scale",
            report="gatt",
            readings={r.name: r for r in (_r("weight", ("kg", "0", "300"), ("lb", "0", "660")),)},
        ),
        DeviceTraits(
            GLUCOSE_METER,
            ("ble", "memory"),
            ble_profile="glucose",
            report="gatt",
            readings={r.name: r for r in (_r("glucose", ("mmol/L", "0.6", "33.3"), ("mg/dL", "10", "600")),)},
        ),
        DeviceTraits(
            THERMOMETER,
            ("ble", "memory"),
            ble_profile="thermometer",
            report="gatt",
            readings={r.name: r for r in (_r("temperature", ("Cel", "30", "45"), ("degF", "86", "113")),)},
        ),
    )
}

MODELS: tuple[DeviceModel, ...] = tuple(t.model for t in CATALOG.values())


def traits(model: str) -> DeviceTraits | None:
    return CATALOG.get(model)


# --- reading values as written in scenarios ---------------------------------------------------------------------

_VALUE = re.compile(r"^\s*(?P<value>[+-]?[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[^\s0-9.+-]\S*)\s*$")


def parse_reading(name: str, text: object, spec: ReadingSpec) -> tuple[Decimal, str]:
    """`"182 mmHg"` -> (Decimal("182"), "mmHg"), with the unit checked against what the meter measures in."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise InputError(
            f"reading `{name}` is {text!r}", fix=f"write a number and a unit, e.g. `{name}: 120 {spec.units[0]}`"
        )
    m = _VALUE.match(str(text))
    if m is None:
        raise InputError(
            f"reading `{name}: {text}` has no unit",
            fix=f"write e.g. `{name}: {text} {spec.units[0]}` (units: {', '.join(spec.units)})",
        )
    unit = m.group("unit")
    if unit not in spec.units:
        raise InputError(
            f"reading `{name}` is in `{unit}`, which this meter does not measure in",
            fix=f"use one of: {', '.join(spec.units)}",
        )
    try:
        return Decimal(m.group("value")), unit
    except InvalidOperation:  # pragma: no cover - the regex admits only decimal numbers
        raise InputError(f"reading `{name}: {text}` is not a number", fix="write digits, e.g. 36.6") from None


# --- faults -----------------------------------------------------------------------------------------------------

FaultKind = Literal[
    "dropout", "low_battery", "garbled", "clock_drift", "out_of_range", "flood", "stop_mid_frame", "vanish"
]
FAULT_KINDS: dict[str, str] = {
    "dropout": "the device sends nothing for its next `count` events (radio or line silent)",
    "low_battery": "the device reports `battery` % from now on",
    "garbled": "the next `count` frames are corrupted on the wire (bytes flipped: checksum fails)",
    "clock_drift": "the device's clock is `drift` off: its timestamps (readings, frames) shift by it",
    "out_of_range": "the next `count` readings report a value outside the meter's measuring range",
    "flood": "the device babbles `size` bytes with no frame end before its next frame",
    "stop_mid_frame": "the next frame stops half-way (a reset or a cut cable)",
    "vanish": "the device disappears (unplugged, out of radio range) until `count` events later",
}


@dataclass(frozen=True, slots=True)
class DeviceFault:
    """One fault on request. `count` events are affected (0: until cleared)."""

    kind: FaultKind
    count: int = 1
    battery: int = 5
    drift_s: float = 0.0
    size: int = 4096

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise InputError(f"unknown device fault `{self.kind}`", fix=f"use one of: {', '.join(FAULT_KINDS)}")
        if self.count < 0 or not 0 <= self.battery <= 100 or self.size <= 0:
            raise InputError(
                f"device fault {self.kind}: count >= 0, battery 0..100 and size > 0",
                fix="e.g. {fault: garbled, count: 1}",
            )


class FaultSet:
    """The faults active on one device; links consult it on every send (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, tuple[DeviceFault, int]] = {}  # kind -> (fault, sends left; -1 = forever)

    def add(self, fault: DeviceFault) -> None:
        with self._lock:
            self._active[fault.kind] = (fault, fault.count if fault.count > 0 else -1)

    def clear(self, kind: str | None = None) -> None:
        with self._lock:
            if kind is None:
                self._active.clear()
            else:
                self._active.pop(kind, None)

    def peek(self, kind: str) -> DeviceFault | None:
        """The fault if active, without using it up (standing conditions: battery, clock drift)."""
        with self._lock:
            entry = self._active.get(kind)
            return entry[0] if entry else None

    def take(self, kind: str) -> DeviceFault | None:
        """The fault if active, counting one event against it."""
        with self._lock:
            entry = self._active.get(kind)
            if entry is None:
                return None
            fault, left = entry
            if left > 0:
                left -= 1
                if left == 0:
                    del self._active[kind]
                else:
                    self._active[kind] = (fault, left)
            return fault

    @property
    def active(self) -> list[DeviceFault]:
        with self._lock:
            return [f for f, _ in self._active.values()]


@hookimpl
def vtlab_device_models() -> list[DeviceModel]:
    return list(MODELS)
