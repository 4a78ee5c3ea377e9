"""`vtlab send`, `receive` and `decode` as a person types them: a DC-09 alarm sent by one vtlab process is
received and acknowledged by another, and captured frames decode to JSON."""

from __future__ import annotations

import json
import os
import socket
import subprocess

from tests.helpers import VTLAB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_vtlab_send_dc09_is_received_and_acknowledged_by_vtlab_receive(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    key = tmp_path / "key"
    key.write_text("0123456789abcdef")
    receiver = subprocess.Popen([str(VTLAB), "receive", "dc09", "--listen", f"127.0.0.1:{port}", "--account", "1234",
                                 "--key-file", str(key), "--count", "1", "--duration", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert receiver.stderr is not None
        receiver.stderr.readline()  # the `listening` line: the port is bound
        sent = subprocess.run([str(VTLAB), "send", "dc09", "--to", f"127.0.0.1:{port}", "--account", "1234",
                               "--cid", "1101", "--zone", "017", "--key-file", str(key)],
                              capture_output=True, text=True, timeout=60, check=False, env={**os.environ})
        assert sent.returncode == 0, sent.stdout + sent.stderr
        reply = json.loads(sent.stdout.splitlines()[-1])
        out, _ = receiver.communicate(timeout=60)
    finally:
        receiver.kill()
    got = json.loads(out.splitlines()[0])
    assert got["account"] == "1234" and "101" in json.dumps(got) and "017" in json.dumps(got)
    assert "ACK" in json.dumps(reply)


def test_vtlab_decode_gives_json_or_names_what_is_wrong() -> None:
    ok = subprocess.run([str(VTLAB), "decode", "ble", "--uuid", "2A19", "64"], capture_output=True, text=True,
                        timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "100" in ok.stdout
    bad = subprocess.run([str(VTLAB), "decode", "cid", "1234 18 1101 00 001 7"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 1 and "checksum" in bad.stdout and "Traceback" not in bad.stderr
