"""`python -m harness.lab --config FILE.json`: run the reference lab until SIGTERM/SIGINT.

Prints one JSON line when ready: {"ready": true, "broker": URL, "broker_kind": ..., "mqtt_version": ...,
"access_control": ..., "pid": N, "broker_pid": M,
"client_ids_bound": true|false (another identity cannot take a session over),
"ingress": {"dc09": "HOST:PORT", "scaip": "HOST:PORT", "scaip_plain": ..., "scaip_tls": ...}}
(ingress: where devices send over DC-09 and SCAIP, TCP and UDP on each port; only those that are on; with the
lab's own FHIR API also "fhir" (its base URL), "fhir_token" (its token endpoint) and "fhir_ca"),
or {"ready": false, "error": "..."} and exits 2. Later
stdout lines are JSON events (e.g. {"event": "faults", "spec": ..., "id": ...}) for the process that
started the lab.

On any exit it survives (return, exception, SIGTERM, SIGINT, SIGHUP, stdin closing) the lab stops its
broker and deletes the throw-away certificates (`pki_dir`): keys never outlive the lab.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from harness.errors import VtlabError
from harness.lab.broker import RunningBroker, TlsFiles, start_broker
from harness.lab.config import LabConfig, load_config
from harness.lab.fhir_api import LabFhirApi
from harness.lab.router import Router

_out_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def _watch_stdin(stop: threading.Event) -> None:
    try:
        while os.read(0, 1024):
            pass
    except OSError:
        pass
    stop.set()


def _remove_pki(pki_dir: Path | None) -> None:
    if pki_dir is not None:
        shutil.rmtree(pki_dir, ignore_errors=True)


def run(config_path: Path, *, exit_on_stdin_eof: bool) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda _s, _f: stop.set())
    return _run(config_path, stop, exit_on_stdin_eof)


def _run(config_path: Path, stop: threading.Event, exit_on_stdin_eof: bool) -> int:
    broker: RunningBroker | None = None
    router: Router | None = None
    fhir_api: LabFhirApi | None = None
    pki_dir: Path | None = None
    try:
        config: LabConfig = load_config(config_path)
        pki_dir = config.pki_dir
        atexit.register(_remove_pki, pki_dir)
        if config.log is not None:
            config.log.parent.mkdir(parents=True, exist_ok=True)
            logging.basicConfig(
                filename=config.log,
                level=logging.INFO,
                format="%(asctime)s %(name)s %(levelname)s %(message)s",
            )
        if config.broker.external_url:
            url, kind = config.broker.external_url, "external"
        else:
            tls = config.broker.tls
            files = None
            if tls is not None:
                if tls.server_cert is None or tls.server_key is None:
                    raise VtlabError(
                        "broker.tls has no server_cert/server_key",
                        place=str(config_path),
                        fix="give server_cert and server_key, or set broker.external_url",
                    )
                files = TlsFiles(tls.ca, tls.server_cert, tls.server_key, tls.require_client_cert)
            if config.broker.kind == "amqtt" and config.broker.mqtt_version == "5":
                raise VtlabError(
                    "the amqtt broker speaks MQTT 3.1.1 only",
                    place=str(config_path),
                    fix='set broker.mqtt_version to "3.1.1", or broker.kind to mosquitto',
                )
            workdir = config_path.resolve().parent / f"broker-{os.getpid()}"
            access = None
            if files is not None and files.require_certificate and config.broker.access_rules:
                access = config.access_rules()
            broker = start_broker(
                workdir,
                tls=files,
                kind=config.broker.kind,
                access=access,
                retain=False,
                max_packet_bytes=config.limits.max_packet_bytes,
                tls_version=None if config.broker.tls_min_version == "1.2" else config.broker.tls_min_version,
                ciphers=config.broker.ciphers,
                bind_client_ids=config.broker.bind_client_ids,
            )
            url, kind = broker.url, broker.kind
            if kind == "amqtt" and config.broker.mqtt_version == "5":
                # "auto" fell back to amqtt, which speaks 3.1.1 only: so does the router, and the
                # ready line tells the harness to do the same
                broker_settings = config.broker.model_copy(update={"mqtt_version": "3.1.1"})
                config = config.model_copy(update={"broker": broker_settings})
        if config.fhir_api is not None:
            fhir_api = LabFhirApi(config.fhir_api)  # binds its port; serves once the router (its ledger) runs
        router = Router(config, url, notify=emit, fhir_api=fhir_api)
        router.start()
        if fhir_api is not None:
            fhir_api.start(router.ledger.write)
        emit(
            {
                "ready": True,
                "broker": url,
                "broker_kind": kind,
                "mqtt_version": config.broker.mqtt_version,
                "access_control": broker.access_control if broker is not None else "external",
                "pid": os.getpid(),
                "broker_pid": broker.process.pid if broker is not None else None,
                "client_ids_bound": broker.client_ids_bound if broker is not None else None,
                "ingress": {**router.ingress, **(fhir_api.addresses if fhir_api is not None else {})},
            }
        )
        if exit_on_stdin_eof:
            threading.Thread(target=_watch_stdin, args=(stop,), daemon=True).start()
        while not stop.wait(timeout=3600):
            pass
        return 0
    except (VtlabError, OSError) as e:
        emit({"ready": False, "error": str(e)})
        return 2
    finally:
        if fhir_api is not None:
            fhir_api.close()
        if router is not None:
            router.stop()
        if broker is not None:
            broker.stop()
        _remove_pki(pki_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.lab", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="lab config JSON file")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (the parent process died)",
    )
    args = parser.parse_args(argv)
    return run(args.config, exit_on_stdin_eof=args.exit_on_stdin_eof)


if __name__ == "__main__":
    sys.exit(main())
