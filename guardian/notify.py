"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, and the watchdog interval.

A few lines of socket code, so that readiness and the watchdog never depend on an optional
import; outside systemd (no NOTIFY_SOCKET) every call is a no-op.

The socket comes from ``_socket``, the C module under ``socket``: importing ``socket`` itself builds
four enums from the C module's constants and loads ``selectors``, about 2.5 ms of a start, for
a datagram that needs none of it (a ``run`` without [metrics] or [[hook]] commands imports
nothing else that needs ``socket``: tests/test_startup.py).
"""

from __future__ import annotations

import _socket
import os
from collections.abc import Mapping
from typing import Optional


class Notifier:
    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        mine = pid is None or pid == str(os.getpid())
        self.watchdog_s: Optional[float] = int(usec) / 1e6 if usec and usec.isdigit() and mine else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **state: str) -> bool:
        """``send(READY="1", STATUS="watching")`` -> ``READY=1\\nSTATUS=watching``."""
        if self.address is None:
            return False
        address = self.address
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        payload = "\n".join(f"{k}={v}" for k, v in state.items()).encode()
        try:
            # never block: a unix datagram receiver with a full queue (10 datagrams by default)
            # would stall sendto(), and the OOM guardian with it (found by bench/reaction.py)
            sock = _socket.socket(
                _socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK
            )
            try:
                sock.sendto(payload, address)
            finally:
                sock.close()
        except OSError:  # includes BlockingIOError: the message is dropped, guardian goes on
            return False
        return True
