"""Serial links: a device on a serial line, played by vtlab or observed, and an alarm receiver's printer port.

`via: serial` on a device, with a `serial:` section (`SerialDeviceSettings`) naming the device's profile
(fixtures/profiles/*.yaml, harness.protocols.serial_profile):

- `mode: simulate` (default): vtlab plays the device on a pseudo-terminal (devices.serial_sim) and publishes
  it at `port` (a stable path, like /dev/serial/by-id/...), where the gateway under test (a home hub, or the
  reference lab in its gateway role) opens it exactly as it opens /dev/ttyUSB0. Each event is one frame of
  the profile; device faults (devices.catalog.DeviceFault) change what goes on the wire.
- `mode: observe`: vtlab reads a real device at `port` (/dev/ttyUSB0, rfc2217://, socket://). It cannot make
  the device send; a tester makes the event happen (`manual_check`) and every frame the device prints
  becomes an `Incoming` of kind `device_event`, matched by key (harness.links.gateway). Garbage, a frame
  cut off, a flood, an unplugged adapter are findings (Refused), never a crash.

On a probe, `via: serial` reads an alarm receiver that prints Contact ID lines (the contact_id_printer
profile): each line is an alarm at that centre, keyed `<device>:<code>:<zone>` with the account mapped back
to a device as DC-09 centres do.

`SerialGateway` is the gateway half: it reads a serial device and hands each frame over as a
`GatewayEvent` in the device model's words. Observe mode uses it; so can the reference lab's gateway role.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from devices.catalog import FaultSet
from devices.model import DeviceModel
from devices.serial_sim import SimulatedSerialDevice
from harness.clock import now_ns
from harness.errors import InputError, TargetError
from harness.links import Incoming, IncomingHandler, Outgoing, Refused, RefusedHandler, Sent
from harness.links.dc09 import key_of
from harness.links.gateway import GatewayEvent, zone_of
from harness.links.observed import ObservedDevice
from harness.protocols.serial_profile import ProfileCodec, SerialEvent
from harness.transports.serial import SerialArrival, SerialFinding, SerialSettings, SerialTransport
from harness.units import parse_duration

PROFILES_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "profiles"


class SerialDeviceSettings(BaseModel):
    """The `serial:` section of a device (or a probe) in the lab file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str = Field(description="Serial profile: a file relative to the lab file, or a name in fixtures/profiles")
    mode: Literal["simulate", "observe"] = Field(
        "simulate", description="simulate: vtlab plays the device on a pseudo-terminal; observe: a real device"
    )
    port: str | None = Field(
        None,
        description="observe: /dev/ttyUSB0, rfc2217://host:port or socket://host:port; "
        "simulate: the path the simulated device appears at (default: a temporary path)",
    )
    baudrate: int = Field(9600, gt=0)
    bytesize: int = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: float = 1
    frame_timeout: str = Field("500ms", description="a frame with no end for this long is reported as cut off")
    device_serial: str | None = Field(
        None, description="the device's own id in its frames (the profile's `device` field), e.g. DSP00042"
    )
    accounts: dict[str, str] = Field(
        default_factory=dict,
        description="probe: Contact ID account -> device id (default: each device's DC-09 account)",
    )

    @field_validator("frame_timeout")
    @classmethod
    def _dur(cls, v: str) -> str:
        parse_duration(v)
        return v

    def transport_settings(self, url: str) -> SerialSettings:
        return SerialSettings(
            url=url,
            baudrate=self.baudrate,
            bytesize=self.bytesize,
            parity=self.parity,
            stopbits=self.stopbits,
            frame_timeout=parse_duration(self.frame_timeout) / 1e9,
        )


_CONFIGURED: dict[str, SerialDeviceSettings] = {}


def configure(name: str, settings: SerialDeviceSettings | None) -> None:
    """Give device or probe `name` its serial settings outside the lab file (tests; until the lab file's
    Device and Probe models have a `serial:` field)."""
    if settings is None:
        _CONFIGURED.pop(name, None)
    else:
        _CONFIGURED[name] = settings


def settings_for(ctx: Any, section: str, name: str) -> SerialDeviceSettings:
    entry = getattr(ctx.lab.spec, section)[name]
    settings = getattr(entry, "serial", None) or _CONFIGURED.get(name)
    if settings is None:
        raise InputError(
            f"{section[:-1]} `{name}` uses via: serial but has no `serial:` settings",
            place=str(ctx.lab.src.place(section, name)),
            fix="add serial: {profile: medicine_dispenser, mode: simulate} (or mode: observe, port: /dev/ttyUSB0)",
        )
    return settings if isinstance(settings, SerialDeviceSettings) else SerialDeviceSettings.model_validate(settings)


def load_codec(profile: str, lab_dir: Path | None = None) -> ProfileCodec:
    candidates = [lab_dir / profile] if lab_dir is not None else []
    candidates += [Path(profile), PROFILES_DIR / profile, PROFILES_DIR / f"{profile}.yaml"]
    for path in candidates:
        if path.is_file():
            return ProfileCodec.from_file(path)
    raise InputError(
        f"serial profile `{profile}` not found",
        fix=f"give a file relative to the lab file, or one of: "
        f"{', '.join(sorted(p.stem for p in PROFILES_DIR.glob('*.yaml')))}",
    )


def event_of(model: DeviceModel, ev: SerialEvent) -> tuple[str, str, str, int]:
    """(event, code, qualifier, priority) of a decoded frame, in the device model's words: the model's event
    of that name, else the profile's own Contact ID mapping."""
    spec = next((s for s in model.events.values() if s.wire and s.event == ev.event), None)
    if spec is not None:
        return spec.event, spec.code, spec.qualifier, spec.priority
    return ev.event, ev.contact_id or "000", ev.qualifier or "1", 5


def _battery(fields: dict[str, str]) -> int | None:
    text = fields.get("battery")
    return int(text) if text is not None and text.isdigit() and int(text) <= 100 else None


# --- vtlab plays the device ------------------------------------------------------------------------------------


def default_pty_link(device_id: str) -> str:
    """Where a simulated serial device appears when the lab file names no port: one path per vtlab process,
    so two runs on one machine never open each other's devices."""
    return str(Path(tempfile.gettempdir()) / f"vtlab-serial-{os.getpid()}-{device_id}")


class SerialDeviceLink:
    """A simulated serial device on a pty: each event is one frame of its profile, faults applied."""

    def __init__(self, device_id: str, model: DeviceModel, codec: ProfileCodec, settings: SerialDeviceSettings) -> None:
        self.device_id = device_id
        self.model = model
        self.codec = codec
        self.settings = settings
        self.faults = FaultSet()
        port = settings.port or default_pty_link(device_id)
        self.device = SimulatedSerialDevice(codec, link=port)
        self.device.plug_in()
        self._names = set(codec.profile.fields.field_names)
        self._lock = threading.Lock()
        self._refused: RefusedHandler | None = None

    @property
    def path(self) -> str:
        """Where the gateway opens the device."""
        return self.device.path

    def _fields(self, battery: int) -> dict[str, object]:
        fields: dict[str, object] = {}
        if "battery" in self._names:
            fields["battery"] = f"{battery:03d}"
        if "device" in self._names and self.settings.device_serial:
            fields["device"] = self.settings.device_serial
        return fields

    def send(self, out: Outgoing) -> Sent:
        if out.event not in self.codec.event_names:
            raise InputError(
                f"device `{self.device_id}`: serial profile {self.codec.profile.name} has no event `{out.event}`",
                fix=f"use one of: {', '.join(self.codec.event_names)}",
            )
        with self._lock:
            return self._send(out)

    def _send(self, out: Outgoing) -> Sent:
        faults = self.faults
        vanished = faults.take("vanish")
        if vanished is not None:
            if self.device.plugged_in.is_set():
                self.device.unplug()
            return Sent(now_ns(), {"event": out.event, "fault": "vanish", "note": "device unplugged: nothing sent"})
        if not self.device.plugged_in.is_set():
            self.device.come_back()
        low = faults.peek("low_battery")
        battery = low.battery if low is not None else out.battery
        data = self.device.frame(out.event, self._fields(battery))
        seq = self.device.seq
        key = key_of(self.device_id, out.code, zone_of(seq))
        applied: list[str] = ["low_battery"] if low is not None else []
        if faults.take("dropout") is not None:
            return Sent(now_ns(), {"event": out.event, "seq": seq, "fault": "dropout", "note": "frame not sent"}, key)
        if faults.take("garbled") is not None:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
            applied.append("garbled")
        flood = faults.take("flood")
        if flood is not None:
            self.device.flood(flood.size)
            self.device.write(self.device._terminator())  # the receiver can find the next frame again
            applied.append("flood")
        if faults.take("stop_mid_frame") is not None:
            data = data[: max(1, len(data) // 2)]
            applied.append("stop_mid_frame")
        t = now_ns()
        try:
            self.device.write(data)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise TargetError(f"simulated serial device {self.device_id} could not write: {exc}") from None
        fields: dict[str, Any] = {
            "event": out.event,
            "code": out.code,
            "seq": seq,
            "zone": zone_of(seq),
            "frame": data.decode("latin-1").rstrip("\r\n"),
            "port": self.path,
        }
        if applied:
            fields["fault"] = ",".join(applied)
        return Sent(t, fields, key)

    def heartbeat(self, seq: int, interval_s: float, sent_text: str) -> None:
        """The profile's `heartbeat` frame (a periodic test report), if it has one; a vanished device is silent."""
        if "heartbeat" not in self.codec.event_names:
            return
        with self._lock:
            if not self.device.plugged_in.is_set() or self.faults.peek("vanish") or self.faults.peek("dropout"):
                return
            low = self.faults.peek("low_battery")
            self.device.send("heartbeat", self._fields(low.battery if low else 100))

    def on_ack(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        """A serial device gets no acknowledgement from the platform over its line."""
        self._refused = refused

    def close(self) -> None:
        self.device.unplug()


# --- the gateway half: reading a serial device ------------------------------------------------------------------

GatewayHandler = Callable[[GatewayEvent], None]
FindingHandler = Callable[[Refused], None]


class SerialGateway:
    """Reads one serial device (`url`) with its profile and hands over each frame as a `GatewayEvent`; what
    the device did wrong is a `Refused` finding. Reopens the port after an unplug (SerialTransport)."""

    def __init__(
        self,
        device_id: str,
        model: DeviceModel,
        codec: ProfileCodec,
        settings: SerialSettings,
        on_event: GatewayHandler,
        on_finding: FindingHandler,
    ) -> None:
        self.device_id = device_id
        self.model = model
        self._on_event = on_event
        self._on_finding = on_finding
        self.transport = SerialTransport(
            settings, codec=codec, on_frame=self._frame, on_refused=self._refused, on_status=self._status
        )

    def start(self) -> SerialGateway:
        self.transport.start()
        return self

    def wait_connected(self, timeout_s: float) -> bool:
        return self.transport.wait_connected(timeout_s)

    def _frame(self, arrival: SerialArrival) -> None:
        ev = arrival.event
        if ev is None:  # pragma: no cover - the transport always has the codec here
            return
        event, code, qualifier, priority = event_of(self.model, ev)
        seq = ev.fields.get("seq")
        zone = zone_of(seq) if seq is not None and seq.isdigit() else ev.fields.get("zone", "000")
        self._on_event(
            GatewayEvent(
                arrival.arrived_ns,
                self.device_id,
                event,
                code,
                zone,
                qualifier,
                priority,
                _battery(dict(ev.fields)),
                raw=arrival.raw.decode("latin-1"),
            )
        )

    def _refused(self, raw: bytes, reason: str) -> None:
        self._on_finding(Refused(now_ns(), raw[:500].decode("latin-1"), reason, self.transport.settings.url))

    def _status(self, finding: SerialFinding) -> None:
        self._on_finding(Refused(finding.at_ns, "", f"{finding.kind}: {finding.reason}", finding.port))

    def close(self) -> None:
        self.transport.close()


# --- vtlab observes a real device -------------------------------------------------------------------------------


class SerialObserveLink(ObservedDevice):
    """A real serial device: what it prints becomes `device_event` arrivals; vtlab cannot make it send."""

    def __init__(self, device_id: str, model: DeviceModel, codec: ProfileCodec, settings: SerialDeviceSettings) -> None:
        if not settings.port:
            raise InputError(
                f"device `{device_id}`: observe mode needs the port of the real device",
                fix="add port: /dev/ttyUSB0 (or rfc2217://host:port) to its serial: section",
            )
        super().__init__()
        self.device_id = device_id
        self.faults = FaultSet()
        self.gateway = SerialGateway(
            device_id, model, codec, settings.transport_settings(settings.port), self._on_event, self._on_finding
        ).start()

    def _where(self) -> str:
        return str(self.gateway.transport.settings.url)

    def close(self) -> None:
        self.gateway.close()


# --- a response centre's alarm receiver printing Contact ID ------------------------------------------------------


class SerialCentreLink:
    """An alarm receiver's printer port: one Contact ID line per alarm, read as an arrival at the centre."""

    def __init__(self, centre: str, lab: Any, codec: ProfileCodec, settings: SerialDeviceSettings) -> None:
        if not settings.port:
            raise InputError(f"centre `{centre}`: the printer port is not given", fix="add port: /dev/ttyUSB0")
        self.centre = centre
        self._lab = lab
        accounts = dict(settings.accounts) or {
            str(dev.dc09.account).upper(): d
            for d, dev in lab.spec.devices.items()
            if getattr(dev, "dc09", None) is not None and dev.dc09.account
        }
        self.accounts = {a.upper(): d for a, d in accounts.items()}
        self._handler: IncomingHandler | None = None
        self._refused: RefusedHandler | None = None
        self.transport = SerialTransport(
            settings.transport_settings(settings.port),
            codec=codec,
            on_frame=self._frame,
            on_refused=self._on_refused,
            on_status=self._on_status,
        )

    def start(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        self._handler, self._refused = handler, refused
        self.transport.start()

    def _frame(self, arrival: SerialArrival) -> None:
        ev = arrival.event
        if ev is None or self._handler is None:  # pragma: no cover - always decoded here
            return
        f = dict(ev.fields)
        account = f.get("account", "").upper()
        device = self.accounts.get(account)
        code, zone = ev.contact_id or f.get("code", ""), f.get("zone", "000")
        fields: dict[str, Any] = {
            "account": account,
            "centre": self.centre,
            "code": code,
            "qualifier": ev.qualifier or f.get("qualifier"),
            "zone": zone,
            "event_name": ev.event,
        }
        if device is not None:
            fields["device"] = device
            fields["user"] = self._lab.spec.devices[device].user
        key = key_of(device or f"account {account}", code, zone)
        self._handler(
            Incoming(
                arrival.arrived_ns,
                fields,
                key=key,
                evidence={**fields, "_key": key},
                where=f"serial {arrival.port}",
                carries=("centre", "device", "user", "code"),
            )
        )

    def _on_refused(self, raw: bytes, reason: str) -> None:
        if self._refused is not None:
            self._refused(Refused(now_ns(), raw[:500].decode("latin-1"), reason, self.transport.settings.url))

    def _on_status(self, finding: SerialFinding) -> None:
        if self._refused is not None:
            self._refused(Refused(finding.at_ns, "", f"{finding.kind}: {finding.reason}", finding.port))

    def acknowledge(self, alarm: Incoming, operator: str) -> int:
        """A printer port takes no acknowledgement: the operator's handling is recorded, nothing is sent."""
        return now_ns()

    def close(self) -> None:
        self.transport.close()


# --- opened by the transport registry ---------------------------------------------------------------------------


def serial_device(ctx: Any, device_id: str) -> SerialDeviceLink | SerialObserveLink:
    from harness.plugins import device_models

    settings = settings_for(ctx, "devices", device_id)
    codec = load_codec(settings.profile, ctx.lab.path.parent)
    model = device_models()[ctx.lab.spec.devices[device_id].model]
    if settings.mode == "observe":
        return SerialObserveLink(device_id, model, codec, settings)
    return SerialDeviceLink(device_id, model, codec, settings)


def serial_centre(ctx: Any, probe: str) -> SerialCentreLink:
    settings = settings_for(ctx, "probes", probe)
    codec = load_codec(settings.profile, ctx.lab.path.parent)
    return SerialCentreLink(str(ctx.lab.spec.probes[probe].centre), ctx.lab, codec, settings)
