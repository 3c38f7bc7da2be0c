"""The helper of the guardian-notify plugin: one ``org.freedesktop.Notifications.Notify`` call.

Run by guardian_notify.py as the user whose process was killed (a session bus takes only its
owner), as ``python -I guardian_notify_send.py ADDRESS SUMMARY BODY TIMEOUT_S``. It imports
jeepney and nothing of guardian. Prints the notification's id; on failure, one line on stderr
(which the plugin raises as NotifyFailed) and exit status 1.
"""

from __future__ import annotations

import sys


def _send(address: str, summary: str, body: str, timeout_s: float) -> int:
    """One Notify call on the bus at ``address``; the notification's id."""
    from jeepney import DBusAddress, MessageType, new_method_call  # noqa: PLC0415
    from jeepney.io.blocking import open_dbus_connection  # noqa: PLC0415

    target = DBusAddress(
        "/org/freedesktop/Notifications",
        bus_name="org.freedesktop.Notifications",
        interface="org.freedesktop.Notifications",
    )
    # app_name, replaces_id, app_icon, summary, body, actions, hints, expire_timeout (-1: the
    # server's default); urgency 2 is "critical": a process of the user's is gone
    call = new_method_call(
        target,
        "Notify",
        "susssasa{sv}i",
        ("guardian", 0, "dialog-warning", summary, body, [], {"urgency": ("y", 2)}, -1),
    )
    with open_dbus_connection(bus=address, auth_timeout=timeout_s) as connection:
        reply = connection.send_and_get_reply(call, timeout=timeout_s)
    if reply.header.message_type == MessageType.error:
        name = reply.header.fields.get(4, "an error")  # HeaderFields.error_name
        raise RuntimeError(f"the notification server answered {name}: {reply.body[0] if reply.body else ''}")
    return int(reply.body[0])


if __name__ == "__main__":
    try:
        notification = _send(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
    except Exception as exc:  # the one line the hook raises as NotifyFailed
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    print(notification)
