"""Security checks as plain functions: each makes one attempt an intruder (or a broken device) would make
against the platform's interface and says what the platform did, with the evidence a report needs.

The scenario steps in `harness.scenario.security` call these; tests call them directly against correctly
and wrongly configured peers. A result never carries a secret (key, passphrase, password, token): only
names, addresses, certificate details and what the platform answered.
"""

from harness.security.result import CannotCheck, CheckResult

__all__ = ["CannotCheck", "CheckResult"]
