"""A fleet device's connection under gevent, as in a locust process, driven line by line over stdin so a
test can freeze the broker in between: `publish N` publishes N bytes at QoS 1 and answers whether paho
was left with part of it to write; `close` ends. Not a test module (no test_ prefix)."""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.os import make_nonblocking, nb_read  # noqa: E402

from harness.load import client as fleet_client  # noqa: E402
from harness.load.greenio import patch_paho_for_gevent  # noqa: E402
from harness.transports.mqtt import MqttSettings  # noqa: E402


def lines() -> object:
    make_nonblocking(sys.stdin.fileno())
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = nb_read(sys.stdin.fileno(), 4096)  # yields to the connection's greenlet while waiting
            if not chunk:
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        yield line.decode()


def main() -> None:
    patch_paho_for_gevent()
    fleet_client.IDLE_WAKE_S = float(sys.argv[2])
    c = fleet_client.FleetClient(MqttSettings(url=sys.argv[1]), "fleet-device")
    c.connect()
    print(json.dumps({"connected": True}), flush=True)
    for line in lines():
        cmd, _, arg = line.partition(" ")
        if cmd == "publish":
            c.publish_queued("vtlab/partial/event", b"x" * int(arg))
            print(json.dumps({"left_unwritten": bool(c._client.want_write())}), flush=True)
        elif cmd == "close":
            break
        gevent.sleep(0)
    c.close()


if __name__ == "__main__":
    main()
