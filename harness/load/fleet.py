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
from harness.labfile import Lab, load_lab
from harness.load.scenario import LoadPlan
from harness.load.shapes import RateCurve, Schedule, Storm
from harness.transports.mqtt import MqttSettings

JOB_FILE = "job.json"
FLEET_PREFIX = "ld-"


def fleet_ids(count: int) -> list[str]:
    width = max(5, len(str(count - 1)))
    return [f"{FLEET_PREFIX}{i:0{width}d}" for i in range(count)]


def fleet_lab(lab: Lab, plan: LoadPlan, devices: int, out_dir: Path) -> Lab:
    """The lab to run `plan` against: for the embedded lab a generated lab file with `devices` fleet
    devices; for an external platform the lab file itself (checked to hold enough devices)."""
    model = plan.spec.load.model
    if lab.spec.platform.kind != "embedded":
        mine = [d for d, dev in lab.spec.devices.items() if dev.model == model and dev.via == "mqtt"]
        if len(mine) < devices:
            raise InputError(
                f"the load needs {devices} `{model}` devices, but the lab file lists {len(mine)}",
                place=lab.src.place("devices"),
                fix="list the platform's test devices in the lab file (vtlab cannot invent devices an external "
                "platform would accept), or lower load.devices / --users",
            )
        return lab
    data = lab.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    # the load path observes response centres over MQTT: keep those probes, and give the fleet only to
    # users whose centre one of them receives for (a centre on DC-09 or SCAIP would count as lost)
    data["probes"] = {
        n: p
        for n, p in data["probes"].items()
        if p.get("kind", "response_centre") == "response_centre" and p.get("via", "mqtt") == "mqtt"
    }
    observed = {p["centre"] for p in data["probes"].values()}
    personas = sorted(pid for pid, p in lab.personas.items() if p.centre in observed)
    if not personas:
        raise InputError(
            "no synthetic user belongs to a centre with an MQTT response-centre probe",
            place=lab.src.place("probes"),
            fix="add a `response_centre` probe (via mqtt) for the centre of at least one user",
        )
    heartbeat = plan.spec.load.heartbeat
    data["devices"] = {
        dev_id: {"model": model, "user": personas[i % len(personas)], "heartbeat": heartbeat, "via": "mqtt"}
        for i, dev_id in enumerate(fleet_ids(devices))
    }
    data["users"] = str(lab.resolve(lab.spec.users))
    data["name"] = f"{lab.spec.name} (fleet of {devices} for a load run)"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "fleet-lab.yaml"
    header = (
        f"# Written by `vtlab load` from {lab.path}: its devices replaced by a fleet of {devices} simulated "
        f"`{model}` devices.\n"
    )
    path.write_text(header + yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000), encoding="utf-8")
    return load_lab(path)


def fleet_devices(lab: Lab, plan: LoadPlan, devices: int) -> list[str]:
    model = plan.spec.load.model
    ids = [d for d, dev in lab.spec.devices.items() if dev.model == model and dev.via == "mqtt"]
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
    extra: dict[str, Any] = field(default_factory=dict)

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

    for d in devices:
        add(f"device-{d}")
    centres: dict[str, str] = {}
    for name, probe in lab.spec.probes.items():
        if probe.kind != "response_centre" or probe.via != "mqtt" or probe.centre is None:
            continue  # the load path observes response centres over MQTT
        centres.setdefault(probe.centre, name)
        add(f"centre-{probe.centre}")
    assert base is not None
    m = lab.spec.mqtt

    def spec_of(event: str) -> dict[str, Any]:
        e = model.events[event]
        return {"name": event, "event": e.event, "code": e.code, "qualifier": e.qualifier, "priority": e.priority}

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
        devices=[{"id": d, "user": lab.spec.devices[d].user, "centre": lab.expected_centre(d)} for d in devices],
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
    )


__all__ = ["FLEET_PREFIX", "JOB_FILE", "Job", "fleet_devices", "fleet_ids", "fleet_lab", "make_job"]
