"""amqtt plugins for the reference lab's fallback broker: the client certificate's CN is the identity,
and each identity may publish and subscribe only to its own topics (the same rules as mosquitto's).

amqtt speaks MQTT 3.1.1: a forbidden subscription gets SUBACK 0x80 and a forbidden publish is dropped
silently (3.1.1 has no PUBACK reason codes). Loaded by dotted path from harness.lab._amqtt_runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from harness.transports.base import topic_matches


def _cn(session: Session) -> str | None:
    ssl_object = getattr(session, "ssl_object", None)
    if ssl_object is None:
        return None
    cert: Any = ssl_object.getpeercert()
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class CertIdentity(BaseAuthPlugin):
    """Accept a client only with a verified certificate, and make its CN the session's username (any
    username the client sent is replaced, so it cannot claim another identity)."""

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Session) -> bool | None:
        cn = _cn(session)
        if cn is None:
            return False
        session.username = cn
        return True


def _subscription_allowed(requested: str, allowed: str) -> bool:
    """A subscription filter is allowed when it is no wider than an allowed filter: each level equal, or
    a concrete level under an allowed `+`/`#`."""
    r, a = requested.split("/"), allowed.split("/")
    for i, part in enumerate(a):
        if part == "#":
            return True
        if i >= len(r):
            return False
        if part == "+":
            if r[i] == "#":
                return False
            continue
        if r[i] != part:
            return False
    return len(r) == len(a)


class IdentityAcl(BaseTopicPlugin):
    """publish: {identity: [filters]}, subscribe: {identity: [filters]} (also what it may receive)."""

    @dataclass
    class Config:
        publish: dict[str, list[str]] = field(default_factory=dict)
        subscribe: dict[str, list[str]] = field(default_factory=dict)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        username = session.username if session else None
        if not topic or not username:
            return False
        cfg: Any = self.context.config
        if action == Action.PUBLISH:
            return any(topic_matches(f, topic) for f in cfg.publish.get(username, []))
        if action == Action.SUBSCRIBE:
            return any(_subscription_allowed(topic, f) for f in cfg.subscribe.get(username, []))
        if action == Action.RECEIVE:
            return any(topic_matches(f, topic) for f in cfg.subscribe.get(username, []))
        return False
