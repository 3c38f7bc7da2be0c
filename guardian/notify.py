"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, and the watchdog interval.

A few lines of socket code, so that readiness and the watchdog never depend on an optional
import; outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
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
            with socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            ) as sock:
                sock.sendto(payload, address)
        except OSError:  # includes BlockingIOError: the message is dropped, guardian goes on
            return False
        return True
