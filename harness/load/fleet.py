"""The fleet of a load run and the job file that hands it to the locust processes.

The embedded reference lab routes only devices it knows, and its broker lets each identity publish only
its own topics (one client certificate per device). So for a fleet of thousands of simulated devices
`vtlab load` writes a lab file for the run (`run_dir/load/fleet-lab.yaml`): the lab file given, with its
devices replaced by the fleet (`ld-00000` ...), owned in turn by the lab's synthetic users. The lab then
issues a certificate and access rules per fleet device, exactly as for the lab file's own devices.

Against an external platform vtlab cannot invent devices the supplier's platform would accept: the lab
file must list at least as many devices (of the load's model) as the fleet, and they are used in order.

The job file (`run_dir/load/job.json`) is everything a locust process needs: broker, per-identity
certificate paths (never passwords: only the names of their environment variables), topics, the fleet in
slot order, the schedule and its start time. Secrets stay in the environment.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError
from harness.lab.config import Limits
from harness.labfile import Lab, load_lab
from harness.load.scenario import LoadPlan
from harness.load.shapes import RateCurve, Schedule, Storm
from harness.transports.mqtt import MqttSettings
from harness.units import parse_duration

JOB_FILE = "job.json"
FLEET_PREFIX = "ld-"
DC09_TCP_CONNECTIONS: int = Limits().dc09_connections
"""The reference lab's DC-09 receiver keeps at most this many TCP connections (its `limits.dc09_connections`)."""


def fleet_ids(count: int) -> list[str]:
    width = max(5, len(str(count - 1)))
    return [f"{FLEET_PREFIX}{i:0{width}d}" for i in range(count)]


LOAD_VIAS = ("mqtt", "dc09", "scaip")


def _template(lab: Lab, via: str, model: str) -> Any:
    """The lab file's own device whose DC-09 or SCAIP settings the fleet copies (transport, key, timeout):
    one of the load's model if there is one, else any device of that protocol."""
    mine = [dev for dev in lab.spec.devices.values() if dev.via == via]
    return next((dev for dev in mine if dev.model == model), mine[0] if mine else None)


def _fleet_link(lab: Lab, via: str, model: str, i: int, template: Any) -> dict[str, Any]:
    """The DC-09 account or SCAIP controller id of fleet device `i`, with the template's other settings."""
    if via == "dc09":
        base = template.dc09.model_dump(mode="json", exclude_none=True) if template is not None else {}
        for k in ("to", "backup", "listen", "accounts"):
            base.pop(k, None)
        if base.get("key_file"):
            base["key_file"] = str(lab.resolve(base["key_file"]))  # the fleet lab file lives elsewhere
        return {"dc09": {**base, "account": f"{i + 1:06d}"}}
    base = template.scaip.model_dump(mode="json", exclude_none=True) if template is not None else {}
    for k in ("to", "listen", "devices"):
        base.pop(k, None)
    return {"scaip": {**base, "cid": f"9{i:07d}", "did": "1"}}


def fleet_lab(lab: Lab, plan: LoadPlan, devices: int, out_dir: Path) -> Lab:
    """The lab to run `plan` against: for the embedded lab a generated lab file with `devices` fleet
    devices; for an external platform the lab file itself (checked to hold enough devices)."""
    model = plan.spec.load.model
    via = plan.spec.load.via
    if lab.spec.platform.kind != "embedded":
        mine = [d for d, dev in lab.spec.devices.items() if dev.model == model and dev.via == via]
        if len(mine) < devices:
            raise InputError(
                f"the load needs {devices} `{model}` devices speaking {via}, but the lab file lists {len(mine)}",
                place=lab.src.place("devices"),
                fix="list the platform's test devices in the lab file (vtlab cannot invent devices an external "
                "platform would accept), or lower load.devices / --users",
            )
        return lab
    if via == "dc09" and devices > DC09_TCP_CONNECTIONS:
        template = _template(lab, via, model)
        if template is None or template.dc09 is None or template.dc09.protocol == "tcp":
            raise InputError(
                f"{devices} DC-09 devices on kept TCP connections, but the reference lab's DC-09 receiver "
                f"keeps at most {DC09_TCP_CONNECTIONS} (its limits.dc09_connections)",
                place=plan.source.place("load", "devices"),
                fix=f"lower load.devices to {DC09_TCP_CONNECTIONS}, or give the lab file's DC-09 device "
                "`dc09: {protocol: udp}` (the fleet copies it)",
            )
    data = lab.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    # keep the response-centre probes of the kind the load observes (`load.centres`), and give the fleet
    # only to users whose centre one of them receives for (another centre's alarms would count as lost)
    kind = plan.spec.load.centres
    data["probes"] = {
        n: p
        for n, p in data["probes"].items()
        if p.get("kind", "response_centre") == "response_centre" and p.get("via", "mqtt") == kind
    }
    observed = {p["centre"] for p in data["probes"].values()}
    personas = sorted(pid for pid, p in lab.personas.items() if p.centre in observed)
    if not personas:
        raise InputError(
            f"no synthetic user belongs to a centre with a response-centre probe via {kind}",
            place=lab.src.place("probes"),
            fix=f"add a `response_centre` probe (via {kind}) for the centre of at least one user",
        )
    heartbeat = plan.spec.load.heartbeat
    template = _template(lab, via, model) if via != "mqtt" else None
    data["devices"] = {
        dev_id: {
            "model": model,
            "user": personas[i % len(personas)],
            "heartbeat": heartbeat,
            "via": via,
            **(_fleet_link(lab, via, model, i, template) if via != "mqtt" else {}),
        }
        for i, dev_id in enumerate(fleet_ids(devices))
    }
    if kind != "mqtt":
        _centre_maps(data, lab, via)
    data["users"] = str(lab.resolve(lab.spec.users))
    if "time_scale" in data.get("platform", {}):  # a load's heartbeats are real intervals: supervision in real time
        data["platform"]["time_scale"] = 1
    data["name"] = f"{lab.spec.name} (fleet of {devices} for a load run)"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "fleet-lab.yaml"
    header = (
        f"# Written by `vtlab load` from {lab.path}: its devices replaced by a fleet of {devices} simulated "
        f"`{model}` devices.\n"
    )
    path.write_text(header + yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000), encoding="utf-8")
    return load_lab(path)


def _centre_maps(data: dict[str, Any], lab: Lab, via: str) -> None:
    """How each DC-09 or SCAIP centre knows the fleet's devices routed to it: the probe's `accounts`
    (account -> device) or `devices` (`cid/did` -> device); the reference lab sends what the map says."""
    for probe in data["probes"].values():
        fleet = enumerate(data["devices"].items())
        mine = [(i, d) for i, (d, dev) in fleet if lab.personas[dev["user"]].centre == probe["centre"]]
        if probe["via"] == "dc09":
            probe.setdefault("dc09", {})["accounts"] = {f"{i + 1:06d}": d for i, d in mine}
        else:
            # the lab sends a SCAIP fleet device's own did, and none for a device without a SCAIP identity
            did = "1" if via == "scaip" else ""
            probe.setdefault("scaip", {})["devices"] = {f"9{i:07d}/{did}": d for i, d in mine}


def fleet_devices(lab: Lab, plan: LoadPlan, devices: int) -> list[str]:
    model = plan.spec.load.model
    ids = [d for d, dev in lab.spec.devices.items() if dev.model == model and dev.via == plan.spec.load.via]
    return ids[:devices]


@dataclass(slots=True)
class Job:
    """What a locust process is told (JSON); times are UTC epoch seconds, turned into the process's own
    monotonic clock when it starts."""

    scenario: str
    tag: str
    out_dir: str
    site: str
    topics: dict[str, str]
    broker: dict[str, Any]
    identities: dict[str, dict[str, str | None]]
    devices: list[dict[str, str]]
    centres: dict[str, str]  # centre id -> probe name
    events: dict[str, dict[str, Any]]  # "alarm" / "storm" -> EventSpec fields
    curve: list[tuple[int, float]]
    storm: dict[str, Any] | None
    heartbeat_ns: int
    within_ns: int
    drain_ns: int
    max_lag_ns: int
    connect_start: float
    schedule_start: float
    workers: int = 1
    direct: bool = False  # benchmark only: probes listen on the devices' own event topic (no router)
    acknowledge: bool = True  # probes acknowledge each alarm; devices measure the acknowledgement coming back
    via: str = "mqtt"  # what the fleet's devices speak: mqtt, dc09 or scaip (harness.load.lines)
    link: dict[str, Any] = field(default_factory=dict)  # dc09/scaip settings shared by the fleet (no secrets)
    listening: dict[str, dict[str, Any]] = field(default_factory=dict)  # centre -> its DC-09/SCAIP receiver
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def keyed(self) -> bool:
        """Alarms are matched by content key (device, Contact ID code, zone): DC-09 and SCAIP carry no cid."""
        return self.via != "mqtt"

    @property
    def schedule(self) -> Schedule:
        storm = Storm(**self.storm) if self.storm else None
        return Schedule(RateCurve(tuple((int(t), float(r)) for t, r in self.curve)), len(self.devices), storm)

    @property
    def end_of_sending(self) -> float:
        return self.schedule_start + self.schedule.duration_ns / 1e9

    @property
    def end(self) -> float:
        return self.end_of_sending + self.drain_ns / 1e9

    def topic(self, name: str, **fill: str) -> str:
        return self.topics[name].format(site=self.site, **fill)

    def settings(self, identity: str) -> MqttSettings:
        import os

        b = self.broker
        me = self.identities.get(identity) or {}
        cert, key = me.get("cert"), me.get("key")
        return MqttSettings(
            url=b["url"],
            version=b["version"],
            ca=Path(b["ca"]) if b.get("ca") else None,
            cert=Path(cert) if cert else None,
            key=Path(key) if key else None,
            key_password=os.environ.get(b["key_password_env"]) if b.get("key_password_env") else None,
            verify=bool(b.get("verify", True)),
            username=b.get("username"),
            password=os.environ.get(b["password_env"]) if b.get("password_env") else None,
            connect_timeout_s=float(b.get("connect_timeout_s", 5.0)),
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> Job:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def make_job(
    plan: LoadPlan,
    lab: Lab,
    target: Any,
    devices: list[str],
    *,
    tag: str,
    out_dir: Path,
    workers: int,
    startup_s: float,
    direct: bool = False,
    listening: list[Any] | None = None,
) -> Job:
    """The job for `plan` against a started `target` (harness.run.target.Target)."""
    from harness.scenario.registry import device_models

    model = device_models()[plan.spec.load.model]
    identities: dict[str, dict[str, str | None]] = {}
    base: MqttSettings | None = None

    def add(identity: str) -> None:
        nonlocal base
        s = target.client_settings(identity)
        base = base or s
        identities[identity] = {"cert": str(s.cert) if s.cert else None, "key": str(s.key) if s.key else None}

    via = plan.spec.load.via
    for d in devices:
        if via == "mqtt":
            add(f"device-{d}")
    centres: dict[str, str] = {}
    for name, probe in lab.spec.probes.items():
        if probe.kind != "response_centre" or probe.via != "mqtt" or probe.centre is None:
            continue
        if plan.spec.load.centres != "mqtt":
            break  # the load observes centres that receive over DC-09 or SCAIP (`listening`)
        centres.setdefault(probe.centre, name)
        add(f"centre-{probe.centre}")
    if base is None:  # no MQTT identity in this run: the broker settings only give the SCAIP fleet its CA
        base = target.client_settings(f"device-{devices[0]}" if devices else "router")
    assert base is not None
    m = lab.spec.mqtt

    def spec_of(event: str) -> dict[str, Any]:
        e = model.events[event]
        return {
            "name": event,
            "event": e.event,
            "code": e.code,
            "qualifier": e.qualifier,
            "priority": e.priority,
            "stc": e.scaip_stc,
        }

    now = time.time()
    connect_start = now + startup_s
    sched = plan.schedule
    return Job(
        scenario=plan.id,
        tag=tag,
        out_dir=str(out_dir),
        site=lab.spec.site,
        topics=dict(lab.spec.topics),
        broker={
            "url": base.url,
            "version": base.version,
            "ca": str(base.ca) if base.ca else None,
            "verify": base.verify,
            "username": base.username,
            "password_env": m.password_env,
            "key_password_env": m.tls.key_password_env if m.tls else None,
            "connect_timeout_s": base.connect_timeout_s,
        },
        identities=identities,
        devices=[
            {"id": d, "user": lab.spec.devices[d].user, "centre": lab.expected_centre(d), **_link_of(lab, target, d)}
            for d in devices
        ],
        centres=centres,
        events={
            "alarm": spec_of(plan.spec.load.event),
            **({"storm": spec_of(plan.storm_event)} if plan.storm_event else {}),
        },
        curve=[(t, r) for t, r in sched.curve.points],
        storm=asdict(sched.storm) if sched.storm else None,
        heartbeat_ns=plan.heartbeat_ns,
        within_ns=plan.within_ns,
        drain_ns=plan.drain_ns,
        max_lag_ns=plan.max_lag_ns,
        connect_start=connect_start,
        schedule_start=connect_start + plan.connect_ns / 1e9,
        workers=workers,
        direct=direct,
        acknowledge=plan.spec.load.acknowledge,  # the scenario's `acknowledge: false` is honoured
        via=via,
        link=_shared_link(lab, model, devices, via, base),
        listening={s.centre: _listening(lab, model, devices, s) for s in listening or []},
    )


def _listening(lab: Lab, model: Any, devices: list[str], listener: Any) -> dict[str, Any]:
    """What the probing locust process needs to serve a DC-09 or SCAIP centre on the inherited socket: how
    it names the devices (the probe's maps, as the functional centre links read them) and their users."""
    probe = lab.spec.probes[listener.probe]
    out: dict[str, Any] = {
        "centre": listener.centre,
        "probe": listener.probe,
        "via": listener.via,
        "transport": listener.transport,
        "fd": listener.sock.fileno(),
        "users": {d: lab.spec.devices[d].user for d in devices},
    }
    if listener.via == "dc09":
        d = probe.dc09
        own = {str(dev.dc09.account).upper(): i for i, dev in lab.spec.devices.items() if dev.dc09 and dev.dc09.account}
        out |= {
            "accounts": dict(d.accounts) if d is not None and d.accounts else own,
            "sia_codes": dict(d.sia_codes) if d is not None else {},
            "key_env": d.key_env if d is not None else None,
            "key_file": str(lab.resolve(d.key_file)) if d is not None and d.key_file else None,
        }
    else:
        sc = probe.scaip
        scaip_ids = {i: dev.scaip for i, dev in lab.spec.devices.items() if dev.scaip and dev.scaip.cid}
        own = {f"{sc_id.cid}/{sc_id.did or ''}": i for i, sc_id in scaip_ids.items()}
        out |= {
            "devices": dict(sc.devices) if sc is not None and sc.devices else own,
            "raised": dict(sc.raised) if sc is not None else {},
            "stc_codes": {
                e.scaip_stc: model.code_for_stc(e.scaip_stc) for e in model.events.values() if e.wire and e.scaip_stc
            },
        }
    return out


def _link_of(lab: Lab, target: Any, device: str) -> dict[str, str]:
    """A DC-09 or SCAIP device's identity and where it sends (the lab file's `to`, else the embedded lab's
    receiver)."""
    dev = lab.spec.devices[device]
    place = lab.src.place("devices", device)
    if dev.via == "dc09" and dev.dc09 is not None:
        to = dev.dc09.to or target.endpoint("device", "dc09")
        out = {"account": str(dev.dc09.account), "to": to}
    elif dev.via == "scaip" and dev.scaip is not None:
        names = ("scaip_tls",) if dev.scaip.transport == "tls" else ("scaip_plain", "scaip")
        to = dev.scaip.to or next((a for n in names if (a := target.endpoint("device", n))), None)
        out = {"cid": str(dev.scaip.cid), "did": str(dev.scaip.did or ""), "to": to}
    else:
        return {}
    if not out["to"]:
        raise InputError(
            f"device `{device}`: no {dev.via} receiver to send to",
            place=place,
            fix=f"set {dev.via}.to: HOST:PORT (the platform's {dev.via} receiver)",
        )
    return out


def _shared_link(lab: Lab, model: Any, devices: list[str], via: str, base: MqttSettings) -> dict[str, Any]:
    """The fleet's DC-09 / SCAIP settings, from its first device (the fleet lab file gives all the same)."""
    if via == "mqtt" or not devices:
        return {}
    dev = lab.spec.devices[devices[0]]
    if via == "dc09":
        d = dev.dc09
        assert d is not None
        return {
            "protocol": d.protocol,
            "receiver": d.receiver,
            "line": d.line,
            "timeout_s": parse_duration(d.timeout) / 1e9,
            "zones": d.zones,
            "key_env": d.key_env,
            "key_file": str(lab.resolve(d.key_file)) if d.key_file else None,
        }
    s = dev.scaip
    assert s is not None
    return {"transport": s.transport, "dty": model.scaip_dty, "ca": str(base.ca) if base.ca else None}


__all__ = [
    "DC09_TCP_CONNECTIONS",
    "FLEET_PREFIX",
    "JOB_FILE",
    "LOAD_VIAS",
    "Job",
    "fleet_devices",
    "fleet_ids",
    "fleet_lab",
    "make_job",
]
