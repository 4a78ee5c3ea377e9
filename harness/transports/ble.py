"""Bluetooth LE: one small central interface, a Bumble and a bleak implementation, and a Bumble peripheral.

The harness is synchronous; BLE stacks are asyncio. Each implementation therefore runs its stack on its own
event loop thread (`LoopThread`) and every call from the harness is a blocking call with a deadline: a
peripheral that stops answering yields `BleTimeout`, never a hang. Notifications and advertisements are
stamped with `time.monotonic_ns()` as the first thing in the stack's callback, on that loop thread, so
event-loop scheduling in the harness never enters a measured latency. Handlers run on the loop thread:
keep them short and hand the value over (a queue) for anything slow.

    BumbleCentral(link=BleLink())        emulated controller on an in-process LocalLink (CI, the lab)
    BumbleCentral(transport="usb:0")     Bumble host on a real controller (HCI over USB, serial, TCP)
    BleakCentral()                       the OS Bluetooth stack through bleak (real adapters only)
    BumblePeripheral(link, ...)          vtlab playing a health meter or an alarm button (emulated radio)
    BumblePeripheral(transport="usb:0")  the same on a real controller, for a supplier's gateway or tablet

UUIDs are given as "2A35", 0x2A35 or the 128-bit text form.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from harness.protocols import ble_adv, ble_alarm
from harness.protocols.ble_health import uuid16, uuid128

if TYPE_CHECKING:
    from harness.transports.ble_link import BleLink

T = TypeVar("T")


class BleError(Exception):
    """A BLE operation failed: refused by the peer, not connected, link lost. The message says which."""


class BleTimeout(BleError):
    """The operation had no answer before its deadline (peer gone, radio silent)."""


class BleAccessDenied(BleError):
    """The peer refused with an ATT security error (insufficient encryption or authentication)."""


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One advertising report as it arrived: raw AD bytes, so every decoder sees the same input."""

    address: str
    data: bytes
    rssi: int | None
    connectable: bool
    arrived_ns: int

    def decoded(
        self, *, registry: ble_adv.ManufacturerRegistry | None = None, bthome_key: bytes | None = None
    ) -> ble_adv.DecodedAdvertisement:
        return ble_adv.decode_advertisement(self.data, registry=registry, bthome_key=bthome_key, address=self.address)


@dataclass(frozen=True, slots=True)
class Notification:
    """A value the peripheral pushed: `indication` when it was confirmed (the profile asked for that)."""

    uuid: str
    value: bytes
    arrived_ns: int
    indication: bool


NotifyHandler = Callable[[Notification], None]


class BleCentral(Protocol):
    """What devices, probes and steps may ask of a BLE central. Every call blocks up to its deadline."""

    name: str

    @property
    def is_connected(self) -> bool: ...

    def scan(
        self, timeout_s: float, *, until: Callable[[Advertisement], bool] | None = None
    ) -> list[Advertisement]: ...

    def connect(self, address: str, *, timeout_s: float = 10.0) -> None: ...

    def services(self) -> dict[str, list[str]]: ...

    def read(self, uuid: int | str, *, timeout_s: float = 5.0) -> bytes: ...

    def write(self, uuid: int | str, data: bytes, *, response: bool = True, timeout_s: float = 5.0) -> None: ...

    def start_notify(self, uuid: int | str, handler: NotifyHandler, *, timeout_s: float = 5.0) -> None: ...

    def stop_notify(self, uuid: int | str, *, timeout_s: float = 5.0) -> None: ...

    def pair(self, *, bond: bool = True, timeout_s: float = 10.0) -> None: ...

    def disconnect(self, *, timeout_s: float = 5.0) -> None: ...

    def reconnect(self, *, timeout_s: float = 10.0) -> None: ...

    def close(self) -> None: ...


def uuid_key(uuid: int | str) -> str:
    """The one spelling vtlab uses: "2A35" for SIG UUIDs, the lower-case 128-bit text otherwise."""
    try:
        return f"{uuid16(uuid):04X}"
    except ValueError:
        text = str(uuid).strip().lower()
        if len(text) != 36:
            raise ValueError(f"{uuid!r} is not a Bluetooth UUID") from None
        return text


class LoopThread:
    """An asyncio loop on its own daemon thread; `run` submits a coroutine and waits with a deadline."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float, what: str) -> T:
        """Run `coro` on the loop; BleTimeout after `timeout_s`, stack errors as BleError."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(f"{what}: blocking call from the BLE loop thread itself (would deadlock)")
        if not self.running:
            coro.close()
            raise BleError(f"{what}: the BLE stack is closed")
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout_s), self.loop)
        try:
            return future.result(timeout_s + 5.0)
        except TimeoutError:
            future.cancel()
            raise BleTimeout(f"{what}: no answer within {timeout_s:g} s") from None
        except BleError:
            raise
        except Exception as exc:  # the stack's own error types
            raise _ble_error(what, exc) from exc

    def stop(self) -> None:
        """Cancel what is still pending on the loop (advertising, timers), then stop it."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_cancel_pending(), self.loop).result(5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_pending() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _ble_error(what: str, exc: BaseException) -> BleError:
    name = getattr(exc, "error_name", None) or type(exc).__name__
    text = f"{what}: {name}"
    detail = str(exc).splitlines()[0] if str(exc) else ""
    if detail and detail not in text:
        text += f" ({detail[:200]})"
    if "ENCRYPTION" in str(name).upper() or "AUTHENTICATION" in str(name).upper():
        return BleAccessDenied(text)
    return BleError(text)


# --- Bumble -------------------------------------------------------------------------------------------------


def _pairing_config(bond: bool) -> Any:
    """Just Works, LE Secure Connections, the random static address as identity (what emulated devices have)."""
    from bumble import pairing

    return pairing.PairingConfig(
        sc=True,
        mitm=False,
        bonding=bond,
        delegate=pairing.PairingDelegate(io_capability=pairing.PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT),
        identity_address_type=pairing.PairingConfig.AddressType.RANDOM,
    )


def _address(text: str) -> Any:
    from bumble.hci import Address

    if text.endswith("/P"):
        return Address(text[:-2], Address.PUBLIC_DEVICE_ADDRESS)
    return Address(text, Address.RANDOM_DEVICE_ADDRESS)


@dataclass(slots=True)
class _Subscription:
    handler: NotifyHandler
    callback: Callable[[bytes], None] | None = None
    indicate: bool = False  # asked for confirmed delivery on a characteristic that can do both


class BumbleCentral:
    """A central on a Bumble host: on a `BleLink` (emulated, in-process) or on a real controller (`transport`).

    One connection at a time, which is what a meter's collector or an alarm gateway holds.
    """

    def __init__(
        self,
        *,
        link: BleLink | None = None,
        transport: str | None = None,
        address: str | None = None,
        name: str = "vtlab-central",
        open_timeout_s: float = 10.0,
    ) -> None:
        if (link is None) == (transport is None):
            raise ValueError("give either link= (emulated) or transport= (a Bumble transport spec such as usb:0)")
        self.name = name
        self._link = link
        self._own_loop = LoopThread(f"ble-{name}") if link is None else None
        loop = link.loop if link is not None else self._own_loop
        assert loop is not None
        self._loop: LoopThread = loop
        self._transport: Any = None
        self._device: Any = None
        self._connection: Any = None
        self._peer: Any = None
        self._chars: dict[str, Any] = {}
        self._services: dict[str, list[str]] = {}
        self._subs: dict[str, _Subscription] = {}
        self._last_address: str | None = None
        self._bonded = False
        self._disconnected = threading.Event()
        self._disconnected.set()
        self._suspect = False  # an operation timed out: the peer may be gone, don't wait long on it again
        if link is not None:
            self._device = link.make_device(name, address)
        else:
            assert transport is not None
            self._loop.run(
                self._open_transport(transport, address), open_timeout_s, f"open Bumble transport {transport}"
            )
        self._loop.run(self._power_on(), open_timeout_s, f"{name}: power on")

    async def _open_transport(self, spec: str, address: str | None) -> None:
        from bumble.device import Device
        from bumble.hci import Address
        from bumble.transport import open_transport

        self._transport = await open_transport(spec)
        own = Address(address) if address else Address.generate_static_address()
        self._device = Device.with_hci(self.name, own, self._transport.source, self._transport.sink)

    async def _power_on(self) -> None:
        self._device.pairing_config_factory = lambda _connection: _pairing_config(True)
        await self._device.power_on()

    # --- interface ---------------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return str(self._device.random_address.to_string(False))

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and not self._disconnected.is_set()

    @property
    def is_encrypted(self) -> bool:
        return bool(self._connection is not None and self._connection.is_encrypted)

    def scan(self, timeout_s: float, *, until: Callable[[Advertisement], bool] | None = None) -> list[Advertisement]:
        """Advertisements seen within `timeout_s`; returns early once `until` accepts one."""
        return self._loop.run(self._scan(timeout_s, until), timeout_s + 5.0, f"{self.name}: scan")

    async def _scan(self, timeout_s: float, until: Callable[[Advertisement], bool] | None) -> list[Advertisement]:
        seen: list[Advertisement] = []
        done = asyncio.Event()

        def on_advertisement(adv: Any) -> None:
            arrived = time.monotonic_ns()
            item = Advertisement(
                adv.address.to_string(False), bytes(adv.data_bytes), adv.rssi, bool(adv.is_connectable), arrived
            )
            seen.append(item)
            if until is not None and until(item):
                done.set()

        self._device.on("advertisement", on_advertisement)
        try:
            await self._device.start_scanning(filter_duplicates=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout_s)
        finally:
            self._device.remove_listener("advertisement", on_advertisement)
            if self._device.is_scanning:
                await self._device.stop_scanning()
        return seen

    def connect(self, address: str, *, timeout_s: float = 10.0) -> None:
        if self.is_connected:
            raise BleError(f"{self.name}: already connected to {self._last_address}")
        self._loop.run(self._connect(address), timeout_s, f"{self.name}: connect to {address}")

    async def _connect(self, address: str) -> None:
        connection = await self._device.connect(_address(address), timeout=None)
        self._connection = connection
        self._last_address = address
        self._disconnected.clear()
        connection.on("disconnection", lambda *_: self._disconnected.set())
        from bumble.device import Peer

        self._peer = Peer(connection)
        await self._peer.discover_services()
        chars: dict[str, Any] = {}
        services: dict[str, list[str]] = {}
        for service in self._peer.services:
            await service.discover_characteristics()
            key = _bumble_uuid_key(service.uuid)
            services[key] = [_bumble_uuid_key(c.uuid) for c in service.characteristics]
            for c in service.characteristics:
                chars.setdefault(_bumble_uuid_key(c.uuid), c)
        self._chars, self._services = chars, services

    def services(self) -> dict[str, list[str]]:
        """Service UUID -> characteristic UUIDs, as discovered at connect."""
        self._need_connection("services")
        return {k: list(v) for k, v in self._services.items()}

    def _need_connection(self, what: str) -> None:
        if not self.is_connected:
            raise BleError(f"{self.name}: {what}: not connected")

    def _char(self, uuid: int | str, what: str) -> Any:
        self._need_connection(what)
        key = uuid_key(uuid)
        char = self._chars.get(key)
        if char is None:
            raise BleError(f"{self.name}: {what}: the peer has no characteristic {key}")
        return char

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float, what: str) -> T:
        try:
            return self._loop.run(coro, timeout_s, f"{self.name}: {what}")
        except BleTimeout:
            self._suspect = True
            raise

    def read(self, uuid: int | str, *, timeout_s: float = 5.0) -> bytes:
        char = self._char(uuid, f"read {uuid_key(uuid)}")
        return bytes(self._run(char.read_value(), timeout_s, f"read {uuid_key(uuid)}"))

    def write(self, uuid: int | str, data: bytes, *, response: bool = True, timeout_s: float = 5.0) -> None:
        char = self._char(uuid, f"write {uuid_key(uuid)}")
        self._run(char.write_value(bytes(data), with_response=response), timeout_s, f"write {uuid_key(uuid)}")

    def start_notify(
        self, uuid: int | str, handler: NotifyHandler, *, timeout_s: float = 5.0, indicate: bool = False
    ) -> None:
        """Subscribe: notifications where the characteristic can notify, else indications; `indicate=True`
        asks for indications (confirmed delivery) where it can do both."""
        key = uuid_key(uuid)
        self._char(key, f"subscribe {key}")
        sub = _Subscription(handler, indicate=indicate)
        self._run(self._subscribe(key, sub), timeout_s, f"subscribe {key}")
        self._subs[key] = sub

    async def _subscribe(self, key: str, sub: _Subscription) -> None:
        from bumble.gatt import Characteristic

        char = self._chars[key]
        indication = sub.indicate or not char.properties & Characteristic.Properties.NOTIFY
        if not char.properties & (Characteristic.Properties.NOTIFY | Characteristic.Properties.INDICATE):
            raise BleError(f"{self.name}: {key} can neither notify nor indicate")
        if indication and not char.properties & Characteristic.Properties.INDICATE:
            raise BleError(f"{self.name}: {key} cannot indicate")

        def on_value(value: bytes) -> None:
            arrived = time.monotonic_ns()  # first thing: the arrival stamp
            sub.handler(Notification(key, bytes(value), arrived, indication))

        sub.callback = on_value
        try:
            await char.subscribe(on_value, prefer_notify=not indication)
        except BaseException:
            _forget_subscriber(char, on_value)  # refused (say, not encrypted): a retry must not deliver twice
            raise

    def stop_notify(self, uuid: int | str, *, timeout_s: float = 5.0) -> None:
        key = uuid_key(uuid)
        sub = self._subs.pop(key, None)
        if sub is None or not self.is_connected:
            return
        char = self._chars[key]
        self._loop.run(char.unsubscribe(sub.callback), timeout_s, f"{self.name}: unsubscribe {key}")

    def pair(self, *, bond: bool = True, timeout_s: float = 10.0) -> None:
        """Just Works pairing with LE Secure Connections; the link is encrypted when this returns."""
        self._need_connection("pair")
        self._device.pairing_config_factory = lambda _connection: _pairing_config(bond)
        self._loop.run(self._connection.pair(), timeout_s, f"{self.name}: pair")
        if not self._connection.is_encrypted:
            raise BleError(f"{self.name}: pairing finished but the link is not encrypted")
        self._bonded = bond

    def disconnect(self, *, timeout_s: float = 5.0) -> None:
        """Best effort: the local state is cleared even when the peer is gone and cannot answer."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if not self._disconnected.is_set():
                wait = min(timeout_s, 0.5) if self._suspect else timeout_s
                self._loop.run(connection.disconnect(), wait, f"{self.name}: disconnect")
        except BleError:
            pass
        finally:
            self._disconnected.set()
            self._suspect = False
            self._peer = None
            self._chars = {}

    def reconnect(self, *, timeout_s: float = 10.0) -> None:
        """Connect to the last peer again, re-encrypt if bonded, and restore the subscriptions."""
        if self._last_address is None:
            raise BleError(f"{self.name}: reconnect: never connected")
        if self.is_connected:
            self.disconnect()
        deadline = time.monotonic() + timeout_s
        self.connect(self._last_address, timeout_s=timeout_s)
        if self._bonded:
            left = max(0.1, deadline - time.monotonic())
            self._loop.run(self._connection.encrypt(), left, f"{self.name}: re-encrypt with the bond")
        for key, sub in list(self._subs.items()):
            left = max(0.1, deadline - time.monotonic())
            self._loop.run(self._subscribe(key, sub), left, f"{self.name}: subscribe {key} again")

    def wait_disconnected(self, timeout_s: float) -> bool:
        """True once the link is down (the peer disconnected, or we did)."""
        return self._disconnected.wait(timeout_s)

    def close(self) -> None:
        self.disconnect()
        if self._own_loop is not None:
            if self._transport is not None:
                with contextlib.suppress(BleError):
                    self._own_loop.run(self._transport.close(), 5.0, f"{self.name}: close transport")
            self._own_loop.stop()


def _forget_subscriber(char: Any, callback: Callable[[bytes], None]) -> None:
    """Undo what Bumble's client registers before it writes the CCCD, without writing it again."""
    proxy = char.subscribers.pop(callback, None)
    for table in (char.client.notification_subscribers, char.client.indication_subscribers):
        table.get(char.handle, set()).discard(proxy)


def _bumble_uuid_key(uuid: Any) -> str:
    raw = bytes(uuid.to_bytes())
    if len(raw) == 2:
        return f"{int.from_bytes(raw, 'little'):04X}"
    return uuid_key(str(uuid.to_hex_str("-")).lower())


# --- the peripheral vtlab plays ------------------------------------------------------------------------------

NOTIFY, INDICATE, READ, WRITE, WRITE_NO_RESPONSE = "notify", "indicate", "read", "write", "write_no_response"

PROFILES: dict[str, tuple[int | str, tuple[tuple[int | str, tuple[str, ...]], ...]]] = {
    "blood_pressure": (0x1810, ((0x2A35, (INDICATE,)), (0x2A36, (NOTIFY,)), (0x2A49, (READ,)))),
    "pulse_oximeter": (0x1822, ((0x2A5E, (INDICATE,)), (0x2A5F, (NOTIFY,)), (0x2A60, (READ,)))),
    "thermometer": (0x1809, ((0x2A1C, (INDICATE,)), (0x2A1D, (READ,)), (0x2A1E, (NOTIFY,)), (0x2A21, (READ,)))),
    "glucose": (0x1808, ((0x2A18, (NOTIFY,)), (0x2A34, (NOTIFY,)), (0x2A51, (READ,)), (0x2A52, (WRITE, INDICATE)))),
    "weight_scale": (0x181D, ((0x2A9D, (INDICATE,)), (0x2A9E, (READ,)))),
    "heart_rate": (0x180D, ((0x2A37, (NOTIFY,)), (0x2A38, (READ,)), (0x2A39, (WRITE,)))),
    "battery": (0x180F, ((0x2A19, (READ, NOTIFY)),)),
    "device_information": (0x180A, ((0x2A29, (READ,)), (0x2A24, (READ,)), (0x2A25, (READ,)), (0x2A26, (READ,)))),
    "immediate_alert": (0x1802, ((0x2A06, (WRITE_NO_RESPONSE,)),)),
    "link_loss": (0x1803, ((0x2A06, (READ, WRITE)),)),
    "vtlab_alarm": (ble_alarm.SERVICE_UUID, ((ble_alarm.ALARM_UUID, (READ, NOTIFY, INDICATE)),)),
}
"""Profile name -> (service UUID, ((characteristic UUID, properties), ...)): what a BumblePeripheral serves.
UUIDs are 16-bit SIG numbers or, for vendor services such as vtlab's alarm button, 128-bit text."""


def _default_advertising(name: str, service_uuids: list[int | str]) -> bytes:
    """Flags, name and 16-bit service UUIDs; with a vendor (128-bit) service, its UUID comes first and the
    name is shortened to what still fits the 31 bytes of a legacy advertisement."""
    short = [u for u in service_uuids if isinstance(u, int)]
    long = [u for u in service_uuids if isinstance(u, str)]
    if not long:
        return ble_adv.ad_flags() + ble_adv.ad_name(name) + ble_adv.ad_uuid16_list(short)
    data = ble_adv.ad_flags()
    data += ble_adv.ad(ble_adv.AdType.COMPLETE_UUID128, b"".join(ble_alarm.uuid128_bytes(u) for u in long))
    if short and len(data) + 2 + 2 * len(short) <= 31:
        data += ble_adv.ad_uuid16_list(short)
    room = 31 - len(data) - 2
    if room > 0 and name:
        cut = name.encode("utf-8")[:room].decode("utf-8", errors="ignore")
        data += ble_adv.ad_name(cut, complete=cut == name) if cut else b""
    return data


DEFAULT_VALUES: dict[int, bytes] = {
    0x2A19: bytes([100]),
    0x2A29: b"vtlab",
    0x2A24: b"simulated meter",
    0x2A25: b"0001",
    0x2A26: b"1.0",
    0x2A49: b"\x00\x00",
    0x2A60: b"\x00\x00",
    0x2A1D: bytes([2]),
    0x2A21: b"\x00\x00",
    0x2A51: b"\x00\x00",
    0x2A9E: b"\x00\x00\x00\x00",
    0x2A38: bytes([1]),
    0x2A06: bytes([0]),
}


@dataclass(frozen=True, slots=True)
class Written:
    """A value a central wrote to the peripheral, stamped on arrival."""

    uuid: str
    value: bytes
    arrived_ns: int


@dataclass(slots=True)
class _PeripheralState:
    values: dict[str, bytes] = field(default_factory=dict)
    written: list[Written] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)
    subscribed: dict[str, threading.Event] = field(default_factory=dict)


class BumblePeripheral:
    """A health meter or an alarm button: GATT server, notifications/indications of injected readings,
    connectable or connectionless advertising (BTHome, manufacturer data). On an emulated controller of a
    `BleLink`, or, with `transport=` (usb:0, hci-socket:0, tcp-client:HOST:PORT ...), on its own Bumble host
    and loop thread over a real controller, so a supplier's gateway or tablet can pair with it.

    `encrypted` names characteristics that refuse reads and writes on an unencrypted link.
    """

    def __init__(
        self,
        link: BleLink | None = None,
        *,
        transport: str | None = None,
        name: str = "vtlab-meter",
        profiles: Iterable[str] = ("blood_pressure", "battery", "device_information"),
        values: Mapping[int | str, bytes] | None = None,
        encrypted: Iterable[int | str] = (),
        address: str | None = None,
        on_write: Callable[[Written], None] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if (link is None) == (transport is None):
            raise ValueError("give either link (emulated) or transport= (a Bumble transport spec such as usb:0)")
        self.name = name
        self._link = link
        self._transport: Any = None
        self._own_loop = LoopThread(f"ble-{name}") if link is None else None
        loop = link.loop if link is not None else self._own_loop
        assert loop is not None
        self._loop: LoopThread = loop
        self._advertising: tuple[bytes, bool, float] | None = None  # what to resume after `reappear`
        self._state = _PeripheralState()
        self._on_write = on_write
        self._chars: dict[str, Any] = {}
        self._profiles = list(profiles)
        for p in self._profiles:
            if p not in PROFILES:
                raise ValueError(f"unknown profile {p!r}; known: {', '.join(PROFILES)}")
        self._service_uuids = [PROFILES[p][0] for p in self._profiles]
        for default_uuid, default in DEFAULT_VALUES.items():
            self._state.values[uuid_key(default_uuid)] = default
        for uuid, value in (values or {}).items():
            self._state.values[uuid_key(uuid)] = bytes(value)
        self._encrypted = {uuid_key(u) for u in encrypted}
        self._vanish_on_read: set[str] = set()
        if link is not None:
            self._device = link.make_device(name, address)
        else:
            assert transport is not None
            try:
                opening = self._open_transport(transport, address)
                self._loop.run(opening, timeout_s, f"open Bumble transport {transport}")
            except BaseException:
                self._own_loop.stop()  # type: ignore[union-attr]
                raise
        try:
            self._loop.run(self._setup(), timeout_s, f"{name}: set up GATT server")
        except BaseException:
            if link is None:
                self.close()
            raise

    async def _open_transport(self, spec: str, address: str | None) -> None:
        from bumble.device import Device
        from bumble.hci import Address
        from bumble.transport import open_transport

        self._transport = await open_transport(spec)
        own = Address(address) if address else Address.generate_static_address()
        self._device = Device.with_hci(self.name, own, self._transport.source, self._transport.sink)

    async def _setup(self) -> None:
        from bumble import gatt

        props = {
            NOTIFY: gatt.Characteristic.Properties.NOTIFY,
            INDICATE: gatt.Characteristic.Properties.INDICATE,
            READ: gatt.Characteristic.Properties.READ,
            WRITE: gatt.Characteristic.Properties.WRITE,
            WRITE_NO_RESPONSE: gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
        }
        for profile in self._profiles:
            service_uuid, chars = PROFILES[profile]
            characteristics = []
            for char_uuid, char_props in chars:
                key = uuid_key(char_uuid)
                flags = gatt.Characteristic.Properties(0)
                for p in char_props:
                    flags |= props[p]
                perms = gatt.Characteristic.Permissions.READABLE | gatt.Characteristic.Permissions.WRITEABLE
                if key in self._encrypted:
                    perms |= (
                        gatt.Characteristic.Permissions.READ_REQUIRES_ENCRYPTION
                        | gatt.Characteristic.Permissions.WRITE_REQUIRES_ENCRYPTION
                    )
                value = gatt.CharacteristicValue(read=self._reader(key), write=self._writer(key))
                char: Any = gatt.Characteristic(uuid_key(char_uuid), flags, perms, value)
                characteristics.append(char)
                self._chars[key] = char
            self._device.add_service(gatt.Service(uuid_key(service_uuid), characteristics))
            for char in characteristics:
                if _bumble_uuid_key(char.uuid) in self._encrypted:
                    self._subscription_needs_encryption(char)
        self._device.pairing_config_factory = lambda _connection: _pairing_config(True)
        self._device.on("connection", self._on_connection)
        self._device.on("characteristic_subscription", self._on_subscription)
        await self._device.power_on()

    def _subscription_needs_encryption(self, char: Any) -> None:
        """An encrypted characteristic also refuses a subscription on an unencrypted link: its CCCD (which
        Bumble adds readable and writeable by anyone) requires encryption to be written."""
        from bumble import gatt

        for attribute in self._device.gatt_server.attributes:
            if (
                attribute.type == gatt.GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR
                and char.handle < attribute.handle <= char.end_group_handle
            ):
                attribute.permissions |= gatt.Characteristic.Permissions.WRITE_REQUIRES_ENCRYPTION

    def _reader(self, key: str) -> Callable[[Any], bytes]:
        def read(_connection: Any) -> bytes:
            if key in self._vanish_on_read and self._link is not None:
                self._vanish_on_read.discard(key)
                self._link.detach_now(self._device)  # on the loop thread, before the response goes out
            return self._state.values.get(key, b"")

        return read

    def fault_vanish_on_read(self, uuid: int | str) -> None:
        """Fault: the next read of `uuid` takes the radio off the air mid-read (the response is never heard).
        Only an emulated radio can fall silent mid-read."""
        if self._link is None:
            raise BleError(f"{self.name}: vanishing mid-read needs an emulated radio (emulated:<name>)")
        self._vanish_on_read.add(uuid_key(uuid))

    def _writer(self, key: str) -> Callable[[Any, bytes], None]:
        def write(_connection: Any, value: bytes) -> None:
            item = Written(key, bytes(value), time.monotonic_ns())
            self._state.written.append(item)
            self._state.values[key] = bytes(value)
            if self._on_write is not None:
                self._on_write(item)

        return write

    def _on_connection(self, connection: Any) -> None:
        self._state.connected.set()
        connection.on("disconnection", lambda *_: self._on_disconnection())

    def _on_disconnection(self) -> None:
        """A subscription lives as long as its link: after a disconnection nobody listens until the central
        subscribes again (Bumble drops the link's CCCD values without a subscription event)."""
        self._state.connected.clear()
        for event in self._state.subscribed.values():
            event.clear()

    def _on_subscription(self, _connection: Any, characteristic: Any, notify: bool, indicate: bool) -> None:
        key = _bumble_uuid_key(characteristic.uuid)
        event = self._state.subscribed.setdefault(key, threading.Event())
        if notify or indicate:
            event.set()
        else:
            event.clear()

    @property
    def address(self) -> str:
        return str(self._device.random_address.to_string(False))

    @property
    def written(self) -> list[Written]:
        return list(self._state.written)

    def set_value(self, uuid: int | str, value: bytes) -> None:
        """The value a read returns from now on (battery level, device information ...)."""
        self._state.values[uuid_key(uuid)] = bytes(value)

    def start_advertising(
        self, data: bytes | None = None, *, connectable: bool = True, interval_ms: float = 20.0, timeout_s: float = 5.0
    ) -> None:
        """Advertise `data` (raw AD structures), or by default flags, name and the served service UUIDs.

        Connectable advertising restarts by itself after a disconnection, so a central can reconnect.
        """
        if data is None:
            data = _default_advertising(self.name, self._service_uuids)
        self._advertising = (bytes(data), connectable, interval_ms)
        self._loop.run(self._advertise(bytes(data), connectable, interval_ms), timeout_s, f"{self.name}: advertise")

    async def _advertise(self, data: bytes, connectable: bool, interval_ms: float) -> None:
        from bumble.device import AdvertisingType

        kind = AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE if connectable else AdvertisingType.UNDIRECTED
        await self._device.start_advertising(
            advertising_type=kind,
            advertising_data=data,
            auto_restart=connectable,
            advertising_interval_min=interval_ms,
            advertising_interval_max=interval_ms,
        )

    def stop_advertising(self, *, timeout_s: float = 5.0) -> None:
        self._loop.run(self._device.stop_advertising(), timeout_s, f"{self.name}: stop advertising")

    def wait_connected(self, timeout_s: float) -> bool:
        return self._state.connected.wait(timeout_s)

    def wait_subscribed(self, uuid: int | str, timeout_s: float) -> bool:
        event = self._state.subscribed.setdefault(uuid_key(uuid), threading.Event())
        return event.wait(timeout_s)

    def send(self, uuid: int | str, value: bytes, *, timeout_s: float = 5.0) -> None:
        """Notify (or indicate, if that is the characteristic's property) every subscriber of `uuid`.

        An indication returns once each subscriber confirmed it.
        """
        key = uuid_key(uuid)
        char = self._chars.get(key)
        if char is None:
            raise BleError(f"{self.name}: no characteristic {key} in profiles {self._profiles}")
        self._state.values[key] = bytes(value)
        self._loop.run(self._send(char, bytes(value)), timeout_s, f"{self.name}: send {key}")

    async def _send(self, char: Any, value: bytes) -> None:
        from bumble.gatt import Characteristic

        if char.properties & Characteristic.Properties.NOTIFY:
            await self._device.notify_subscribers(char, value)  # those whose CCCD asks for notifications
        if char.properties & Characteristic.Properties.INDICATE:
            await self._device.indicate_subscribers(char, value)  # those asking for indications

    def send_reading(self, reading: Any, *, timeout_s: float = 5.0) -> bytes:
        """Encode a `ble_health` reading and send it on its characteristic; returns the bytes sent."""
        value = bytes(reading.to_bytes())
        self.send(int(reading.UUID), value, timeout_s=timeout_s)
        return value

    def disconnect(self, *, timeout_s: float = 5.0) -> None:
        """The peripheral ends the link (a meter switching itself off politely)."""
        self._loop.run(self._disconnect_all(), timeout_s, f"{self.name}: disconnect")

    async def _disconnect_all(self) -> None:
        from bumble.hci import HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR

        for connection in list(self._device.connections.values()):
            await connection.disconnect(HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR)

    def vanish(self) -> None:
        """The radio goes silent (battery pulled, out of range): no disconnection is sent to anyone. A real
        controller cannot fall silent on request: there it stops advertising and ends its links instead."""
        if self._link is not None:
            self._link.detach(self._device)
            return
        self._loop.run(self._switch_off(), 5.0, f"{self.name}: switch off")

    async def _switch_off(self) -> None:
        if self._device.is_advertising:
            await self._device.stop_advertising()
        await self._disconnect_all()

    def reappear(self) -> None:
        if self._link is not None:
            self._link.attach(self._device)
        elif self._advertising is not None:
            data, connectable, interval_ms = self._advertising
            self.start_advertising(data, connectable=connectable, interval_ms=interval_ms)

    def close(self) -> None:
        if self._own_loop is not None:  # a real controller: stop advertising first, so no restart races the close
            with contextlib.suppress(BleError):
                self._loop.run(self._switch_off(), 5.0, f"{self.name}: switch off")
        with contextlib.suppress(BleError):
            self._loop.run(self._device.power_off(), 5.0, f"{self.name}: power off")
        if self._own_loop is not None:
            if self._transport is not None:
                with contextlib.suppress(BleError):
                    self._own_loop.run(self._transport.close(), 5.0, f"{self.name}: close transport")
            self._own_loop.stop()


# --- bleak (real adapters through the OS stack) ------------------------------------------------------------------


def _ad_from_bleak(adv: Any) -> bytes:
    """bleak hands out parsed fields, not raw bytes: rebuild AD structures so every decoder sees one format."""
    out = b""
    if adv.local_name:
        out += ble_adv.ad_name(adv.local_name)
    uuids16 = [int(u[4:8], 16) for u in adv.service_uuids if u.endswith("-0000-1000-8000-00805f9b34fb")]
    if uuids16:
        out += ble_adv.ad_uuid16_list(uuids16)
    for uuid, data in adv.service_data.items():
        if str(uuid).endswith("-0000-1000-8000-00805f9b34fb"):
            out += ble_adv.ad_service_data16(int(str(uuid)[4:8], 16), bytes(data))
    for company, data in adv.manufacturer_data.items():
        out += ble_adv.ad_manufacturer(int(company), bytes(data))
    if adv.tx_power is not None:
        out += ble_adv.ad(ble_adv.AdType.TX_POWER, int(adv.tx_power).to_bytes(1, "little", signed=True))
    return out


class BleakCentral:
    """The OS Bluetooth stack (BlueZ, CoreBluetooth, WinRT) through bleak: for real adapters and devices only.

    bleak is imported on first use, so machines without it (or without a radio) can still import vtlab.
    Pairing is left to the OS agent where the platform requires it (bleak's `pair` on BlueZ and WinRT).
    """

    def __init__(self, *, name: str = "vtlab-bleak", adapter: str | None = None) -> None:
        self.name = name
        self._adapter = adapter
        self._loop = LoopThread(f"ble-{name}")
        self._client: Any = None
        self._last_address: str | None = None
        self._subs: dict[str, NotifyHandler] = {}

    @property
    def is_connected(self) -> bool:
        return bool(self._client is not None and self._client.is_connected)

    def scan(self, timeout_s: float, *, until: Callable[[Advertisement], bool] | None = None) -> list[Advertisement]:
        return self._loop.run(self._scan(timeout_s, until), timeout_s + 10.0, f"{self.name}: scan")

    async def _scan(self, timeout_s: float, until: Callable[[Advertisement], bool] | None) -> list[Advertisement]:
        from bleak import BleakScanner

        seen: list[Advertisement] = []
        done = asyncio.Event()

        def on_detect(device: Any, adv: Any) -> None:
            arrived = time.monotonic_ns()
            item = Advertisement(str(device.address), _ad_from_bleak(adv), adv.rssi, True, arrived)
            seen.append(item)
            if until is not None and until(item):
                done.set()

        kwargs: dict[str, Any] = {"detection_callback": on_detect}
        if self._adapter:
            kwargs["bluez"] = {"adapter": self._adapter}
        async with BleakScanner(**kwargs):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout_s)
        return seen

    def connect(self, address: str, *, timeout_s: float = 10.0) -> None:
        self._loop.run(self._connect(address, timeout_s), timeout_s + 2.0, f"{self.name}: connect to {address}")

    async def _connect(self, address: str, timeout_s: float) -> None:
        from bleak import BleakClient

        client = BleakClient(address, timeout=timeout_s)
        await client.connect()
        self._client = client
        self._last_address = address

    def services(self) -> dict[str, list[str]]:
        self._need()
        return {uuid_key(s.uuid): [uuid_key(c.uuid) for c in s.characteristics] for s in self._client.services}

    def _need(self) -> None:
        if not self.is_connected:
            raise BleError(f"{self.name}: not connected")

    def read(self, uuid: int | str, *, timeout_s: float = 5.0) -> bytes:
        self._need()
        value = self._loop.run(self._client.read_gatt_char(uuid128(uuid_key(uuid))), timeout_s, f"read {uuid}")
        return bytes(value)

    def write(self, uuid: int | str, data: bytes, *, response: bool = True, timeout_s: float = 5.0) -> None:
        self._need()
        coro = self._client.write_gatt_char(uuid128(uuid_key(uuid)), bytes(data), response=response)
        self._loop.run(coro, timeout_s, f"{self.name}: write {uuid}")

    def start_notify(self, uuid: int | str, handler: NotifyHandler, *, timeout_s: float = 5.0) -> None:
        self._need()
        key = uuid_key(uuid)

        def on_value(characteristic: Any, data: bytearray) -> None:
            arrived = time.monotonic_ns()  # first thing: the arrival stamp
            indication = "notify" not in getattr(characteristic, "properties", ["notify"])
            handler(Notification(key, bytes(data), arrived, indication))

        self._loop.run(self._client.start_notify(uuid128(key), on_value), timeout_s, f"{self.name}: subscribe {key}")
        self._subs[key] = handler

    def stop_notify(self, uuid: int | str, *, timeout_s: float = 5.0) -> None:
        key = uuid_key(uuid)
        if self._subs.pop(key, None) is not None and self.is_connected:
            self._loop.run(self._client.stop_notify(uuid128(key)), timeout_s, f"{self.name}: unsubscribe {key}")

    def pair(self, *, bond: bool = True, timeout_s: float = 10.0) -> None:
        self._need()
        self._loop.run(self._client.pair(), timeout_s, f"{self.name}: pair")

    def disconnect(self, *, timeout_s: float = 5.0) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(BleError):
                self._loop.run(client.disconnect(), timeout_s, f"{self.name}: disconnect")

    def reconnect(self, *, timeout_s: float = 10.0) -> None:
        if self._last_address is None:
            raise BleError(f"{self.name}: reconnect: never connected")
        self.disconnect()
        self.connect(self._last_address, timeout_s=timeout_s)
        for key, handler in list(self._subs.items()):
            self.start_notify(key, handler, timeout_s=timeout_s)

    def close(self) -> None:
        self.disconnect()
        self._loop.stop()


CENTRALS: dict[str, Callable[..., BleCentral]] = {"bumble": BumbleCentral, "bleak": BleakCentral}
"""Central implementations by name, for the lab file to choose from (a registry, not an if/else chain)."""
