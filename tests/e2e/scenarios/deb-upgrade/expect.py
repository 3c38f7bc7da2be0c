"""An upgrade of the Debian package under pressure restarts guardian on the new code, keeps the
local policy edit, and the new guardian stops the walker at the edited line."""

from __future__ import annotations

from typing import Any

from e2e import checks

from guardian import __version__

OLD_VERSION = "0.0.1"
TIMEOUT_S = 480
DEBS = (OLD_VERSION, "")  # the older build, then the checkout's own version
ENV = {"E2E_INSTALL": "deb", "OLD_VERSION": OLD_VERSION}
BENCH = False  # about guardian's installation: no peer has a part in it

LIFECYCLE = "8614d6fccaca40658d1eb8dcdae3a3e6"
WALKER = "/system.slice/walker.service"


def show(result: Any, name: str) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in result.text(name).splitlines() if "=" in line)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    if result.text("version-old.txt").strip() != f"guardian {OLD_VERSION}":
        failures.append(f"the old build runs {result.text('version-old.txt')!r}")
    if result.text("version-new.txt").strip() != f"guardian {__version__}":
        failures.append(f"after the upgrade, guardian --version: {result.text('version-new.txt')!r}")
    if f"guardian-oom {__version__} install ok installed" not in result.text("dpkg-status.txt"):
        failures.append(f"dpkg-query after the upgrade: {result.text('dpkg-status.txt')!r}")
    old, new = show(result, "show-old.txt"), show(result, "show-new.txt")
    if (
        not old.get("MainPID")
        or old.get("MainPID") == new.get("MainPID")
        or new.get("ActiveState") != "active"
    ):
        failures.append(f"guardian was not restarted by the upgrade: {old} -> {new}")
    if old.get("ExecMainStartTimestampMonotonic") == new.get("ExecMainStartTimestampMonotonic"):
        failures.append(f"the main process did not start again: {old} -> {new}")
    # the running process is the new code: its own start message says so
    started = [
        e for e in result.entries(MESSAGE_ID=LIFECYCLE) if str(e.get("MESSAGE", "")).startswith("started: ")
    ]
    versions = [(str(e.get("_PID")), e.get("GUARDIAN_VERSION")) for e in started]
    if versions != [(old.get("MainPID"), OLD_VERSION), (new.get("MainPID"), __version__)]:
        failures.append(f"started messages (pid, version): {versions}")
    # the local edit survived: same file, no .dpkg-* copy beside it
    edited = result.text("policy-edited.sha256").split()[:1]
    if not edited or edited != result.text("policy-after.sha256").split()[:1]:
        failures.append("the locally edited /etc/guardian.toml changed in the upgrade")
    if result.text("policy-files.txt").split() != ["/etc/guardian.toml"]:
        failures.append(f"beside the policy: {result.text('policy-files.txt').split()}")
    at_upgrade = int(result.text("walker-at-upgrade.txt").strip() or 0)
    after = int(result.text("walker-after-upgrade.txt").strip() or 0)
    if not 0 < at_upgrade < after:
        failures.append(f"the walker was not growing through the upgrade: {at_upgrade} -> {after} bytes")
    failures += checks.first_victim(result, scope=WALKER)
    kills = checks.kills(result, WALKER)
    if kills:
        first = kills[0]
        if str(first.get("_PID")) != new.get("MainPID"):
            failures.append(
                f"the kill came from pid {first.get('_PID')}, not the upgraded guardian {new.get('MainPID')}"
            )
        if "at or below 15%" not in str(first.get("GUARDIAN_REASON", "")):
            failures.append(f"the kill did not follow the edited policy: {first.get('GUARDIAN_REASON')!r}")
    return failures + checks.no_kernel_oom(result) + checks.guardian_survived(result)
