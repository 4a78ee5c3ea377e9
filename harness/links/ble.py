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
  (button event, packet id); or, with `report: notification`, it keeps a connection to its gateway and
  notifies each alarm on vtlab's vendor alarm service (harness.protocols.ble_alarm, 128-bit UUIDs; the
  gateway must pair before it may subscribe). Like a meter's reading, an alarm waits up to `hold` for a
  subscriber, so an alarm raised while the link is down arrives after the gateway reconnects, or is a
  finding. The counter is the per-event number of the correlation key
  (`<device>:<code>:<counter mod 1000>`, harness.links.gateway).

`radio: emulated:<name>` puts every device and gateway naming the same air on one in-process Bumble LocalLink
(CI and the embedded lab). Any other Bumble transport (`usb:0`, `hci-socket:0`, `tcp-client:HOST:PORT`, ...)
runs the simulated device on its own Bumble host over that controller, so a supplier's real gateway or tablet
can pair with it.

`mode: observe`: vtlab does not play the device; a real one is there (`address`), and vtlab's central (bleak on
the system adapter, `adapter: hci0`, or Bumble on `radio:`) listens to it as its gateway would: advertisements
(manufacturer data, BTHome), the alarm notifications of a button that advertises vtlab's alarm service, or
the measurements a meter indicates. Each event it reports is an `Incoming` of kind `device_event`;
`observe_event` waits for the one the tester provoked (after `manual_check`) and makes it the stimulus.

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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from devices.catalog import CATALOG, DeviceTraits, FaultSet
from devices.model import DeviceModel
from harness.clock import now_ns
from harness.errors import InputError, Place, TargetError, suggest
from harness.links import IncomingHandler, Outgoing, Refused, RefusedHandler, Sent
from harness.links.dc09 import key_of
from harness.links.gateway import GatewayEvent, Readings, parse_time, readings_json, readings_of, zone_of
from harness.links.observed import ObservedDevice
from harness.protocols import ble_adv, ble_alarm, bthome
from harness.protocols import ble_health as h
from harness.protocols.base import ProtocolError
from harness.protocols.ieee11073 import Special
from harness.transports.ble import (
    Advertisement,
    BleakCentral,
    BleCentral,
    BleError,
    BumbleCentral,
    BumblePeripheral,
    Notification,
    uuid_key,
)
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

    mode: Literal["simulate", "observe"] = Field(
        "simulate", description="simulate: vtlab plays the device; observe: a real device that vtlab listens to"
    )
    radio: str = Field(
        "emulated:bench",
        description="emulated:<name> (Bumble LocalLink in this process) or a Bumble transport: usb:0, "
        "hci-socket:0, tcp-client:HOST:PORT ...; observe mode without radio uses the system adapter (bleak)",
    )
    adapter: str | None = Field(None, description="observe mode: the system adapter bleak listens on, e.g. hci0")
    address: str | None = Field(
        None,
        pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$",
        description="the peripheral's address, so the gateway under test can be paired to it",
    )
    report: Literal["gatt", "notification", "manufacturer", "bthome"] | None = Field(
        None, description="how an alarm button reports (default: the device model's)"
    )
    profile: str | None = Field(None, description="meter: the GATT profile it serves (default: the model's)")
    hold: str = Field(
        "30s", description="meter, or button with report: notification: how long a value waits for a subscriber"
    )

    @field_validator("hold")
    @classmethod
    def _dur(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("radio")
    @classmethod
    def _radio(cls, v: str) -> str:
        check_radio(v)
        return v

    @model_validator(mode="after")
    def _observe(self) -> BleDeviceSettings:
        if self.adapter is not None and (self.mode != "observe" or "radio" in self.model_fields_set):
            raise InputError(
                "`adapter` names the system adapter vtlab observes a real device with (bleak)",
                fix="use adapter: with mode: observe and without radio: (radio: is a Bumble transport)",
            )
        if self.mode == "observe" and self.address is None:
            raise InputError(
                "an observed BLE device needs the address of the real device",
                fix='add address: "D4:..." (as `vtlab scan` lists it)',
            )
        return self

    @property
    def uses_bleak(self) -> bool:
        """Observe mode without a radio: the OS Bluetooth stack on the system adapter."""
        return self.mode == "observe" and "radio" not in self.model_fields_set


BUMBLE_TRANSPORTS = (
    "usb", "pyusb", "hci-socket", "serial", "tcp-client", "tcp-server", "udp", "ws-client", "ws-server",
    "vhci", "pty", "file", "unix", "unix-client", "unix-server", "android-emulator", "android-netsim",
)  # fmt: skip
"""The transports Bumble opens a controller on (bumble.transport.open_transport)."""


def is_emulated(radio: str) -> bool:
    return radio.partition(":")[0] == "emulated"


def check_radio(radio: str) -> None:
    """`emulated:<name>` or a Bumble transport spec; anything else is an InputError saying what to write."""
    scheme, _, rest = radio.partition(":")
    if scheme == "emulated" and rest:
        return
    if scheme in BUMBLE_TRANSPORTS and (rest or scheme in ("vhci", "pty", "android-emulator", "android-netsim")):
        return
    raise InputError(
        f"BLE radio `{radio}` is neither an emulated air nor a Bumble transport",
        fix=f"{suggest(scheme, ['emulated', *BUMBLE_TRANSPORTS])}write emulated:bench, usb:0 (a USB controller), "
        "hci-socket:0 (a Linux HCI device) or tcp-client:HOST:PORT (an HCI bridge)",
    )


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
            f"BLE radio `{radio}` is a real controller, not an emulated air: nothing in this process can join it",
            fix="write radio: emulated:bench where the embedded lab's gateway must reach the device",
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
_NOTIFIED_OF_EVENT = {
    "personal_emergency": ble_alarm.AlarmEvent.PRESS,
    "fall_detected": ble_alarm.AlarmEvent.FALL,
    "alarm_cancelled": ble_alarm.AlarmEvent.CANCEL,
    "tamper": ble_alarm.AlarmEvent.TAMPER,
    "low_battery": ble_alarm.AlarmEvent.LOW_BATTERY,
}
"""An alarm button's events as the states of the vendor alarm characteristic (report: notification)."""
_EVENT_OF_NOTIFIED = {
    **{v: k for k, v in _NOTIFIED_OF_EVENT.items()},
    ble_alarm.AlarmEvent.LONG_PRESS: "personal_emergency",  # held down: the same alarm as a press
}
_DOOR_OF_EVENT = {"door_open": True, "door_closed": False}
"""A door sensor's events as the BTHome v2 binary object `door` (0x1A: 1 open, 0 closed)."""
BTHOME_DOOR = 0x1A


class BleDeviceLink:
    """A simulated BLE meter or alarm button on a Bumble peripheral."""

    def __init__(
        self,
        device_id: str,
        model: DeviceModel,
        traits: DeviceTraits | None,
        settings: BleDeviceSettings,
        place: Place | None = None,
    ) -> None:
        self.device_id = device_id
        self.model = model
        self.settings = settings
        self.faults = FaultSet()
        self.profile = settings.profile or (traits.ble_profile if traits else None)
        self.report = settings.report or (traits.report if traits and traits.report != "ip" else "manufacturer")
        self._air = air(settings.radio) if is_emulated(settings.radio) else None
        self._hold_s = parse_duration(settings.hold) / 1e9
        self._refused: RefusedHandler | None = None
        self._counter = 0
        self._battery = 100
        self._vanished = False
        self._lock = threading.Lock()
        self.notifies = not self.profile and self.report == "notification"
        profiles = [self.profile, "battery", "device_information"] if self.profile else ["battery"]
        if self.notifies:
            profiles = ["vtlab_alarm", "battery"]
        where: dict[str, Any] = {"link": self._air} if self._air is not None else {"transport": settings.radio}
        try:
            self.peripheral = BumblePeripheral(
                **where,
                name=f"vtlab-{device_id}",
                profiles=profiles,
                address=settings.address,
                encrypted=[ble_alarm.ALARM_UUID] if self.notifies else (),
            )
        except BleError as exc:  # only a real controller can fail to open
            raise TargetError(
                f"device `{device_id}`: the BLE radio `{settings.radio}` cannot be opened: {exc}",
                place=place,
                fix="plug in the controller and check the user may open it (usb:0 needs access to the USB "
                "device, hci-socket:0 a free HCI device), or correct ble: radio:",
            ) from exc
        self._work: queue.Queue[tuple[int | str, bytes, str] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        if self.profile or self.notifies:
            self.peripheral.start_advertising()  # connectable; with the alarm service's UUID for a button
            self._worker = threading.Thread(target=self._deliver, name=f"ble-gatt-{device_id}", daemon=True)
            self._worker.start()

    @property
    def address(self) -> str:
        return self.peripheral.address

    # --- meters
    def _deliver(self) -> None:
        """Send queued readings and alarms once a gateway listens; one nobody collects is a finding."""
        while (item := self._work.get()) is not None:
            uuid, value, what = item
            if not self.peripheral.wait_subscribed(uuid, self._hold_s):
                self._finding(
                    f"{self.device_id}: no gateway subscribed to {uuid_key(uuid)} within {self.settings.hold}: "
                    f"{what} not delivered"
                )
                continue
            try:
                self.peripheral.send(uuid, value, timeout_s=5.0)
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
        self._work.put((int(reading.UUID), bytes(reading.to_bytes()), f"reading {out.cid}"))
        return Sent(t, fields)

    # --- alarm buttons
    def _notify_alarm(self, out: Outgoing) -> Sent:
        """report: notification: the alarm value goes to the subscribed gateway (held until one is)."""
        state = _NOTIFIED_OF_EVENT.get(out.event)
        if state is None:
            raise InputError(
                f"device `{self.device_id}`: event `{out.event}` has no state on the alarm characteristic",
                fix=f"use one of {sorted(_NOTIFIED_OF_EVENT)}",
            )
        self._counter = (self._counter + 1) % 0x10000
        low = self.faults.peek("low_battery")
        battery = low.battery if low is not None else out.battery
        value = ble_alarm.AlarmValue(state, battery, self._counter).to_bytes()
        fields: dict[str, Any] = {
            "event": out.event,
            "code": out.code,
            "counter": self._counter,
            "zone": zone_of(self._counter),
            "value": value.hex(),
            "report": "notification",
        }
        key = key_of(self.device_id, out.code, zone_of(self._counter))
        t = now_ns()
        if self.faults.take("dropout") is not None:
            return Sent(t, {**fields, "fault": "dropout"}, key)
        self._work.put((ble_alarm.ALARM_UUID, value, f"alarm {out.cid} ({out.event})"))
        return Sent(t, fields, key)

    def _send_alarm(self, out: Outgoing) -> Sent:
        if self.notifies:
            return self._notify_alarm(out)
        state = _STATE_OF_EVENT.get(out.event)
        door = _DOOR_OF_EVENT.get(out.event) if self.report == "bthome" else None
        if state is None and door is None:
            raise InputError(
                f"device `{self.device_id}`: event `{out.event}` has no advertised state",
                fix=f"use one of {sorted(_STATE_OF_EVENT)} (door_open, door_closed with report: bthome)",
            )
        self._counter = (self._counter + 1) % 0x10000
        low = self.faults.peek("low_battery")
        battery = low.battery if low is not None else out.battery
        if self.report == "bthome":
            number = self._counter % 0x100
            objects: list[tuple[int, bthome.Value]] = [(0x00, number), (0x01, battery)]
            if state is ble_adv.AlarmState.ALARM:
                objects.append((0x3A, bthome.ButtonEvent.PRESS))
            if door is not None:
                objects.append((BTHOME_DOOR, door))
            payload = bthome.service_data_ad(bthome.encode(objects, trigger_based=True))
        elif self.report == "manufacturer" and state is not None:
            number = self._counter
            advert = ble_adv.AlarmButtonAdvert(state, battery, self._counter)
            payload = ble_adv.ad_manufacturer(ble_adv.EXAMPLE_COMPANY_ID, advert.to_bytes())
        else:
            raise InputError(
                f"device `{self.device_id}` ({self.model.name}): report `{self.report}` sends no alarm",
                fix="use report: notification, manufacturer or bthome",
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


# --- vtlab observes a real device -------------------------------------------------------------------------------


def observer_central(device_id: str, settings: BleDeviceSettings, place: Place | None = None) -> BleCentral:
    """The central that listens to a real device: bleak on the system adapter, or Bumble on `radio`. A radio
    that cannot be opened (or an adapter that cannot scan) is a TargetError at the lab file's line."""
    name = f"vtlab-observe-{device_id}"
    what = f"the system adapter{f' {settings.adapter}' if settings.adapter else ''} (bleak)"
    central: BleCentral | None = None
    try:
        if settings.uses_bleak:
            central = BleakCentral(name=name, adapter=settings.adapter)
            central.scan(0.2)  # bleak opens the adapter only when it scans: fail here, not mid-run
        elif is_emulated(settings.radio):
            what = settings.radio
            central = BumbleCentral(link=air(settings.radio), name=name)
        else:
            what = settings.radio
            central = BumbleCentral(transport=settings.radio, name=name)
    except (BleError, ImportError) as exc:
        if settings.uses_bleak and "No such file" in str(exc):
            what += ", and there is no Bluetooth stack here (BlueZ over D-Bus is missing)"
        if central is not None:
            with contextlib.suppress(Exception):
                central.close()
        raise TargetError(
            f"device `{device_id}`: vtlab cannot listen for the real device on {what}: {exc}",
            place=place,
            fix="plug in the controller or adapter and check the user may open it, or name another with "
            "ble: {radio: usb:0} (Bumble) or ble: {adapter: hci0} (bleak, BlueZ)",
        ) from exc
    return central


OBSERVE_SCAN_WINDOW_S = 2.0
"""How long the observer scans before it restarts the scan (the restart is a short deaf gap)."""


class BleObserveLink(ObservedDevice):
    """A real BLE device that vtlab listens to as its gateway would: what it reports becomes `device_event`
    arrivals; vtlab cannot make it send. A meter (a GATT profile) is read by `BleGateway` (connect, subscribe
    to its measurements); an alarm button or sensor by `AdvertisementGateway` (manufacturer data, BTHome; a
    button advertising vtlab's alarm service is paired with and its notifications subscribed to)."""

    def __init__(
        self,
        device_id: str,
        model: DeviceModel,
        traits: DeviceTraits | None,
        settings: BleDeviceSettings,
        place: Place | None = None,
    ) -> None:
        assert settings.address is not None  # the settings refuse observe mode without one
        self.device_id = device_id
        self.settings = settings
        self.address = settings.address
        self.faults = FaultSet()
        self.profile = settings.profile or (traits.ble_profile if traits else None)
        super().__init__()
        self.central = observer_central(device_id, settings, place)
        self.gateway: BleGateway | AdvertisementGateway
        if self.profile:
            self.gateway = BleGateway(self.central, device_id, self.address, model, self._on_event, self._on_finding)
        else:
            devices = {self.address: (device_id, model)}
            # long scan windows: an advertisement sent while the scan restarts is heard one interval late
            self.gateway = AdvertisementGateway(
                self.central, devices, self._on_event, self._on_finding, window_s=OBSERVE_SCAN_WINDOW_S
            )
        self.gateway.start()

    @property
    def listening(self) -> threading.Event:
        """Set while vtlab is connected and subscribed (a meter, a notifying button)."""
        return self.gateway.subscribed

    what = "a real BLE device"

    def _where(self) -> str:
        return f"ble {self.address}"

    def close(self) -> None:
        self.gateway.close()
        with contextlib.suppress(Exception):
            self.central.close()


def _place(ctx: Any, device_id: str) -> Place | None:
    src = getattr(getattr(ctx, "lab", None), "src", None)
    return src.place("devices", device_id, "ble", "radio") if src is not None else None


def ble_device(ctx: Any, device_id: str) -> BleDeviceLink | BleObserveLink:
    from harness.plugins import device_models

    spec = ctx.lab.spec.devices[device_id]
    settings = getattr(spec, "ble", None) or _CONFIGURED.get(device_id) or BleDeviceSettings()
    if not isinstance(settings, BleDeviceSettings):
        settings = BleDeviceSettings.model_validate(settings)
    model, traits, place = device_models()[spec.model], CATALOG.get(spec.model), _place(ctx, device_id)
    if settings.mode == "observe":
        return BleObserveLink(device_id, model, traits, settings, place)
    return BleDeviceLink(device_id, model, traits, settings, place)


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
        central: BleCentral,
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
    advertisement no decoder accepts is a finding.

    A button that advertises vtlab's vendor alarm service (harness.protocols.ble_alarm) reports by GATT
    notification instead: the gateway connects, pairs (the profile asks for an encrypted link), subscribes
    to the alarm characteristic and forwards each new counter; when the link drops, that is a finding and
    it listens for the button again. One central holds one connection: while connected it does not scan
    (the reference lab gives each device its own gateway)."""

    def __init__(
        self,
        central: BleCentral,
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
        self._connect_to: str | None = None
        self.subscribed = threading.Event()  # connected to a notifying button and subscribed
        self.connections = 0
        self._thread = threading.Thread(target=self._run, name="ble-adv-gateway", daemon=True)

    def start(self) -> AdvertisementGateway:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            address, self._connect_to = self._connect_to, None
            if address is not None:
                self._notified_session(address)
                continue
            try:
                self.central.scan(self._window_s, until=self._seen)
            except BleError as exc:
                self._on_finding(Refused(now_ns(), "", f"scan failed: {exc}", "ble scan"))
                self._stop.wait(0.2)

    def _notified_session(self, address: str) -> None:
        """Connect to a button that reports by notification, pair, subscribe, and stay until the link drops."""
        device_id, _model = self.devices[address.upper()]
        where = f"ble {device_id}"
        try:
            self.central.connect(address, timeout_s=2.0)
            self.central.pair(timeout_s=5.0)
            self.connections += 1  # counted before subscribing: a held alarm may arrive at once
            self.central.start_notify(ble_alarm.ALARM_UUID, lambda note: self._notified(address, note))
        except BleError as exc:
            self._on_finding(Refused(now_ns(), "", f"alarm button {address}: {exc}", where))
            with contextlib.suppress(BleError):
                if self.central.is_connected:
                    self.central.disconnect(timeout_s=1.0)
            self._stop.wait(0.2)
            return
        self.subscribed.set()
        while self.central.is_connected and not self._stop.wait(0.05):
            pass
        self.subscribed.clear()
        with contextlib.suppress(BleError):
            self.central.disconnect(timeout_s=1.0)  # clears the central's state if we are the ones stopping
        if not self._stop.is_set():
            self._on_finding(
                Refused(now_ns(), "", f"alarm button {address} disconnected; listening for it again", where)
            )

    def _notified(self, address: str, note: Notification) -> None:
        device_id, model = self.devices[address.upper()]
        try:
            value = ble_alarm.decode(note.value)
        except ProtocolError as exc:
            self._on_finding(Refused(note.arrived_ns, note.value.hex(), exc.reason, f"ble {device_id}"))
            return
        found = [(value.counter, _EVENT_OF_NOTIFIED[value.event], value.battery_percent)]
        self._forward(address, device_id, model, found, note.arrived_ns, note.value.hex())

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
        if adv.connectable and ble_alarm.SERVICE_UUID in decoded.data.service_uuids:
            self._connect_to = adv.address  # it reports by notification: connect once the scan stops
            return True
        found: list[tuple[int, str, int | None]] = []
        for _company, event in decoded.manufacturer:
            if isinstance(event, ble_adv.AlarmButtonAdvert):
                for state, name in _EVENT_OF_STATE.items():
                    if state in event.state:
                        found.append((event.counter, name, event.battery_percent))
                        break
        if decoded.bthome is not None and decoded.bthome.packet_id is not None:
            battery = decoded.bthome.battery
            doors = decoded.bthome.values("door")
            name = (
                "personal_emergency"
                if decoded.bthome.button_events
                else ("door_open" if doors[0] else "door_closed")
                if doors
                else "bthome_update"
            )
            found.append((decoded.bthome.packet_id, name, int(battery) if battery is not None else None))
        self._forward(adv.address, device_id, model, found, adv.arrived_ns, adv.data.hex())
        return self._stop.is_set()

    def _forward(
        self,
        address: str,
        device_id: str,
        model: DeviceModel,
        found: list[tuple[int, str, int | None]],
        arrived_ns: int,
        raw: str,
    ) -> None:
        """Each new (counter, event, battery) as a GatewayEvent; a counter heard again is the same event."""
        for counter, name, battery in found:
            if self._last.get(address) == counter:
                continue  # the same advertisement (or the same alarm value) again
            self._last[address] = counter
            spec = next((s for s in model.events.values() if s.wire and s.event == name), None)
            if spec is None:
                self._on_finding(Refused(arrived_ns, raw, f"event {name} is not in {model.name}", f"ble {device_id}"))
                continue
            self._on_event(
                GatewayEvent(
                    arrived_ns,
                    device_id,
                    spec.event,
                    spec.code,
                    zone_of(counter),
                    spec.qualifier,
                    spec.priority,
                    battery,
                    raw=raw,
                )
            )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._window_s + 6)
        with contextlib.suppress(BleError):
            if self.central.is_connected:
                self.central.disconnect(timeout_s=2.0)
