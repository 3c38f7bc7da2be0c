"""A guardian plugin: a desktop notification to the user whose process guardian killed.

Installed as its own package (``pip install ./plugins/guardian-notify`` into guardian's
environment; it brings jeepney, a pure-Python D-Bus library, packaged in Debian as
python3-jeepney), it is found through the ``guardian`` entry-point group as ``notify``. It
implements ``guardian_after_kill``: when a process guardian signalled has died, its owner gets
``org.freedesktop.Notifications.Notify`` on their session bus, with the process's name and pid
and the memory its death freed:

    guardian stopped firefox
    pid 4242 was terminated to keep memory from running out (3.0 GiB freed).
    MemAvailable 180 MiB (1.1%) at or below 2%

Its settings (all optional):

    [plugins.settings.notify]
    min_uid = 1000                     # users below it (system accounts) are not notified
    bus = "/run/user/{uid}/bus"        # where a user's session bus listens
    timeout_s = 2.0                    # how long one notification may take, at most
    python = "/usr/bin/python3"        # the helper's interpreter (default: guardian's own);
                                       # the user must be able to run it, with jeepney

How: a user's session bus accepts connections from that user alone (dbus-daemon lets only the
bus's owner connect, root included: hence ``sudo notify-send`` fails), so the notification is
sent by a helper process (guardian_notify_send.py) run *as the user* (their uid, gid and groups, an empty
environment), never by guardian's own process changing its credentials. The hook waits for the
helper at most ``timeout_s`` and kills it after that. A user without a session bus (not logged
in) is skipped quietly. A bus that does not answer, or refuses the call, is raised as
``NotifyFailed``: guardian reports it as this plugin's failure and goes on.

Keep ``[plugins] budget_ms`` above what one notification takes here (the helper starts a Python
interpreter: ~60 ms on an idle machine), or guardian reports the hook as overrunning its budget
while the notification is still on its way.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from guardian.api import KillDecision, KillOutcome, Policy, Scorer, hookimpl, human_bytes, shown

NAME = "notify"  # the entry point's name: its settings are [plugins.settings.notify]
DEFAULTS: Mapping[str, Any] = {
    "min_uid": 1000,
    "bus": "/run/user/{uid}/bus",
    "timeout_s": 2.0,
    "python": sys.executable,
}
# the helper: a file of its own that imports jeepney and nothing of guardian, so that it runs
# under any Python 3 with jeepney that the user may execute
SENDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guardian_notify_send.py")
TOLD = ("terminated", "killed")  # outcomes worth telling a user: their process is gone
VERB = {"terminated": "terminated", "killed": "killed"}

_settings: dict[str, Any] = dict(DEFAULTS)


class NotifyFailed(Exception):
    """The notification could not be delivered; guardian reports it as this plugin's failure."""


def read_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``[plugins.settings.notify]`` checked: a mistake raises with the key, and guardian
    refuses the policy (``guardian check`` exits 78)."""
    where = f"[plugins.settings.{NAME}]"
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{where} {unknown[0]}: unknown key (known: {', '.join(sorted(DEFAULTS))})")
    merged = {**DEFAULTS, **settings}
    min_uid = merged["min_uid"]
    if isinstance(min_uid, bool) or not isinstance(min_uid, int) or not 0 <= min_uid < 1 << 32:
        raise ValueError(f"{where} min_uid: expected a uid, got {min_uid!r}")
    bus = merged["bus"]
    if not isinstance(bus, str) or not bus.startswith("/") or "{uid}" not in bus:
        raise ValueError(f"{where} bus: expected an absolute path with {{uid}} in it, got {bus!r}")
    timeout = merged["timeout_s"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= 30:
        raise ValueError(f"{where} timeout_s: expected a number from 0.1 to 30, got {timeout!r}")
    python = merged["python"]
    if not isinstance(python, str) or not python.startswith("/"):
        expected = "expected the absolute path of a Python 3 with jeepney"
        raise ValueError(f"{where} python: {expected}, got {python!r}")
    return {"min_uid": min_uid, "bus": bus, "timeout_s": float(timeout), "python": python}


@hookimpl
def guardian_scorers(policy: Policy) -> list[Scorer]:
    """No scorer: called when a policy is loaded, which is when this plugin reads its settings."""
    _settings.clear()
    _settings.update(read_settings(policy.plugins.settings.get(NAME, {})))
    return []


def message(decision: KillDecision, outcome: KillOutcome) -> tuple[str, str]:
    """(summary, body) of the notification: printable text only."""
    comm = shown(decision.comm) or "a process"
    freed = f" ({human_bytes(outcome.freed_bytes)} freed)" if outcome.freed_bytes else ""
    body = (
        f"pid {decision.pid} was {VERB.get(outcome.result, outcome.result)} to keep memory from "
        f"running out{freed}.\n{shown(decision.reason)}"
    )
    return f"guardian stopped {comm}", body


@hookimpl
def guardian_after_kill(decision: KillDecision, outcome: KillOutcome) -> None:
    if outcome.result not in TOLD or decision.pid is None or decision.uid is None:
        return
    if decision.uid < _settings["min_uid"]:
        return
    path = _settings["bus"].format(uid=decision.uid)
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except OSError:
        return  # no session bus: the user is not logged in, nobody to tell
    summary, body = message(decision, outcome)
    notify(decision.uid, f"unix:path={path}", summary, body, _settings["timeout_s"])


def notify(uid: int, address: str, summary: str, body: str, timeout_s: float) -> None:
    """Run this file as a helper, as ``uid``, to send the notification; ``NotifyFailed`` says
    why it did not arrive."""
    switch: dict[str, Any] = {}
    if os.geteuid() == 0 and uid != 0:
        try:
            user = pwd.getpwuid(uid)
        except KeyError:
            raise NotifyFailed(f"uid {uid} has no user: not notified") from None
        switch = {
            "user": uid,
            "group": user.pw_gid,
            "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid),
        }
    elif os.geteuid() != uid:
        raise NotifyFailed(f"cannot reach the session bus of uid {uid} without root")
    args = [_settings["python"], "-I", SENDER, address, summary, body, str(timeout_s)]
    try:
        done = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={},
            cwd="/",
            timeout=timeout_s,
            check=False,
            **switch,
        )
    except subprocess.TimeoutExpired:
        raise NotifyFailed(f"the session bus of uid {uid} did not answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise NotifyFailed(f"could not start the notification helper: {exc}") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise NotifyFailed(f"no notification for uid {uid}: {why[-1] if why else f'exit {done.returncode}'}")
