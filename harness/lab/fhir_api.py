"""The reference lab's own FHIR R4 API: what it recorded in the patient record, searchable as a supplier's
platform offers it to a record system that pulls rather than being pushed to.

    GET  /fhir/<orgnr>/DetectedIssue?patient=<system>|<value>&_lastUpdated=gt<instant>&_count=20
    POST /connect/token     (client credentials, private_key_jwt: the HelseID shape)

Read-only (writes: 405), a Bundle searchset with `next` links, pages of at most `max_count`, unknown or
malformed search parameters refused with an OperationOutcome 400, requests without a valid token with 401.
The server, the token endpoint and the JWT handling are harness.probes.epj.EpjProbe's (one implementation);
this binds it to the lab's certificate and config and writes refusals to the ledger, without any secret.
`require_token` is the insecure profile's switch (`fhir_token`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from harness.lab.config import FhirApiSettings
from harness.probes.epj import EpjProbe, RequestSummary
from harness.protocols import vkp
from harness.protocols.vkp import DEFAULT_CODES

__all__ = ["READ_SCOPES", "LabFhirApi"]

log = logging.getLogger("harness.lab.fhir_api")

READ_SCOPES = vkp.scopes_of(("DetectedIssue", "Encounter", "Composition", "MedicationDispense", "Observation"), "read")

Write = Callable[..., None]


class LabFhirApi:
    def __init__(self, settings: FhirApiSettings) -> None:
        self.settings = settings
        self._write: Write = lambda _action, **_fields: None
        self._probe = EpjProbe(
            certfile=settings.cert,
            keyfile=settings.key,
            orgnrs=[settings.orgnr],
            on_resource=lambda _s, _ns: None,  # nothing is pushed here: the API is read-only
            on_refused=self._refused,
            host=settings.host,
            port=settings.port,
            base_path="/fhir",
            codes=DEFAULT_CODES.with_alert_codes(settings.alert_codes),
            name="lab-fhir-api",
            read_only=True,
            require_token=settings.require_token,
            max_count=settings.max_count,
        )
        for client_id, public_key in settings.clients.items():
            self._probe.register_client(client_id, public_key.read_bytes(), READ_SCOPES)
        self.stored = 0

    @property
    def base_url(self) -> str:
        return self._probe.base_url(self.settings.orgnr)

    @property
    def addresses(self) -> dict[str, str]:
        """For the lab's ready line: the FHIR base, its token endpoint and the CA of its certificate."""
        out = {"fhir": self.base_url, "fhir_token": self._probe.token_url}
        if self.settings.ca is not None:
            out["fhir_ca"] = str(self.settings.ca)
        return out

    def start(self, write: Write) -> None:
        """Serve; `write(action, **fields)` is the ledger its refusals go to."""
        self._write = write
        self._probe.start()

    def record(self, bundle: Mapping[str, Any]) -> int:
        """Keep every resource of a Bundle the lab built (server-assigned id and lastUpdated); returns how many."""
        n = 0
        for entry in bundle.get("entry", []):
            resource = entry.get("resource") if isinstance(entry, Mapping) else None
            if isinstance(resource, Mapping) and resource.get("resourceType"):
                self._probe.add_to_store(self.settings.orgnr, resource)
                n += 1
        self.stored += n
        return n

    def _refused(self, request: RequestSummary, status: int, reason: str) -> None:
        self._write(
            "fhir_refused",
            method=request.method,
            path=request.path,
            status=status,
            reason=reason[:200],
            client=request.client_id,
            peer=request.peer,
        )

    def close(self) -> None:
        self._probe.close()
