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
        self._sock: Optional[_socket.socket] = None  # made at the first send, kept until close()

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
            sock = self._sock
            if sock is None:
                # never block: a unix datagram receiver with a full queue (10 datagrams by
                # default) would stall sendto(), and the OOM guardian with it (found by
                # bench/reaction.py). One socket for every message: an idle loop sends a watchdog
                # ping at each wake-up, and making and closing a socket each time was two more
                # system calls of the few such a wake-up makes. Unconnected, so a receiver made
                # anew under the same name (systemd re-executed) is reached all the same.
                sock = self._sock = _socket.socket(
                    _socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK
                )
            sock.sendto(payload, address)
        except BlockingIOError:  # the receiver's queue is full: the message is dropped
            return False
        except OSError:  # dropped too; a socket in a state of its own is made again next time
            self.close()
            return False
        return True

    def close(self) -> None:
        """Close the socket (a later send makes another)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
