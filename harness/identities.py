"""The MQTT identities (certificate CNs, broker users) of a run: shared by the test bed, the security
checks and the reference lab, so none of them reaches into another's internals for a name."""

from __future__ import annotations

ROUTER_IDENTITY = "lab"
"""Certificate CN (and broker user) of the reference lab's router."""
CONTROL_IDENTITY = "harness"
"""Certificate CN of the harness's control client: the only one that may change the lab's faults."""

TWIN_SUFFIX = ".twin"
"""A second identity with the same rights as a device's or a centre's: security checks connect as the twin,
so that, with client ids bound to identities, they never knock the test bed's own connection off."""


def twin_identity(identity: str) -> str:
    return identity + TWIN_SUFFIX


def device_identity(device_id: str) -> str:
    """The certificate CN of a simulated device."""
    return f"device-{device_id}"


def centre_identity(centre_id: str) -> str:
    """The certificate CN of a response-centre probe."""
    return f"centre-{centre_id}"
