"""Loads vtlab's pytest plugin for this checkout (an installed vtlab registers it as `pytest11` too)."""

pytest_plugins = ["harness.pytest_plugin"]
