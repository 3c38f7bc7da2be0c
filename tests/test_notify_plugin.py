"""The notification plugin (plugins/guardian-notify) against a private session bus.

The test starts its own ``dbus-daemon --session`` on a socket in a fresh directory and a small
notification server on it (it owns ``org.freedesktop.Notifications`` and writes down every
``Notify`` call it gets). Run as root, both run as ``nobody``, as a user's session does: the
plugin must reach the bus as that user. Then the plugin is told of a kill of a process of that
user and the call must arrive with the process's name, pid and the memory freed; a bus that
does not answer must only be reported.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.modules import load_module
from support.sinks import MemorySink
from test_kill_hooks import OUTCOME, decision, tell

from guardian.hooks import AfterKill
from guardian.plugins import make_plugin_manager
from guardian.report import MSG_LIFECYCLE, Reporter

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "guardian-notify" / "guardian_notify.py"

# The fake notification server: owns the name, answers Notify with id 7, logs each call.
SERVER = r"""
import json, sys
from jeepney import DBusAddress, MessageType, new_method_call, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection
address, log = sys.argv[1], sys.argv[2]
with open_dbus_connection(bus=address) as conn:
    reply = conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.Notifications"), timeout=5)
    assert reply.body[0] == 1, reply.body  # primary owner
    print("ready", flush=True)
    while True:
        msg = conn.receive()
        h = msg.header
        if h.message_type != MessageType.method_call:
            continue
        if h.fields.get(2) == "org.freedesktop.Notifications" and h.fields.get(3) == "Notify":
            app, replaces, icon, summary, body, actions, hints, expire = msg.body
            with open(log, "a") as f:
                f.write(json.dumps({"app": app, "summary": summary, "body": body,
                                    "urgency": hints["urgency"][1]}) + "\n")
            conn.send(new_method_return(msg, "u", (7,)))
"""


@dataclass
class Bus:
    directory: Path
    uid: int
    calls: Path
    python: str  # a Python with jeepney that the bus's user can run

    def received(self, count: int, timeout_s: float = 10) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self.calls.read_text().splitlines() if self.calls.exists() else []
            if len(lines) >= count or time.monotonic() > deadline:
                return [json.loads(line) for line in lines]
            time.sleep(0.05)


def python_for(uid: int) -> str:
    """A Python with jeepney that ``uid`` may execute: this one when it is the test's own uid,
    else the system's (python3-jeepney; this venv's interpreter may sit in a directory only
    root can enter)."""
    if uid == os.geteuid():
        return sys.executable
    for candidate in ("/usr/bin/python3",):
        probe = subprocess.run(
            [candidate, "-I", "-c", "import jeepney"], capture_output=True, check=False, **_as(uid)
        )
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no Python with jeepney that uid {uid} can run (apt-get install python3-jeepney)")


def _as(uid: int) -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwuid(uid)
    return {"user": uid, "group": user.pw_gid, "extra_groups": []}


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()  # a process this test started, by its Popen
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def bus() -> Iterator[Bus]:
    daemon_path = shutil.which("dbus-daemon")
    if daemon_path is None:
        pytest.skip("no dbus-daemon (scripts/setup.sh installs it)")
    pytest.importorskip("jeepney")
    uid = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
    python = python_for(uid)
    directory = Path(tempfile.mkdtemp(prefix="guardian-bus-"))
    own = directory / str(uid)  # the plugin's bus setting is a template on the uid
    own.mkdir()
    for path in (directory, own):
        path.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(path, uid, -1)
    address = f"unix:path={own}/bus"
    daemon = subprocess.Popen(
        [daemon_path, "--session", "--nofork", "--print-address", f"--address={address}"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        **_as(uid),  # type: ignore[arg-type]
    )
    server = None
    try:
        assert daemon.stdout is not None and daemon.stdout.readline().startswith(b"unix:path=")
        calls = own / "calls.jsonl"
        server = subprocess.Popen(
            [python, "-I", "-c", SERVER, address, str(calls)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            **_as(uid),  # type: ignore[arg-type]
        )
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        yield Bus(directory, uid, calls, python)
    finally:
        if server is not None:
            _end(server)
        _end(daemon)
        shutil.rmtree(directory, ignore_errors=True)


def load_plugin() -> types.ModuleType:
    return load_module("guardian_notify_under_test", PLUGIN)


def configured(bus_dir: Path, **settings: object) -> types.ModuleType:
    plugin = load_plugin()
    plugin._settings.update(plugin.read_settings({"bus": f"{bus_dir}/{{uid}}/bus", "min_uid": 0, **settings}))
    return plugin


def test_the_notification_reaches_the_users_session_bus(bus: Bus) -> None:
    plugin = configured(bus.directory, timeout_s=10, python=bus.python)
    killed = decision(uid=bus.uid, comm="hog", pid=4242, reason="headroom 51 MiB at or below 64 MiB")
    plugin.guardian_after_kill(killed, OUTCOME)
    (call,) = bus.received(1)
    assert call["app"] == "guardian"
    assert call["summary"] == "guardian stopped hog"
    assert call["body"] == (
        "pid 4242 was killed to keep memory from running out (3.0 GiB freed).\nheadroom 51 MiB at or below 64 MiB"
    )
    assert call["urgency"] == 2


def test_through_guardian_the_name_arrives_escaped_and_nothing_is_reported(bus: Bus) -> None:
    plugin = configured(bus.directory, timeout_s=10, python=bus.python)
    sink = MemorySink()
    manager = make_plugin_manager(None, entry_points=False, extra=[plugin])
    assert manager.errors == []
    after = AfterKill(manager, (), 15_000, Reporter(sink))
    tell(after, decision(uid=bus.uid, comm="we\udcffird"))
    assert after.flush(30)
    (call,) = bus.received(1)
    assert call["summary"] == "guardian stopped we\\xffird"  # escaped, not raw bytes
    assert [e for e in sink.events if e["MESSAGE_ID"] == MSG_LIFECYCLE] == []


def test_an_unreachable_bus_is_reported_and_guardian_goes_on(tmp_path: Path) -> None:
    pytest.importorskip("jeepney")
    uid = os.geteuid()
    (tmp_path / str(uid)).mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # bound, never listening
    dead.bind(str(tmp_path / str(uid) / "bus"))
    try:
        plugin = configured(tmp_path)
        with pytest.raises(
            plugin.NotifyFailed, match=f"no notification for uid {uid}: ConnectionRefusedError"
        ):
            plugin.guardian_after_kill(decision(uid=uid), OUTCOME)
        sink = MemorySink()
        manager = make_plugin_manager(None, entry_points=False, extra=[plugin])
        after = AfterKill(manager, (), 15_000, Reporter(sink))
        tell(after, decision(uid=uid))
        assert after.flush(30)
        (warning,) = [e["MESSAGE"] for e in sink.events if e["MESSAGE_ID"] == MSG_LIFECYCLE]
        assert "guardian_after_kill: raised NotifyFailed: no notification for uid" in warning
        assert warning.endswith("not told of this kill")
    finally:
        dead.close()


def test_no_session_bus_and_outcomes_without_a_death_are_quiet(tmp_path: Path) -> None:
    plugin = configured(tmp_path)
    plugin.guardian_after_kill(decision(uid=1000), OUTCOME)  # no bus: not logged in
    alive = OUTCOME.__class__("alive", ("SIGTERM", "SIGKILL"), (4242,), 0, 10.0, "")
    plugin.guardian_after_kill(decision(uid=1000), alive)
    system = configured(tmp_path, min_uid=1000)
    system.guardian_after_kill(decision(uid=999), OUTCOME)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_uids": 1}, r"\[plugins.settings.notify\] min_uids: unknown key"),
        (
            {"bus": "/run/user/bus"},
            r"\[plugins.settings.notify\] bus: expected an absolute path with \{uid\}",
        ),
        ({"timeout_s": 0}, r"\[plugins.settings.notify\] timeout_s: expected a number from 0.1 to 30"),
        ({"min_uid": True}, r"\[plugins.settings.notify\] min_uid: expected a uid"),
        ({"python": "python3"}, r"\[plugins.settings.notify\] python: expected the absolute path"),
    ],
)
def test_bad_settings_are_refused_with_the_key(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_plugin().read_settings(settings)
