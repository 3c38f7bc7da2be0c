"""guardian from its Debian package: enabled and running, earlyoom stopped by Conflicts=,
systemd-oomd left running with a warning, the package's files in place, its rules on its own
binding to libre2 with google-re2 gone, and the walker stopped."""

from __future__ import annotations

from typing import Any

from e2e import checks

from guardian import __version__

TIMEOUT_S = 420
DEBS = ("",)  # the checkout's own version, built on the host
ENV = {"E2E_INSTALL": "deb"}
BENCH = False  # about guardian's installation: no peer has a part in it

LIFECYCLE = "8614d6fccaca40658d1eb8dcdae3a3e6"  # started, stopped, and warnings about guardian's own state


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    version = __version__  # the checkout's, which the host built the package of
    if result.text("peers-before.txt").split() != ["active", "active"]:
        failures.append(f"earlyoom and systemd-oomd did not start: {result.text('peers-before.txt')!r}")
    # Conflicts=earlyoom.service: starting guardian stopped it; systemd-oomd may stay
    if result.text("peers-after.txt").split() != ["inactive", "active"]:
        failures.append(
            f"after guardian's start, earlyoom and systemd-oomd: {result.text('peers-after.txt')!r}"
        )
    if result.text("is-enabled.txt").strip() != "enabled":
        failures.append(f"guardian.service is not enabled: {result.text('is-enabled.txt')!r}")
    show = result.text("guardian-show.txt")
    for want in (
        "FragmentPath=/lib/systemd/system/guardian.service",
        "path=/usr/bin/guardian",
        '"man:guardian(8)" "man:guardian.toml(5)" file:/usr/share/doc/guardian-oom/README.md',
        "earlyoom.service",  # Conflicts=
        "nohang-desktop.service",
    ):
        if want not in show:
            failures.append(f"systemctl show guardian.service lacks {want!r}: {show!r}")
    if result.text("version.txt").strip() != f"guardian {version}":
        failures.append(f"guardian --version: {result.text('version.txt')!r}, expected {version}")
    engine = result.text("engine.txt").split()
    if engine != ["libre2", "/usr/lib/python3/dist-packages/guardian/rules.py"]:
        failures.append(f"the rules do not run on the package's libre2 binding: {engine}")
    if "No module named 're2'" not in result.text("google-re2.txt"):
        failures.append(f"google-re2 is still in the guest: {result.text('google-re2.txt')!r}")
    status = result.text("dpkg-status.txt")
    if f"guardian-oom {version} install ok installed" not in status or " /etc/guardian.toml " not in status:
        failures.append(f"dpkg-query: {status!r}")
    files = set(result.text("dpkg-files.txt").split())
    for path in (
        "/usr/share/man/man8/guardian.8.gz",
        "/usr/share/man/man5/guardian.toml.5.gz",
        "/usr/share/bash-completion/completions/guardian",
        "/usr/share/zsh/vendor-completions/_guardian",
        "/usr/lib/systemd/catalog/guardian.catalog",
        "/usr/share/doc/guardian-oom/examples/guardian.toml",
    ):
        if path not in files:
            failures.append(f"the package did not install {path}")
    # systemd's trigger ran journalctl --update-catalog
    if "guardian started or stopped" not in result.text("catalog.txt"):
        failures.append(f"the catalog is not in journald's database: {result.text('catalog.txt')!r}")
    lifecycle = result.entries(MESSAGE_ID=LIFECYCLE)
    started = [e for e in lifecycle if str(e.get("MESSAGE", "")).startswith("started: ")]
    if not started or started[0].get("GUARDIAN_VERSION") != version:
        failures.append(f"no started message with GUARDIAN_VERSION={version}: {started[:1]}")
    warnings = [
        str(e.get("MESSAGE", "")) for e in lifecycle if "systemd-oomd is running" in str(e.get("MESSAGE"))
    ]
    expected = "systemd-oomd is running and kills in / (-.slice: ManagedOOMSwap=kill), where guardian acts too by the machine rule"
    if not any(w.startswith(expected) for w in warnings):
        failures.append(f"no warning about systemd-oomd's -.slice: {warnings}")
    failures += checks.first_victim(result, scope="/system.slice/walker.service")
    return failures + checks.no_kernel_oom(result) + checks.guardian_survived(result)
