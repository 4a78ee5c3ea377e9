"""BLE links: vtlab plays a health meter or an alarm button as a Bumble peripheral, and `BleGateway` /
`AdvertisementGateway` play the home gateway that collects from them (the reference lab's gateway role, and
tests' mock platforms).

`via: ble` on a device, with a `ble:` section (`BleDeviceSettings`):

- a health meter (blood pressure, pulse oximeter, weight, glucose, thermometer) serves its standard GATT
  profile; a reading a `measure` step injects is indicated (or notified) on the measurement characteristic,
  with the meter's time stamp, once a collector has subscribed (a real meter also keeps its reading until
  its gateway connects). The stimulus is stamped when the reading is taken.
- an alarm button or fall detector reports by connectionless advertisement: vtlab's example manufacturer
  format (harness.protocols.ble_adv.AlarmButtonAdvert, company 0xFFFF, with an event counter) or BTHome v2
  (button event, packet id). The counter is the per-event number of the correlation key
  (`<device>:<code>:<counter mod 1000>`, harness.links.gateway).

`radio: emulated:<name>` puts every device and gateway naming the same air on one in-process Bumble LocalLink
(CI and the embedded lab). A real controller needs a Bumble peripheral on a real HCI transport, which
harness.transports.ble does not offer yet.

Device faults (devices.catalog.DeviceFault) apply to the next sends: `dropout` (nothing sent), `vanish` (the
radio goes silent), `out_of_range` (the first reading is replaced by a value outside the meter's range),
`clock_drift` (the meter's time stamp is off by `drift`), `low_battery` (battery level and advert).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from devices.catalog import CATALOG, DeviceTraits, FaultSet
from devices.model import DeviceModel
from harness.clock import now_ns
from harness.errors import InputError
from harness.links import IncomingHandler, Outgoing, Refused, RefusedHandler, Sent
from harness.links.dc09 import key_of
from harness.links.gateway import GatewayEvent, Readings, parse_time, readings_json, readings_of, zone_of
from harness.protocols import ble_adv, bthome
from harness.protocols import ble_health as h
from harness.protocols.base import ProtocolError
from harness.protocols.ieee11073 import Special
from harness.transports.ble import Advertisement, BleError, BumbleCentral, BumblePeripheral, Notification
from harness.transports.ble_link import BleLink
from harness.units import parse_duration

MEASUREMENT_UUIDS = {
    "blood_pressure": 0x2A35,
    "pulse_oximeter": 0x2A5E,
    "weight_scale": 0x2A9D,
    "thermometer": 0x2A1C,
    "glucose": 0x2A18,
}
"""The characteristic a meter sends its readings on, per profile."""


class BleDeviceSettings(BaseModel):
    """The `ble:` section of a device in the lab file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    radio: str = Field("emulated:bench", description="emulated:<name> (Bumble LocalLink in this process)")
    address: str | None = Field(
        None,
        pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$",
        description="the peripheral's address, so the gateway under test can be paired to it",
    )
    report: Literal["gatt", "manufacturer", "bthome"] | None = Field(
        None, description="how an alarm button reports (default: the device model's)"
    )
    profile: str | None = Field(None, description="meter: the GATT profile it serves (default: the model's)")
    hold: str = Field("30s", description="meter: how long a reading waits for a collector to subscribe")

    @field_validator("hold")
    @classmethod
    def _dur(cls, v: str) -> str:
        parse_duration(v)
        return v


_CONFIGURED: dict[str, BleDeviceSettings] = {}
_AIRS: dict[str, BleLink] = {}
_AIRS_LOCK = threading.Lock()


def configure(device_id: str, settings: BleDeviceSettings | None) -> None:
    """Give a device its BLE settings outside the lab file (tests; until the lab file's Device has `ble:`)."""
    if settings is None:
        _CONFIGURED.pop(device_id, None)
    else:
        _CONFIGURED[device_id] = settings


def air(radio: str) -> BleLink:
    """The shared emulated air `emulated:<name>`: devices and gateways in this process meet on it."""
    kind, _, name = radio.partition(":")
    if kind != "emulated" or not name:
        raise InputError(
            f"BLE radio `{radio}`: vtlab can play a peripheral on an emulated radio only",
            fix="write radio: emulated:bench (a real controller needs a Bumble HCI peripheral)",
        )
    with _AIRS_LOCK:
        if name not in _AIRS:
            _AIRS[name] = BleLink(f"air-{name}")
        return _AIRS[name]


def release_air(radio: str) -> None:
    """Close an emulated air (its devices must be closed first)."""
    with _AIRS_LOCK:
        link = _AIRS.pop(radio.partition(":")[2], None)
    if link is not None:
        link.close()


# --- readings <-> GATT values -----------------------------------------------------------------------------------


def _q(readings: Readings, name: str) -> h.Quantity | None:
    item = readings.get(name)
    return h.Quantity(item[0], item[1]) if item is not None else None


def _date_time(measured: str) -> h.DateTime:
    t = parse_time(measured)
    return h.DateTime(t.year, t.month, t.day, t.hour, t.minute, t.second)


def gatt_reading(profile: str, readings: Readings, measured: str | None) -> Any:
    """The GATT reading a meter of `profile` sends for `readings` (names as in devices.catalog)."""
    ts = _date_time(measured) if measured else None
    if profile == "blood_pressure":
        sys_, dia = _q(readings, "systolic"), _q(readings, "diastolic")
        assert sys_ is not None and dia is not None
        mean = _q(readings, "mean_arterial_pressure") or h.Quantity(Special.NAN, sys_.unit)
        return h.BloodPressureMeasurement(sys_, dia, mean, ts, _q(readings, "pulse"))
    if profile == "pulse_oximeter":
        spo2, pulse = _q(readings, "spo2"), _q(readings, "pulse")
        assert spo2 is not None and pulse is not None
        return h.PlxSpotCheck(spo2, pulse, ts)
    if profile == "weight_scale":
        weight = _q(readings, "weight")
        assert weight is not None
        return h.WeightMeasurement(weight, ts)
    if profile == "thermometer":
        temperature = _q(readings, "temperature")
        assert temperature is not None
        return h.TemperatureMeasurement(temperature, ts)
    if profile == "glucose":
        glucose = _q(readings, "glucose")
        assert glucose is not None and ts is not None
        return h.GlucoseMeasurement(1, ts, concentration=glucose)
    raise InputError(f"BLE profile `{profile}` takes no readings", fix=f"use one of {sorted(MEASUREMENT_UUIDS)}")


def _keep(q: h.Quantity | None) -> tuple[Decimal, str] | None:
    if q is None or isinstance(q.value, Special):
        return None  # not measured (NaN) or not a number: nothing to forward
    return q.value, q.unit


def readings_from(value: Any) -> tuple[dict[str, tuple[Decimal, str]], str | None]:
    """A decoded GATT measurement -> (readings by catalog name, the meter's time stamp as ISO text)."""
    pairs: dict[str, h.Quantity | None] = {}
    if isinstance(value, h.BloodPressureMeasurement):
        pairs = {
            "systolic": value.systolic,
            "diastolic": value.diastolic,
            "mean_arterial_pressure": value.mean_arterial_pressure,
            "pulse": value.pulse_rate,
        }
    elif isinstance(value, h.PlxSpotCheck):
        pairs = {"spo2": value.spo2, "pulse": value.pulse_rate}
    elif isinstance(value, h.WeightMeasurement):
        pairs = {"weight": value.weight}
    elif isinstance(value, h.TemperatureMeasurement):
        pairs = {"temperature": value.temperature}
    elif isinstance(value, h.GlucoseMeasurement):
        pairs = {"glucose": value.concentration}
        return {k: v for k, q in pairs.items() if (v := _keep(q)) is not None}, value.base_time.iso()
    readings = {k: v for k, q in pairs.items() if (v := _keep(q)) is not None}
    ts = getattr(value, "timestamp", None)
    return readings, ts.iso() if ts is not None else None


# --- vtlab plays the device -------------------------------------------------------------------------------------

_STATE_OF_EVENT = {
    "personal_emergency": ble_adv.AlarmState.ALARM,
    "fall_detected": ble_adv.AlarmState.FALL,
    "low_battery": ble_adv.AlarmState.LOW_BATTERY,
    "tamper": ble_adv.AlarmState.TAMPER,
}
_EVENT_OF_STATE = {v: k for k, v in _STATE_OF_EVENT.items()}


class BleDeviceLink:
    """A simulated BLE meter or alarm button on a Bumble peripheral."""

    def __init__(
        self, device_id: str, model: DeviceModel, traits: DeviceTraits | None, settings: BleDeviceSettings
    ) -> None:
        self.device_id = device_id
        self.model = model
        self.settings = settings
        self.faults = FaultSet()
        self.profile = settings.profile or (traits.ble_profile if traits else None)
        self.report = settings.report or (traits.report if traits and traits.report != "ip" else "manufacturer")
        self._air = air(settings.radio)
        self._hold_s = parse_duration(settings.hold) / 1e9
        self._refused: RefusedHandler | None = None
        self._counter = 0
        self._battery = 100
        self._vanished = False
        self._lock = threading.Lock()
        profiles = [self.profile, "battery", "device_information"] if self.profile else ["battery"]
        self.peripheral = BumblePeripheral(
            self._air, name=f"vtlab-{device_id}", profiles=profiles, address=settings.address
        )
        self._work: queue.Queue[tuple[Any, str] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        if self.profile:
            self.peripheral.start_advertising()
            self._worker = threading.Thread(target=self._deliver, name=f"ble-meter-{device_id}", daemon=True)
            self._worker.start()

    @property
    def address(self) -> str:
        return self.peripheral.address

    # --- meters
    def _deliver(self) -> None:
        """Send queued readings once a collector listens; a reading nobody collects is a finding."""
        while (item := self._work.get()) is not None:
            reading, what = item
            uuid = int(reading.UUID)
            if not self.peripheral.wait_subscribed(uuid, self._hold_s):
                self._finding(
                    f"{self.device_id}: no collector subscribed to {uuid:04X} within {self.settings.hold}: "
                    f"{what} not delivered"
                )
                continue
            try:
                self.peripheral.send_reading(reading, timeout_s=5.0)
            except BleError as exc:
                self._finding(f"{self.device_id}: {what} could not be sent: {exc}")

    def _finding(self, text: str) -> None:
        if self._refused is not None:
            self._refused(Refused(now_ns(), "", text, f"ble {self.device_id}"))

    def _send_reading(self, out: Outgoing, readings: Readings, measured: str | None) -> Sent:
        if not self.profile:
            raise InputError(
                f"device `{self.device_id}` ({self.model.name}) takes no readings over BLE",
                fix="measure on a health meter",
            )
        sent: dict[str, tuple[Decimal, str]] = dict(readings)
        applied: list[str] = []
        if self.faults.take("out_of_range") is not None:
            traits = CATALOG.get(self.model.name)
            name = next(iter(sent))
            spec = traits.readings.get(name) if traits else None
            unit = sent[name][1]
            sent[name] = (spec.out_of_range(unit) if spec else Decimal(9999), unit)
            applied.append("out_of_range")
        stamp = measured
        drift = self.faults.peek("clock_drift")
        if drift is not None and measured is not None:
            shifted = parse_time(measured) + timedelta(seconds=drift.drift_s)
            stamp = shifted.replace(microsecond=0).isoformat().replace("+00:00", "Z")
            applied.append("clock_drift")
        fields: dict[str, Any] = {"event": out.event, "readings": readings_json(readings), "measured": measured}
        if applied:
            fields["fault"] = ",".join(applied)
            fields["on_the_air"] = {"readings": readings_json(sent), "measured": stamp}
        reading = gatt_reading(self.profile, sent, stamp)
        t = now_ns()
        if self.faults.take("dropout") is not None:
            return Sent(t, {**fields, "fault": ",".join([*applied, "dropout"])})
        self._work.put((reading, f"reading {out.cid}"))
        return Sent(t, fields)

    # --- alarm buttons
    def _send_alarm(self, out: Outgoing) -> Sent:
        state = _STATE_OF_EVENT.get(out.event)
        if state is None:
            raise InputError(
                f"device `{self.device_id}`: event `{out.event}` has no advertised state",
                fix=f"use one of {sorted(_STATE_OF_EVENT)}",
            )
        self._counter = (self._counter + 1) % 0x10000
        low = self.faults.peek("low_battery")
        battery = low.battery if low is not None else out.battery
        if self.report == "bthome":
            number = self._counter % 0x100
            objects: list[tuple[int, bthome.Value]] = [(0x00, number), (0x01, battery)]
            if state is ble_adv.AlarmState.ALARM:
                objects.append((0x3A, bthome.ButtonEvent.PRESS))
            payload = bthome.service_data_ad(bthome.encode(objects, trigger_based=True))
        elif self.report == "manufacturer":
            number = self._counter
            advert = ble_adv.AlarmButtonAdvert(state, battery, self._counter)
            payload = ble_adv.ad_manufacturer(ble_adv.EXAMPLE_COMPANY_ID, advert.to_bytes())
        else:
            raise InputError(
                f"device `{self.device_id}`: an alarm by GATT notification needs an alert characteristic "
                "in harness.transports.ble.PROFILES",
                fix="use report: manufacturer or bthome",
            )
        data = ble_adv.ad_flags() + payload
        key = key_of(self.device_id, out.code, zone_of(number))
        fields: dict[str, Any] = {
            "event": out.event,
            "code": out.code,
            "counter": number,
            "zone": zone_of(number),
            "advert": data.hex(),
            "report": self.report,
        }
        t = now_ns()
        if self.faults.take("dropout") is not None:
            return Sent(t, {**fields, "fault": "dropout"}, key)
        self.peripheral.start_advertising(data, connectable=False)
        return Sent(t, fields, key)

    def send(self, out: Outgoing) -> Sent:
        with self._lock:
            if self.faults.take("vanish") is not None:
                if not self._vanished:
                    self.peripheral.vanish()
                    self._vanished = True
                return Sent(now_ns(), {"event": out.event, "fault": "vanish", "note": "radio silent: nothing sent"})
            if self._vanished:
                self.peripheral.reappear()
                self._vanished = False
            low = self.faults.peek("low_battery")
            if low is not None and low.battery != self._battery:
                self._battery = low.battery
                self.peripheral.set_value(0x2A19, bytes([low.battery]))
            readings, measured = readings_of(out)
            if readings is not None:
                return self._send_reading(out, readings, measured)
            return self._send_alarm(out)

    def heartbeat(self, seq: int, interval_s: float, sent_text: str) -> None:
        """A meter or button is supervised by its gateway through its advertising; nothing extra to send."""

    def on_ack(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        self._refused = refused

    def close(self) -> None:
        self._work.put(None)
        if self._worker is not None:
            self._worker.join(timeout=self._hold_s + 6)
        with contextlib.suppress(Exception):
            self.peripheral.close()


def ble_device(ctx: Any, device_id: str) -> BleDeviceLink:
    from harness.scenario.registry import device_models

    spec = ctx.lab.spec.devices[device_id]
    settings = getattr(spec, "ble", None) or _CONFIGURED.get(device_id) or BleDeviceSettings()
    if not isinstance(settings, BleDeviceSettings):
        settings = BleDeviceSettings.model_validate(settings)
    return BleDeviceLink(device_id, device_models()[spec.model], CATALOG.get(spec.model), settings)


def ble_centre(ctx: Any, probe: str) -> Any:
    raise InputError(
        f"probe `{probe}`: BLE is a device transport; a response centre is not reached over BLE",
        fix="use via: mqtt, dc09, scaip or serial for the probe",
    )


# --- the gateway half -------------------------------------------------------------------------------------------

GatewayHandler = Callable[[GatewayEvent], None]
FindingHandler = Callable[[Refused], None]


class BleGateway:
    """A home gateway collecting from one BLE meter: connects (and reconnects), subscribes to the measurement
    characteristics it finds, and hands each reading over as a `GatewayEvent` with the values and the meter's
    time stamp unchanged. A value it cannot decode is a finding. Callbacks run on the BLE loop thread."""

    def __init__(
        self,
        central: BumbleCentral,
        device_id: str,
        address: str,
        model: DeviceModel | None,
        on_event: GatewayHandler,
        on_finding: FindingHandler,
        *,
        retry_s: float = 0.2,
    ) -> None:
        self.central = central
        self.device_id = device_id
        self.address = address
        self.model = model
        self._on_event = on_event
        self._on_finding = on_finding
        self._retry_s = retry_s
        self._stop = threading.Event()
        self.subscribed = threading.Event()
        self.connections = 0
        self._thread = threading.Thread(target=self._run, name=f"ble-gateway-{device_id}", daemon=True)
        self._seq = 0

    def start(self) -> BleGateway:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.central.connect(self.address, timeout_s=2.0)
                found = {c for chars in self.central.services().values() for c in chars}
                for uuid in MEASUREMENT_UUIDS.values():
                    if f"{uuid:04X}" in found:
                        self.central.start_notify(uuid, self._value)
                self.connections += 1
                self.subscribed.set()
            except BleError:
                with contextlib.suppress(BleError):
                    if self.central.is_connected:
                        self.central.disconnect(timeout_s=1.0)
                self._stop.wait(self._retry_s)
                continue
            while self.central.is_connected and not self._stop.wait(0.05):
                pass
            self.subscribed.clear()
            if not self._stop.is_set():
                self._on_finding(
                    Refused(
                        now_ns(), "", f"BLE meter {self.address} disconnected; reconnecting", f"ble {self.device_id}"
                    )
                )

    def _value(self, note: Notification) -> None:
        try:
            value = h.decode(note.uuid, note.value)
            readings, measured = readings_from(value)
        except (ProtocolError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, ProtocolError) else str(exc)
            self._on_finding(
                Refused(note.arrived_ns, note.value.hex(), f"{note.uuid}: {reason}", f"ble {self.device_id}")
            )
            return
        self._seq += 1
        spec = self.model.events.get("measurement") if self.model else None
        self._on_event(
            GatewayEvent(
                note.arrived_ns,
                self.device_id,
                "measurement",
                spec.code if spec else "995",
                zone_of(self._seq),
                readings=readings,
                measured=measured,
                raw=note.value.hex(),
            )
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(BleError):
            if self.central.is_connected:
                self.central.disconnect(timeout_s=2.0)


class AdvertisementGateway:
    """A home gateway listening for alarm buttons' advertisements: each new event counter (manufacturer data
    or BTHome packet id) is one `GatewayEvent`; repeats of the same advertisement are the same event, and an
    advertisement no decoder accepts is a finding."""

    def __init__(
        self,
        central: BumbleCentral,
        devices: Mapping[str, tuple[str, DeviceModel]],
        on_event: GatewayHandler,
        on_finding: FindingHandler,
        *,
        window_s: float = 0.5,
    ) -> None:
        self.central = central
        self.devices = {a.upper(): d for a, d in devices.items()}  # address -> (device id, model)
        self._on_event = on_event
        self._on_finding = on_finding
        self._window_s = window_s
        self._last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ble-adv-gateway", daemon=True)

    def start(self) -> AdvertisementGateway:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.central.scan(self._window_s, until=self._seen)
            except BleError as exc:
                self._on_finding(Refused(now_ns(), "", f"scan failed: {exc}", "ble scan"))
                self._stop.wait(0.2)

    def _seen(self, adv: Advertisement) -> bool:
        entry = self.devices.get(adv.address.upper())
        if entry is None:
            return self._stop.is_set()
        device_id, model = entry
        try:
            decoded = adv.decoded()
        except ProtocolError as exc:
            self._on_finding(Refused(adv.arrived_ns, adv.data.hex(), exc.reason, f"ble {device_id}"))
            return self._stop.is_set()
        for err in decoded.errors:
            self._on_finding(Refused(adv.arrived_ns, adv.data.hex(), err.reason, f"ble {device_id}"))
        found: list[tuple[int, str, int | None]] = []
        for _company, event in decoded.manufacturer:
            if isinstance(event, ble_adv.AlarmButtonAdvert):
                for state, name in _EVENT_OF_STATE.items():
                    if state in event.state:
                        found.append((event.counter, name, event.battery_percent))
                        break
        if decoded.bthome is not None and decoded.bthome.packet_id is not None:
            battery = decoded.bthome.battery
            name = "personal_emergency" if decoded.bthome.button_events else "bthome_update"
            found.append((decoded.bthome.packet_id, name, int(battery) if battery is not None else None))
        for counter, name, battery in found:
            if self._last.get(adv.address) == counter:
                continue  # the same advertisement again
            self._last[adv.address] = counter
            spec = next((s for s in model.events.values() if s.wire and s.event == name), None)
            if spec is None:
                self._on_finding(
                    Refused(adv.arrived_ns, adv.data.hex(), f"event {name} is not in {model.name}", f"ble {device_id}")
                )
                continue
            self._on_event(
                GatewayEvent(
                    adv.arrived_ns,
                    device_id,
                    spec.event,
                    spec.code,
                    zone_of(counter),
                    spec.qualifier,
                    spec.priority,
                    battery,
                    raw=adv.data.hex(),
                )
            )
        return self._stop.is_set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._window_s + 6)
