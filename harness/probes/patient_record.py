"""PatientRecordProbe: stands where the contract says events must reach the patient record (EPJ), as the
national welfare-technology hub (VKP) would, and hands every FHIR resource the platform pushes to the
tracker as a `record` arrival, stamped on the HTTPS handler thread.

The endpoint itself (FHIR R4 over HTTPS, HelseID-shaped private_key_jwt tokens, OperationOutcome on
refusal) is harness.probes.epj.EpjProbe; this adds the per-run TLS certificate, the platform's client
registration, and the translation to protocol-neutral arrivals.

With `mode: pull` the probe listens nowhere: an EpjPoller searches the platform's FHIR API every `interval`
with a token it gets by private_key_jwt, and hands each new resource to the tracker the same way, stamped
when the answer that first listed it arrived. For the embedded lab the API is the lab's own
(harness.lab.fhir_api): the probe generates its reading key, and the lab registers the public half; for a
supplier's platform it is `api`, else the lab file's `fhir.url`. It reads from the run's start minus the
lab file's clock-skew allowance, never earlier, and every failed search is evidence (poll_failures).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness.links import Incoming, Refused
from harness.pki import make_pki
from harness.probes.epj import ClientKey, EpjPoller, EpjProbe, HelseIdTokenProvider, PollFailure, RequestSummary
from harness.probes.poll_failures import PollFailureLog
from harness.protocols import vkp
from harness.protocols.vkp import DEFAULT_CODES, ResourceSummary, scope_for
from harness.tracking import Tracker
from harness.units import parse_duration

log = logging.getLogger("vtlab.probes.patient_record")

WRITE_SCOPES = tuple(
    scope_for(t, "write")
    for t in ("Bundle", "DetectedIssue", "Encounter", "Composition", "MedicationDispense", "Observation")
)
READER_ID = "vtlab-epj-reader"
"""vtlab's client id at the embedded lab's token endpoint (pull mode)."""


@dataclass(frozen=True, slots=True)
class RecordEndpoint:
    """What a platform needs to push to this probe (the embedded lab gets it in its config)."""

    settings: Any  # the lab file's EpjSettings (codes the platform is to use)
    base_url: str
    token_url: str
    ca: Path
    orgnr: str
    client: ClientKey | None  # the platform's generated client (embedded lab); None: registered from the lab file


MAX_FIELD = 2000
"""Characters of one text field of a record kept in the evidence (a platform may send megabytes in a note)."""
MAX_READINGS = 50


def _bounded(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_FIELD:
        return text
    return f"{text[:MAX_FIELD]}… ({len(text)} characters in all)"


def fields_of(s: ResourceSummary) -> dict[str, Any]:
    """The record's fields as the tracker and the evidence keep them, every text bounded (MAX_FIELD)."""
    b = _bounded
    return {
        "resource": s.resource_type,
        "kind": s.kind,
        "id": b(s.id),
        "patient": b(s.patient.value) if s.patient else None,
        "device": b(s.device.value) if s.device else None,
        "code": b(s.code),
        "code_system": b(s.code_system),
        "display": b(s.display),
        "severity": b(s.severity),
        "status": b(s.status),
        "time": s.time.isoformat() if s.time else None,
        "readings": [
            {"loinc": b(r.loinc), "value": b(str(r.value)), "unit": b(r.unit)} for r in s.readings[:MAX_READINGS]
        ],
        "note": b(s.note),
        "orgnr": b(s.orgnr),
        "last_updated": s.last_updated.isoformat() if s.last_updated else None,  # the platform's clock
        "findings": [b(f"{f.code} at {f.path}: {f.message}") for f in s.findings[:MAX_READINGS]],
    }


class PatientRecordProbe:
    def __init__(
        self,
        name: str,
        settings: Any,
        lab_dir: Path,
        tracker: Tracker,
        *,
        pull_api: Any = None,
        on_fault: Callable[[str], None] | None = None,
    ) -> None:
        """`pull_api`: the lab file's PullApi for a pulling probe (None: `settings.api`, or the embedded lab's
        own API); `on_fault`: the test bed's harness-fault log (vtlab's own side of a search failed)."""
        self.name = name
        self.settings = settings
        self._tracker = tracker
        self._dir = Path(tempfile.mkdtemp(prefix="vtlab-epj-tls-"))
        self.orgnr = settings.orgnr
        self.accepted = 0
        self.poll_errors = 0
        self._poller: EpjPoller | None = None
        self._started = False
        self.pulls = getattr(settings, "mode", "push") == "pull"
        if self.pulls:
            self._probe: EpjProbe | None = None
            self._platform: ClientKey | None = None
            self.since = datetime.now(UTC) - timedelta(microseconds=parse_duration(settings.skew) / 1000)
            self.failures = PollFailureLog(name, tracker.evidence, lambda: tracker.scenario, on_fault)
            self._lab_api = False  # reading the embedded lab's own API (it may not be up at the first search)
            self._reached = False  # a round of searches has succeeded
            self._round_failed = False
            self._pull_from_lab_file(lab_dir, pull_api)
            return
        pki = make_pki(self._dir, clients=(), keep_ca_key=False)
        self.ca = pki.ca_cert
        host, _, port = (settings.listen or "127.0.0.1:0").rpartition(":")
        self.orgnr = settings.orgnr
        self._probe = EpjProbe(
            certfile=pki.server_cert,
            keyfile=pki.server_key,
            orgnrs=[settings.orgnr],
            on_resource=self._on_resource,
            on_refused=self._on_refused,
            host=host,
            port=int(port),
            strict=settings.strict,
            name=name,
            codes=DEFAULT_CODES.with_alert_codes(settings.alert_codes),
        )
        for client_id, key_file in settings.clients.items():
            self._probe.register_client(client_id, (lab_dir / key_file).read_bytes(), WRITE_SCOPES)
        self._platform = None

    # -- pull mode

    def _pull_from_lab_file(self, lab_dir: Path, pull_api: Any) -> None:
        s = self.settings
        if pull_api is not None:
            api, ca = str(pull_api.url), pull_api.ca
        elif s.api is not None:
            api, ca = s.api, (lab_dir / s.ca).resolve() if s.ca else None
        else:
            return  # the embedded lab's own API: pull_from() once the lab's address is known
        parts = urlsplit(api)
        origin = f"{parts.scheme}://{parts.netloc}"
        client = ClientKey(s.client_id, (lab_dir / s.key_file).resolve(), vkp.scopes_of(s.resources, "read"))
        self._make_poller(api, s.token_url or f"{origin}/connect/token", ca, client)

    def reader_key(self) -> tuple[str, Path]:
        """Pull from the embedded lab: vtlab's client id and the public key (PEM file) the lab registers; the
        private half stays in this probe's folder."""
        key = vkp.generate_key("ES256")
        (self._dir / "reader.key").write_bytes(vkp.private_pem(key))
        (self._dir / "reader.key").chmod(0o600)
        (self._dir / "reader.pub").write_bytes(vkp.public_pem(key))
        return READER_ID, self._dir / "reader.pub"

    def pull_from(self, base_url: str, token_url: str, ca: Path | None) -> None:
        """Poll the embedded lab's API (its address is known only when the lab is configured); a probe that
        names its own API keeps reading that one."""
        if self._poller is not None:
            log.info("%s: reads %s, not the reference lab's own API", self.name, self._poller.base_url)
            return
        client = ClientKey(READER_ID, self._dir / "reader.key", vkp.scopes_of(self.settings.resources, "read"))
        self._lab_api = True
        self._make_poller(base_url, token_url, ca, client)

    def _make_poller(self, api: str, token_url: str, ca: Path | None, client: ClientKey) -> None:
        tokens = HelseIdTokenProvider(token_url, client, ca=ca, timeout_s=parse_duration(self.settings.timeout) / 1e9)
        self._poller = EpjPoller(
            api,
            token_provider=tokens,
            on_resource=self._on_resource,
            resource_types=tuple(self.settings.resources),
            ca=ca,
            since=self.since,
            interval_s=parse_duration(self.settings.interval) / 1e9,
            timeout_s=parse_duration(self.settings.timeout) / 1e9,
            codes=DEFAULT_CODES.with_alert_codes(self.settings.alert_codes),
            on_failure=self._on_poll_failure,
            on_round=self._on_round,
            lookback=timedelta(microseconds=parse_duration(self.settings.skew) / 1000),
            name=f"{self.name}-poller",
        )
        if self._started:
            self._poller.start()

    def _on_poll_failure(self, failure: PollFailure) -> None:
        """A failed search becomes evidence (poll_failures: bounded, nothing secret); records it missed
        arrive with the next search that succeeds, or are late or lost by the scenario's own criteria. The
        embedded lab's API refusing connections before the first success is the lab still starting."""
        self.poll_errors += 1
        self._round_failed = True
        if self._lab_api and not self._reached and failure.signature.endswith("refused"):
            log.debug("%s: the reference lab's API is not up yet", self.name)
            return
        self.failures.failure(failure)

    def _on_round(self) -> None:
        if not self._round_failed:
            self._reached = True
        self._round_failed = False
        self.failures.tick()

    # -- push mode

    def endpoint(self, generate_client: bool) -> RecordEndpoint:
        """Where to push, and (for the embedded lab) a freshly generated client key to push with."""
        assert self._probe is not None, "a pulling probe has no endpoint"
        if generate_client and self._platform is None:
            self._platform = self._probe.new_client("vtlab-reference-lab", WRITE_SCOPES)
        return RecordEndpoint(
            self.settings, self._probe.base_url(self.orgnr), self._probe.token_url, self.ca, self.orgnr, self._platform
        )

    def start(self) -> None:
        self._started = True
        if self._probe is not None:
            self._probe.start()
        if self._poller is not None:
            self._poller.start()

    def _on_resource(self, summary: ResourceSummary, arrived_ns: int) -> None:
        fields = fields_of(summary)
        self.accepted += 1
        self._tracker.on_incoming(
            self.name,
            "record",
            Incoming(
                arrived_ns,
                fields,
                defect="; ".join(fields["findings"]) or None,
                evidence=fields,
                where=f"{summary.path}",
                carries=("patient", "device", "code", "readings"),
            ),
        )

    def _on_refused(self, request: RequestSummary, status: int, reason: str) -> None:
        self._tracker.on_refused(
            self.name,
            Refused(
                request.arrived_ns,
                f"{request.method} {request.path}",
                f"HTTP {status}: {reason}",
                f"epj client {request.client_id}",
            ),
        )

    def close(self) -> None:
        if self._poller is not None:
            self._poller.close()
            self.failures.close()
        if self._probe is not None:
            self._probe.close()
        shutil.rmtree(self._dir, ignore_errors=True)
