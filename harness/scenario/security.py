"""Security steps: the platform must refuse whoever comes without the credentials, the protocol version or
the authority the contract demands, and must present a certificate a careful client accepts.

`expect_refused` makes one attempt an intruder (or a broken device) would make and records, as evidence,
what vtlab sent, what the platform answered (TLS alert, MQTT 5 reason code, HTTP status, DC-09 NAK/DUH,
SIP status) and the certificate it presented; never a key, passphrase, password or token. A refusal is
`refused`; an accepted attempt is a finding counted as `insecure_accepted`. An attempt vtlab could not
make (nothing listened, its own TLS library cannot offer an old version, an oracle alarm never arrived)
is a harness fault: never a pass, never charged to the supplier.

The checks themselves are plain functions in `harness.security`; this module binds them to the lab file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.clock import now_ns
from harness.errors import InputError, TargetError, UnreachableError
from harness.evidence import Match
from harness.hookspecs import hookimpl
from harness.identities import centre_identity, device_identity, twin_identity
from harness.links import scaip as scaip_link
from harness.outcomes import Outcome
from harness.scenario.plan import ScenarioPlan, StepPlan
from harness.scenario.registry import StepKind
from harness.scenario.runner import Iteration
from harness.security.result import CannotCheck, CheckResult
from harness.transports.mqtt import MqttSettings
from harness.units import parse_bounded_duration, parse_duration

ConnectAttempt = Literal[
    "plain_tcp", "no_client_certificate", "untrusted_certificate", "no_credentials", "wrong_password"
]
TlsAttempt = Literal["tls_1_0", "tls_1_1", "weak_cipher"]
AuthzAttempt = Literal["publish_as_other_device", "read_other_centre", "control_topic", "session_takeover"]
AlarmAttempt = Literal[
    "dc09_replay",
    "dc09_stale_timestamp",
    "dc09_future_timestamp",
    "dc09_wrong_key",
    "dc09_unencrypted",
    "dc09_unknown_account",
    "scaip_without_tls",
    "scaip_unknown_device",
    "fhir_without_token",
]
Attempt = Literal[ConnectAttempt, TlsAttempt, AuthzAttempt, AlarmAttempt]

CONNECT_ATTEMPTS = frozenset(ConnectAttempt.__args__)  # type: ignore[attr-defined]
TLS_ATTEMPTS = frozenset(TlsAttempt.__args__)  # type: ignore[attr-defined]
AUTHZ_ATTEMPTS = frozenset(AuthzAttempt.__args__)  # type: ignore[attr-defined]
DC09_ATTEMPTS = frozenset(a for a in AlarmAttempt.__args__ if a.startswith("dc09_"))  # type: ignore[attr-defined]
NEEDS_DEVICE = AUTHZ_ATTEMPTS | DC09_ATTEMPTS | {"scaip_without_tls", "scaip_unknown_device"}


class ExpectRefusedArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempt: Attempt = Field(
        description="What vtlab tries. MQTT connection: plain_tcp (MQTT without TLS), no_client_certificate, "
        "untrusted_certificate (a client certificate from a CA the platform must not trust), no_credentials, "
        "wrong_password. MQTT TLS: tls_1_0, tls_1_1 (only that version offered), weak_cipher (NULL, anonymous, "
        "export/low/DES/RC4/MD5 suites). MQTT authorisation (MQTT 5 reason codes asserted): "
        "publish_as_other_device, read_other_centre, control_topic, session_takeover (another identity "
        "connects with the same client id). DC-09: dc09_replay (a recording played back `age` later), "
        "dc09_stale_timestamp, dc09_future_timestamp (NAK expected), dc09_wrong_key, dc09_unencrypted, "
        "dc09_unknown_account (DUH expected). scaip_without_tls: a plain SIP MESSAGE where the lab file says TLS. "
        "scaip_unknown_device: an alarm from a SCAIP controller the platform does not know (snu 3 expected). "
        "fhir_without_token: a "
        "FHIR push and a search without a bearer token at the platform's API (fhir.url; the embedded lab: its "
        "own), 401 expected"
    )
    within: str = Field("3s", description="How long the platform may take to answer")
    device: str | None = Field(
        None,
        description="Scenario device whose identity, DC-09 account or SCAIP id the "
        "attempt uses (default: the scenario's first device)",
    )
    other: str | None = Field(
        None,
        description="Lab-file device id of the victim (publish_as_other_device, "
        "session_takeover) or of a device of another centre (read_other_centre); "
        "default: one chosen from the lab file",
    )
    age: str = Field("2m", description="DC-09: how old (or, for the future, how far ahead) the timestamp is")

    @field_validator("within", "age")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_bounded_duration(v, what="a security step duration")
        return v


def intruder(settings: MqttSettings, attempt: Attempt, workdir: Path) -> MqttSettings:
    """The harness's own connection settings, minus what the attempt leaves out."""
    if attempt == "plain_tcp":
        return MqttSettings(url=settings.url.replace("mqtts://", "mqtt://"), version=settings.version)
    if attempt == "no_client_certificate":
        return dataclasses.replace(settings, cert=None, key=None, key_password=None)
    if attempt == "untrusted_certificate":
        from harness.pki import make_pki

        stranger = make_pki(workdir, clients=("intruder",)).clients["intruder"]
        return dataclasses.replace(settings, cert=stranger.cert, key=stranger.key, key_password=None)
    if attempt == "wrong_password":
        return dataclasses.replace(settings, password="vtlab-wrong-" + secrets.token_hex(8))
    return dataclasses.replace(settings, username=None, password=None)


def connect_check(settings: MqttSettings, attempt: Attempt, timeout_s: float) -> CheckResult:
    """Connect as the intruder would; a CONNACK success is a finding. What the platform answered is kept."""
    from harness.security.mqtt_checks import ProbeClient, reason_name

    with tempfile.TemporaryDirectory(prefix="vtlab-intruder-") as tmp:
        bad = dataclasses.replace(intruder(settings, attempt, Path(tmp)), connect_timeout_s=timeout_s)
        request = {
            "attempt": attempt,
            "url": bad.url,
            "client_certificate": "intruder (untrusted CA)"
            if attempt == "untrusted_certificate"
            else (bad.cert.stem if bad.cert else None),
            "username": bad.username,
            "password": "wrong (random)" if attempt == "wrong_password" else ("given" if bad.password else None),
        }
        client = ProbeClient(bad, "intruder")
        try:
            rc = client.connect(timeout_s)
        finally:
            client.close()
    answer = {
        "connack": reason_name(client.connack, "CONNACK")
        if client.connack is not None
        else "none (the connection was closed before any CONNACK)"
    }
    if rc < 0x80:
        return CheckResult(
            Outcome.ACCEPTED, f"the broker at {bad.url} accepted a connection ({attempt})", request, answer
        )
    return CheckResult(Outcome.REFUSED, f"refused: {answer['connack']}", request, answer)


# --- resolving the attempt against the lab file -----------------------------------------------------
def _device_id(plan: ScenarioPlan, args: ExpectRefusedArgs, index: int, step: StepPlan) -> str:
    alias = args.device or next(iter(plan.devices))
    return plan.binding(alias, step.place).id_for(index)


def _other_device(plan: ScenarioPlan, args: ExpectRefusedArgs, device: str, step: StepPlan) -> str:
    lab = plan.lab
    if args.other is not None:
        if args.other not in lab.spec.devices:
            raise InputError(
                f"`other: {args.other}` is no device of the lab file",
                place=step.place,
                fix=f"use one of {sorted(lab.spec.devices)}",
            )
        if args.other == device:
            raise InputError(
                "`other` is the attacking device itself", place=step.place, fix="name another device of the lab file"
            )
        return args.other
    mine = lab.expected_centre(device)
    candidates = [d for d in lab.spec.devices if d != device and lab.spec.devices[d].via == "mqtt"]
    if args.attempt == "read_other_centre":
        candidates = [d for d in candidates if lab.expected_centre(d) != mine]
    if not candidates:
        raise InputError(
            f"`{args.attempt}` needs another MQTT device in the lab file"
            + (" belonging to another response centre" if args.attempt == "read_other_centre" else ""),
            place=step.place,
            fix="add such a device to the lab file, or name it with `other:`",
        )
    return candidates[0]


def check_expect_refused(plan: ScenarioPlan, step: StepPlan) -> None:
    """At load time: the devices exist and the lab file says what the attempt needs."""
    args: ExpectRefusedArgs = step.args
    lab = plan.lab
    if args.attempt not in NEEDS_DEVICE and args.attempt != "wrong_password":
        return
    if args.attempt == "wrong_password":
        if not lab.spec.mqtt.username:
            raise InputError(
                "`wrong_password` needs a broker user name (mqtt.username in the lab file): this "
                "platform does not authenticate by password",
                place=step.place,
                fix="use no_client_certificate or untrusted_certificate for certificate login",
            )
        return
    device = _device_id(plan, args, 0, step)
    spec = lab.spec.devices[device]
    if args.attempt in AUTHZ_ATTEMPTS:
        if spec.via != "mqtt":
            raise InputError(
                f"`{args.attempt}` uses the MQTT identity of a device; `{device}` speaks {spec.via}",
                place=step.place,
                fix="name an MQTT device with `device:`",
            )
        if args.attempt != "control_topic":
            _other_device(plan, args, device, step)
    elif args.attempt in DC09_ATTEMPTS:
        if spec.via != "dc09" or spec.dc09 is None:
            raise InputError(
                f"`{args.attempt}` needs a DC-09 device; `{device}` speaks {spec.via}",
                place=step.place,
                fix="name a device with via: dc09 with `device:`",
            )
        if args.attempt in ("dc09_wrong_key", "dc09_unencrypted") and not (spec.dc09.key_env or spec.dc09.key_file):
            raise InputError(
                f"`{args.attempt}` tests the encryption the platform requires, but the lab file gives "
                f"device `{device}` no DC-09 key",
                place=step.place,
                fix="give the device dc09.key_env or dc09.key_file (the key the platform expects)",
            )
    elif args.attempt == "scaip_unknown_device":
        if spec.scaip is None or not spec.scaip.cid:
            raise InputError(
                f"`scaip_unknown_device` sends where device `{device}` sends SCAIP, but it has no SCAIP settings",
                place=step.place,
                fix="name a device with `scaip: {cid: ...}` with `device:`",
            )
    elif args.attempt == "scaip_without_tls":
        if spec.via != "scaip" or spec.scaip is None:
            raise InputError(
                f"`scaip_without_tls` needs a SCAIP device; `{device}` speaks {spec.via}",
                place=step.place,
                fix="name a device with via: scaip with `device:`",
            )
        if spec.scaip.transport != "tls":
            raise InputError(
                f"the lab file lets device `{device}` speak SCAIP over {spec.scaip.transport}: TLS "
                "is not required there, so a plain attempt proves nothing",
                place=step.place,
                fix="set scaip.transport: tls for the device if the contract requires TLS",
            )


def fhir_endpoint(lab: Any) -> tuple[str, Path | None] | None:
    """The platform's FHIR base URL and CA from the lab file (`fhir: {url, ca}`), when it names one."""
    fhir = getattr(lab.spec, "fhir", None)
    url = getattr(fhir, "url", None) if fhir is not None else None
    if not url:
        return None
    ca = getattr(fhir, "ca", None)
    return str(url), lab.resolve(ca) if ca else None


def _lab_fhir_api(it: Iteration) -> tuple[str, Path | None] | None:
    """The embedded lab's own FHIR API and its CA, as its ready line names them (None: it has none)."""
    url = it.bed.endpoint("device", "fhir")
    if not url:
        return None
    ca = it.bed.endpoint("device", "fhir_ca")
    return str(url), Path(ca) if ca else None


# --- running ----------------------------------------------------------------------------------------
def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883)


def _dc09_target(it: Iteration, device: str) -> tuple[str, Any, bytes | None]:
    from harness.links.dc09 import read_key

    lab = it.bed.lab
    settings = lab.spec.devices[device].dc09
    assert settings is not None
    address = settings.to or it.bed.endpoint("device", "dc09")
    if not address:
        raise InputError(
            f"device `{device}`: no DC-09 receiver address",
            place=str(lab.src.place("devices", device)),
            fix="set dc09.to: HOST:PORT",
        )
    return address, settings, read_key(settings, lab.path.parent, str(lab.src.place("devices", device)))


def attempt_runner(it: Iteration, step: StepPlan) -> Callable[[], CheckResult]:
    """The check for this step, bound to the lab file's addresses and identities (a blocking call)."""
    from harness.security import alarm_checks, mqtt_checks, tls

    args: ExpectRefusedArgs = step.args
    bed, lab, plan = it.bed, it.bed.lab, it.plan
    within = parse_duration(args.within) / 1e9
    own = cast(Any, bed).mqtt_settings

    def settings_for(identity: str = "harness") -> MqttSettings:
        """A device's or centre's rights on a connection of the check's own (its twin identity), never the
        test bed's: with client ids bound to identities a second connection would take the first's place."""
        return cast(MqttSettings, own(identity if identity == "harness" else twin_identity(identity)))

    harness_settings: MqttSettings = settings_for()
    attempt = args.attempt
    if attempt in CONNECT_ATTEMPTS:
        return lambda: connect_check(harness_settings, attempt, within)
    if attempt in TLS_ATTEMPTS:
        if not harness_settings.tls:
            raise InputError(
                f"`{attempt}` probes TLS, but the lab file's mqtt.url is not mqtts://",
                place=step.place,
                fix="write mqtt.url as mqtts://... where the contract requires TLS",
            )
        host, port = _host_port(harness_settings.url)
        cred = {
            "cert": harness_settings.cert,
            "key": harness_settings.key,
            "key_password": harness_settings.key_password,
            "timeout_s": within,
        }
        if attempt == "weak_cipher":
            return lambda: tls.probe_weak_ciphers(host, port, **cred)  # type: ignore[arg-type]
        version = cast(tls.TlsVersionName, "1.0" if attempt == "tls_1_0" else "1.1")
        return lambda: tls.probe_version(host, port, version, **cred)  # type: ignore[arg-type]
    if attempt == "fhir_without_token":
        where = fhir_endpoint(lab) or _lab_fhir_api(it)
        if where is None:
            raise InputError(
                "the lab file names no FHIR endpoint of the platform (fhir.url)",
                place=step.place,
                fix="add `fhir: {url: https://host:port/fhir/r4/<orgnr>, ca: ca.pem}` to the lab file (the "
                "embedded lab has its own API only with a patient-record probe, kind: epj)",
            )
        return lambda: alarm_checks.fhir_without_token_check(where[0], where[1], timeout_s=within)
    device = _device_id(plan, args, it.index, step)
    if attempt in DC09_ATTEMPTS:
        address, settings, key = _dc09_target(it, device)
        kind = cast(alarm_checks.Dc09Attempt, attempt.removeprefix("dc09_"))
        age = parse_duration(args.age) / 1e9
        account = str(settings.account).upper()
        if kind == "unknown_account":
            known = {str(d.dc09.account).upper() for d in lab.spec.devices.values() if d.dc09 and d.dc09.account}
            account = next(a for a in (f"FFF{n:03X}" for n in range(4096)) if a not in known)
        return lambda: alarm_checks.dc09_check(
            address,
            kind,
            account,
            key,
            protocol=settings.protocol,
            receiver=settings.receiver,
            line=settings.line,
            age_s=age,
            timeout_s=within,
        )
    if attempt == "scaip_unknown_device":
        link = lab.spec.devices[device].scaip
        assert link is not None
        transport = link.transport
        over_tls = transport == "tls"
        address = link.to or bed.endpoint("device", "scaip_tls" if over_tls else "scaip")
        context = scaip_link.tls_context(bed, device, link) if over_tls else None
        known = {str(d.scaip.cid) for d in lab.spec.devices.values() if d.scaip and d.scaip.cid}
        cid = next(c for c in (str(9_000_000 + n) for n in range(1000)) if c not in known)
        return lambda: asyncio.run(alarm_checks.scaip_unknown_device_check(
            address, transport, cid, ssl_context=context, timeout_s=within))
    if attempt == "scaip_without_tls":
        s = lab.spec.devices[device].scaip
        assert s is not None
        to = s.to or bed.endpoint("device", "scaip")
        return lambda: asyncio.run(alarm_checks.scaip_plain_check(to, str(s.cid), s.did, timeout_s=within))
    mine = settings_for(device_identity(device))
    if attempt == "control_topic":
        topic = lab.topic("lab_control")
        return lambda: mqtt_checks.publish_to_control(mine, topic, within_s=within)
    other = _other_device(plan, args, device, step)
    theirs = settings_for(device_identity(other))
    other_user = lab.spec.devices[other].user
    other_centre = lab.expected_centre(other)
    if attempt == "session_takeover":
        return lambda: mqtt_checks.session_takeover(theirs, mine, within_s=within)
    centre_settings = settings_for(centre_identity(other_centre))
    alarm_topic = lab.topic("centre_alarm", centre=other_centre)
    event_topic = lab.topic("device_event", device=other)
    if attempt == "publish_as_other_device":
        return lambda: mqtt_checks.publish_as_other_device(
            mine, event_topic, other, other_user, centre_settings, alarm_topic, within_s=within
        )
    return lambda: mqtt_checks.read_other_centre(
        mine, alarm_topic, theirs, event_topic, other, other_user, centre_settings, within_s=within
    )


def record_check(
    it: Iteration, step: StepPlan, metric: str, label: str, result: CheckResult | None, problem: str | None, t0: int
) -> None:
    """Evidence of one security attempt: a stimulus row (what was sent), a match (refused/accepted, or not
    reached with a harness fault), an observation `security` (the whole record, for the report)."""
    cid = it.run.new_cid(it.index)
    if result is None:
        outcome, detail = Outcome.NOT_REACHED, f"could not make the attempt: {problem}"
        it.bed.harness_fault(f"{step.kind.name} ({label}): {detail}")
        record: dict[str, Any] = {"check": label, "outcome": outcome.value, "detail": detail}
    else:
        outcome, detail = result.outcome, result.detail
        record = {"check": label, **result.evidence()}
    latency = now_ns() - t0
    it.bed.evidence.stimulus(it.plan.id, cid, "intruder", f"security:{label}", 0, it.index, t0, record)
    it.bed.evidence.match(
        Match(it.plan.id, it.index, step.index, metric, cid, "intruder", 0, outcome, None, latency, detail)
    )
    it.bed.evidence.observation(
        it.plan.id, "security", json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)
    )
    good = outcome in (Outcome.REFUSED, Outcome.OK)
    it.record(step, "ok" if good else ("finding" if outcome is Outcome.ACCEPTED else "not_reached"), detail)


async def run_check(
    it: Iteration, step: StepPlan, metric: str, label: str, make: Callable[[], Callable[[], CheckResult]]
) -> None:
    t0 = now_ns()
    result: CheckResult | None = None
    problem: str | None = None
    try:
        check = make()
        result = await asyncio.to_thread(check)
    except UnreachableError as exc:  # nothing listened: no security shown; vtlab could not make the attempt
        problem = exc.problem
    except CannotCheck as exc:
        problem = exc.reason
    except TargetError as exc:  # vtlab's own settings did not work (e.g. a certificate it was given)
        problem = exc.problem
    record_check(it, step, metric, label, result, problem, t0)


async def expect_refused(it: Iteration, step: StepPlan) -> None:
    """Make an attempt an intruder or a broken device would make, and expect the platform to refuse it:
    connect without TLS or without valid credentials, offer old TLS versions or weak cipher suites, act
    as another device, read another centre's alarms, reach the control topic, take over another
    identity's session, replay or mis-time or mis-key DC-09, speak SCAIP without TLS, write or read FHIR
    without a token. Evidence: the request, the refusal seen, the certificate; never a secret. An accepted attempt
    is a finding counted as `insecure_accepted`."""
    args: ExpectRefusedArgs = step.args
    await run_check(it, step, "refusal", args.attempt, lambda: attempt_runner(it, step))


# --- check_certificate -------------------------------------------------------------------------------
class CheckCertificateArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str | None = Field(
        None, description="Host name the certificate must be valid for (default: the host of mqtt.url in the lab file)"
    )
    within: str = Field("3s", description="How long the handshake may take")

    @field_validator("within")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_bounded_duration(v, what="a security step duration")
        return v


async def check_certificate(it: Iteration, step: StepPlan) -> None:
    """Check, as a careful client does, the certificate the platform's broker presents: issued by the CA
    the lab file names (mqtt.tls.ca), not expired, valid for the host name. Its details (subject, issuer,
    validity, names, fingerprint) go into the evidence. A certificate a client must refuse is a finding
    counted as `insecure_accepted`."""
    from harness.security import tls

    args: CheckCertificateArgs = step.args

    def make() -> Callable[[], CheckResult]:
        s = it.bed.mqtt_settings()
        if not s.tls:
            raise InputError(
                "`check_certificate` needs TLS: the lab file's mqtt.url is not mqtts://",
                place=step.place,
                fix="write mqtt.url as mqtts://...",
            )
        host, port = _host_port(s.url)
        within = parse_duration(args.within) / 1e9
        return lambda: tls.check_server_certificate(
            host,
            port,
            ca=s.ca,
            hostname=args.host or host,
            cert=s.cert,
            key=s.key,
            key_password=s.key_password,
            timeout_s=within,
        )

    await run_check(it, step, "certificate", "server_certificate", make)


@hookimpl
def vtlab_steps() -> list[StepKind]:
    from harness.scenario.fuzz import fuzz_step

    return [
        StepKind(
            "expect_refused", ExpectRefusedArgs, expect_refused, check_expect_refused, metrics=lambda a: ["refusal"]
        ),
        StepKind("check_certificate", CheckCertificateArgs, check_certificate, metrics=lambda a: ["certificate"]),
        fuzz_step(),
    ]


__all__ = [
    "ExpectRefusedArgs",
    "attempt_runner",
    "check_expect_refused",
    "connect_check",
    "expect_refused",
    "intruder",
    "record_check",
    "run_check",
    "vtlab_steps",
]
