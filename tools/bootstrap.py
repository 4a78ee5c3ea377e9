#!/usr/bin/env python3
"""Set up vtlab on a fresh machine that has only python3: Debian packages (when root), a virtual
environment in .venv, and vtlab installed into it with what the reports need (`--dev`: and what the
project's own tests need). Safe to run again: it installs only what is missing.

    python3 tools/bootstrap.py          # to run acceptance suites
    python3 tools/bootstrap.py --dev    # to work on vtlab itself
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
PACKAGES = ROOT / "tools" / "system-packages.txt"


def say(text: str) -> None:
    print(f"[bootstrap] {text}", flush=True)


def debian_packages() -> list[str]:
    names = []
    for line in PACKAGES.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def missing_packages(names: list[str]) -> list[str]:
    missing = []
    for name in names:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False)
        if "install ok installed" not in out.stdout:
            missing.append(name)
    return missing


def install_system_packages(extra: list[str]) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-query") is None:
        say(f"not a Debian-like system: install these yourself if you need them: {', '.join(debian_packages())}")
        return
    missing = missing_packages(debian_packages() + extra)
    if not missing:
        return
    if os.geteuid() != 0:
        say(f"missing Debian packages (run as root to install them): {' '.join(missing)}")
        say("without mosquitto the reference lab uses an amqtt broker; without the report packages no PDF")
        return
    say(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    # Debian's mosquitto package starts a system broker on :1883; vtlab starts its own brokers and
    # leaves whatever runs there alone.


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if python.exists():
        return python
    say(f"creating {VENV}")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    except subprocess.CalledProcessError:
        # Debian's python3 ships venv without ensurepip until python3-venv is installed
        shutil.rmtree(VENV, ignore_errors=True)
        install_system_packages(["python3-venv"])
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", action="store_true", help="also install the tools for vtlab's own tests")
    args = parser.parse_args()
    if sys.version_info < (3, 11):  # noqa: UP036 - bootstrap runs under whatever python3 the machine has
        say(f"vtlab needs Python 3.11 or newer; this is {sys.version.split()[0]}")
        return 2
    install_system_packages([])
    python = ensure_venv()
    extras = "report,dev" if args.dev else "report"
    say(f"installing vtlab[{extras}] into {VENV}")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e",
                    f"{ROOT}[{extras}]"], check=True)
    if args.dev:  # DC-09 interop peer; it declares the dead pycrypto, so it goes in without deps (pycryptodome in dev)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        "dc09-spt"], check=True)
    say("ready: .venv/bin/vtlab")
    return 0


if __name__ == "__main__":
    sys.exit(main())
