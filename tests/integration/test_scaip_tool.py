"""`vtlab send|receive|decode scaip` as the CLI will run them: `python -m harness.protocols.scaip_tool`
processes talking over loopback, and `add_arguments`/`run` wired into a parser as the lead's CLI does."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import InputError
from harness.protocols import scaip_tool
from harness.protocols.scaip import Mrq
from harness.protocols.sip import make_request, parse_name_addr, parse_via, serialize

TOOL = [sys.executable, "-m", "harness.protocols.scaip_tool"]
ROOT = Path(__file__).resolve().parents[2]


def _start_receiver(*args: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [*TOOL, "receive", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # blocks until the receiver is bound (or has died)
    if not first:
        proc.kill()
        pytest.fail(f"receiver did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, json.loads(first)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_send_and_receive_processes(transport: str) -> None:
    receiver, hello = _start_receiver(
        "--listen", "127.0.0.1:0", "--transport", transport, "--count", "2", "--snu", "4", "--hbi", "3"
    )
    try:
        address = str(hello["listening"])
        assert address.startswith("127.0.0.1:") and hello["transport"] == transport
        sent = subprocess.run(
            [*TOOL, "send", "--to", address, "--transport", transport, "--cid", "4711", "--stc", "0016",
             "--did", "btn1", "--count", "2", "--interval", "10ms"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        out, err = receiver.communicate(timeout=20)
    finally:
        if receiver.poll() is None:
            receiver.kill()
    assert receiver.returncode == 0, err
    # snu 4 (hold) is not OK: send says so with exit status 1, and prints each exchange
    assert sent.returncode == 1, sent.stderr
    lines = [json.loads(x) for x in sent.stdout.splitlines()]
    assert [x["status"] for x in lines] == [200, 200]
    assert all(x["mrs"]["snu"] == 4 and x["mrs"]["hbi"] == 3 and x["mrs"]["ref"] == x["ref"] for x in lines)
    assert all(x["mrs_round_trip_ms"] >= x["sip_round_trip_ms"] > 0 for x in lines)
    got = [json.loads(x) for x in out.splitlines()]
    assert [g["ref"] for g in got] == [x["ref"] for x in lines]
    for g in got:
        assert (g["cid"], g["dty"], g["dty_name"], g["stc"], g["stc_name"], g["did"]) == (
            "4711", "0003", "personal trigger", "0016", "battery low", "btn1",
        )  # fmt: skip
        assert g["reply"]["snu"] == 4 and g["arrived_ns"] <= g["replied_ns"]


def test_receiver_reports_refusals_as_json_lines() -> None:
    receiver, hello = _start_receiver("--listen", "127.0.0.1:0", "--duration", "20s")
    try:
        host, port = str(hello["listening"]).rsplit(":", 1)
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"definitely not SIP\r\n\r\n", (host, int(port)))
        assert receiver.stdout is not None
        line = json.loads(receiver.stdout.readline())
    finally:
        receiver.terminate()
        receiver.wait(10)
    assert "refused" in line and bytes.fromhex(line["raw_hex"]).startswith(b"definitely")
    assert receiver.returncode == 0  # SIGTERM ends a receive cleanly


def test_send_to_nobody_over_tcp_fails_with_status_1() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [*TOOL, "send", "--to", f"127.0.0.1:{port}", "--transport", "tcp"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"] == "transport error"


def _parser() -> argparse.ArgumentParser:
    """The shape the lead's CLI takes: `vtlab VERB scaip ...`."""
    parser = argparse.ArgumentParser(prog="vtlab")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb in scaip_tool.VERBS:
        protocols = verbs.add_parser(verb).add_subparsers(dest="protocol", required=True)
        scaip_tool.add_arguments(protocols.add_parser("scaip"), verb)
    return parser


def test_decode_a_document_and_a_whole_sip_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    mrq = Mrq(ref="abc", cid="4711", dty="0005", stc="0009")
    assert scaip_tool.run(_parser().parse_args(["decode", "scaip", mrq.encode().hex()])) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scaip"]["dty_name"] == "fall detector" and doc["scaip"]["stc_name"] == "automatic alarm"
    message = make_request(
        "MESSAGE", "sip:scaip@rc.example", via=parse_via("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1")[0],
        from_addr=parse_name_addr("<sip:4711@10.0.0.1>;tag=1"), to_addr=parse_name_addr("<sip:scaip@rc.example>"),
        call_id_="c@10.0.0.1", cseq_=1, body=mrq.encode(), content_type_="application/scaip+xml",
    )  # fmt: skip
    capture = tmp_path / "capture.bin"
    capture.write_bytes(serialize(message))
    assert scaip_tool.run(_parser().parse_args(["decode", "scaip", str(capture)])) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sip"]["method"] == "MESSAGE" and doc["scaip"]["ref"] == "abc"


def test_decode_refusal_names_the_element(capsys: pytest.CaptureFixture[str]) -> None:
    bad = b"<mrq><ref>abc</ref><cid>47x</cid><dty>3</dty></mrq>".hex()
    assert scaip_tool.run(_parser().parse_args(["decode", "scaip", bad])) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["element"], out["snu"]) == ("cid", 2)


def test_bad_command_lines_say_what_to_write() -> None:
    with pytest.raises(InputError, match="neither a file nor hex"):
        scaip_tool.run(_parser().parse_args(["decode", "scaip", "not-hex-not-a-file"]))
    with pytest.raises(InputError, match="1 to 16 digits") as info:
        scaip_tool.run(_parser().parse_args(["send", "scaip", "--to", "127.0.0.1:9", "--cid", "12ab"]))
    assert "--cid" in str(info.value)
    env = {k: v for k, v in os.environ.items() if k != scaip_tool.PASSWORD_ENV}
    done = subprocess.run(
        [*TOOL, "send", "--to", "127.0.0.1:9", "--user", "4711"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode == 2 and scaip_tool.PASSWORD_ENV in done.stderr
    # no secret options exist: a password can only come from a file or the environment
    assert (
        "--password " not in subprocess.run([*TOOL, "send", "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    )
