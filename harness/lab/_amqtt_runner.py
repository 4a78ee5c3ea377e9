"""Run an amqtt broker in this process: `python -m harness.lab._amqtt_runner '{"port": N, ...}'`.

Exits on SIGTERM/SIGINT or when stdin closes (the parent died).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from typing import Any


def _broker_class(require_certificate: bool, retain: bool) -> Any:
    """amqtt asks for client certificates but lets clients without one in (CERT_OPTIONAL); a platform
    that must refuse them needs CERT_REQUIRED. retain=False: retained publishes are delivered once and
    never stored (amqtt cannot refuse them as mosquitto's `retain_available false` does)."""
    import ssl

    from amqtt.broker import Broker

    class LabBroker(Broker):
        @staticmethod
        def _create_ssl_context(listener: Any) -> ssl.SSLContext:
            context: ssl.SSLContext = Broker._create_ssl_context(listener)
            if require_certificate:
                context.verify_mode = ssl.CERT_REQUIRED
            return context

        async def retain_message(self, source_session: Any, *args: Any, **kwargs: Any) -> None:
            if retain or source_session is None:
                await super().retain_message(source_session, *args, **kwargs)

    return LabBroker


async def _main(spec: dict[str, Any]) -> None:
    Broker = _broker_class(bool(spec.get("require_certificate")), bool(spec.get("retain", True)))

    listener: dict[str, Any] = {
        "type": "tcp",
        "bind": f"127.0.0.1:{spec['port']}",
        "max_connections": 0,
    }
    if spec.get("certfile"):
        listener.update(
            {
                "ssl": True,
                "cafile": spec.get("cafile"),
                "certfile": spec["certfile"],
                "keyfile": spec["keyfile"],
            }
        )
    config: dict[str, Any] = {
        "listeners": {"default": listener},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    if spec.get("acl") is not None:  # identities from client certificates, each with its own topics
        config["plugins"] = {
            "harness.lab._amqtt_acl.CertIdentity": {},
            "harness.lab._amqtt_acl.IdentityAcl": spec["acl"],
        }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_stdin() -> None:
        try:
            data = os.read(0, 1024)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            stop.set()

    # stdin that is not a pipe (a terminal or /dev/null) cannot be watched: rely on signals
    with contextlib.suppress(OSError, ValueError, NotImplementedError):
        loop.add_reader(0, on_stdin)
    broker = Broker(config, loop=loop)
    await broker.start()
    print(f"amqtt broker listening on 127.0.0.1:{spec['port']}", flush=True)
    await stop.wait()
    try:
        await asyncio.wait_for(broker.shutdown(), timeout=3)
    except Exception as e:
        print(f"amqtt shutdown: {e!r}", flush=True)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    spec = json.loads(sys.argv[1])
    asyncio.run(_main(spec))


if __name__ == "__main__":
    main()
