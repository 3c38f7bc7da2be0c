"""Pressure stall information: /proc/pressure/* and cgroup2 ``*.pressure`` files.

Three things live here:

* ``parse_pressure`` / ``read_pressure`` / ``read_cgroup_pressure``: the file format
  (``kernel/sched/psi.c: psi_show()``).
* ``StallMeter``: the *live* stall rate, from successive ``total=`` readings over a window we
  choose. The kernel's avg10 is recomputed only every ~2 s and decays over 10 s, so it trails a
  fast hog by seconds (earlyoom's contrib/oomstat/overload.txt: the stall computed from
  ``total`` reached 84 % while some avg10 still read 0). avg10/60/300 stay for hysteresis.
* ``PsiTrigger``: the kernel's trigger interface (write ``some|full STALL_US WINDOW_US\\n``,
  poll for POLLPRI); ``TriggerRefused`` says in words why the kernel would not register one
  (EINVAL for windows that are not a multiple of 2 s without CAP_SYS_RESOURCE, EBUSY for a
  second trigger on one fd, EOPNOTSUPP with PSI disabled), and the daemon polls instead
  (guardian/daemon/wakeups.py).
"""

from __future__ import annotations

import errno
import os
import select
from collections import deque
from typing import Optional

from guardian.errors import Malformed, ParseError
from guardian.frozen import frozen
from guardian.host import Host
from guardian.records import Pressure, PsiLine, StallRate
from guardian.sources.vmstat import parse_int
from guardian.text import shown

RESOURCES = ("memory", "cpu", "io")


def _pct(text: str) -> float:
    # psi_show() prints "%lu.%02lu": digits, a point, digits. float() would also take "nan",
    # "inf" and "1e999", which no kernel prints and which are not valid JSON numbers.
    whole, point, frac = text.partition(".")
    if not (whole.isascii() and whole.isdigit()) or (point and not (frac.isascii() and frac.isdigit())):
        raise ValueError(text)
    return float(text)


def _parse_line(line: str, what: str) -> tuple[str, PsiLine]:
    kind, _, rest = line.partition(" ")
    values = {}
    for item in rest.split():
        key, sep, value = item.partition("=")
        if not sep:
            raise ParseError(what, f"expected key=value, got {item[:40]!r}")
        values[key] = value
    try:
        total = parse_int(values["total"])
        if total < 0:
            raise ValueError(values["total"])
        return kind, PsiLine(
            avg10_pct=_pct(values["avg10"]),
            avg60_pct=_pct(values["avg60"]),
            avg300_pct=_pct(values["avg300"]),
            total_us=total,
        )
    except KeyError as exc:
        raise ParseError(what, f"missing {exc.args[0]}= in {line[:80]!r}") from None
    except ValueError:
        raise ParseError(what, f"non-numeric value in {line[:80]!r}") from None


def parse_pressure(text: str, what: str = "pressure file") -> Pressure:
    """Parse a pressure file. ``full`` may be missing (cpu before 5.13)."""
    lines: dict[str, PsiLine] = {}
    for raw in text.split("\n"):
        if raw.strip():
            kind, line = _parse_line(raw.strip(), what)
            lines[kind] = line
    if "some" not in lines:
        raise ParseError(what, "no 'some' line")
    return Pressure(some=lines["some"], full=lines.get("full"))


def read_pressure(host: Host, resource: str = "memory") -> Pressure:
    """System-wide pressure for ``memory``, ``cpu`` or ``io``. Unavailable without CONFIG_PSI
    or with ``psi=0`` (the files are missing, or reading them fails with EOPNOTSUPP)."""
    path = host.pressure_path(resource)
    return _parsed(host.read_hot(path, "PSI"), path, "PSI")


def read_cgroup_pressure(host: Host, cgroup: str, resource: str = "memory") -> Pressure:
    """Pressure of one cgroup2 group. PSI files are cgroup core files: they exist even where
    the memory controller lives on v1 (hybrid hosts). A file that does not parse: Malformed."""
    path = f"{host.cgroup_v2_dir(cgroup)}/{resource}.pressure"
    return _parsed(host.read_feature(path, "cgroup PSI"), path, "cgroup PSI")


def _parsed(text: str, path: str, feature: str) -> Pressure:
    try:
        return parse_pressure(text, shown(path))
    except ParseError as exc:
        raise Malformed.of(feature, exc) from None


# --- live stall rate ---------------------------------------------------------------------------


def stall_rate(before: Pressure, after: Pressure, elapsed_us: int) -> StallRate:
    """Percent of wall time stalled between two readings of one pressure file.

    A ``total`` that went backwards (a cgroup removed and recreated under the same path) counts
    as no stall rather than a negative one.
    """
    if elapsed_us <= 0:
        raise ValueError("readings must be apart in time")

    def pct(a: PsiLine, b: PsiLine) -> float:
        delta = b.total_us - a.total_us
        return min(100.0, 100.0 * delta / elapsed_us) if delta > 0 else 0.0

    full = None
    if before.full is not None and after.full is not None:
        full = pct(before.full, after.full)
    return StallRate(window_us=elapsed_us, some_pct=pct(before.some, after.some), full_pct=full)


class StallMeter:
    """Live stall rate over a sliding window of readings.

    Feed it ``(monotonic_us, Pressure)`` every tick; ``rate()`` compares the newest reading
    with the oldest one that is at least ``window_us`` old (or the oldest kept, early on).
    Pure: the caller owns the clock and the reads.
    """

    def __init__(self, window_us: int) -> None:
        if window_us <= 0:
            raise ValueError("window_us must be positive")
        self.window_us = window_us
        self._readings: deque[tuple[int, Pressure]] = deque()

    def add(self, now_us: int, pressure: Pressure) -> None:
        if self._readings and now_us <= self._readings[-1][0]:
            return  # same instant (or a clock that went backwards): nothing new to learn
        if self._readings and now_us - self._readings[-1][0] > 3 * self.window_us:
            self._readings.clear()  # resumed after a quiet spell: old readings would dilute the rate
        self._readings.append((now_us, pressure))
        # keep exactly one reading at or beyond the window edge
        while len(self._readings) > 2 and now_us - self._readings[1][0] >= self.window_us:
            self._readings.popleft()

    def rate(self) -> Optional[StallRate]:
        """None until two readings exist."""
        if len(self._readings) < 2:
            return None
        (t0, p0), (t1, p1) = self._readings[0], self._readings[-1]
        return stall_rate(p0, p1, t1 - t0)


# --- kernel triggers ---------------------------------------------------------------------------

PSI_WINDOW_MAX_US = 10_000_000  # kernel/sched/psi.c WINDOW_MAX_US
UNPRIVILEGED_WINDOW_STEP_US = 2_000_000  # 6.4+: unprivileged windows must be N * 2 s


@frozen
class TriggerSpec:
    """``some|full STALL_US WINDOW_US``: fire when stall time grows by STALL_US within WINDOW_US."""

    kind: str
    stall_us: int
    window_us: int

    def __post_init__(self) -> None:
        if self.kind not in ("some", "full"):
            raise ValueError(f"trigger kind must be 'some' or 'full', got {self.kind!r}")
        if not 0 < self.window_us <= PSI_WINDOW_MAX_US:
            raise ValueError(f"window must be 1..{PSI_WINDOW_MAX_US} us, got {self.window_us}")
        if not 0 < self.stall_us <= self.window_us:
            raise ValueError("stall must be positive and no longer than the window")

    def encode(self) -> bytes:
        # psi_write() on /proc/pressure/* replaces the LAST byte written with NUL: without a
        # terminator "some 150000 2000000" is read as a 200 ms window (verified, kernel.md 3.2).
        return f"{self.kind} {self.stall_us} {self.window_us}\n".encode()


class TriggerRefused(Exception):
    """The kernel would not register a trigger; ``reason`` says why in words."""

    def __init__(self, path: str, spec: TriggerSpec, err: int) -> None:
        self.path = path
        self.spec = spec
        self.errno = err
        self.reason = _refusal_reason(spec, err)
        super().__init__(f"{path}: trigger '{spec.encode().decode().strip()}' refused: {self.reason}")


def _refusal_reason(spec: TriggerSpec, err: int) -> str:
    if err == errno.EINVAL and spec.window_us % UNPRIVILEGED_WINDOW_STEP_US:
        return (
            "EINVAL: without CAP_SYS_RESOURCE the window must be a multiple of 2 s "
            f"(asked {spec.window_us} us)"
        )
    if err == errno.EINVAL:
        return "EINVAL: the kernel rejected the trigger parameters"
    if err == errno.EBUSY:
        return "EBUSY: this file descriptor already has a trigger"
    if err in (errno.EOPNOTSUPP, errno.ENOTSUP):
        return "EOPNOTSUPP: PSI is disabled on this kernel"
    if err in (errno.EPERM, errno.EACCES):
        return f"{errno.errorcode[err]}: not permitted (CAP_SYS_RESOURCE needed before 6.4)"
    if err == errno.ENOENT:
        return "ENOENT: no such pressure file"
    return f"{errno.errorcode.get(err, err)}: {os.strerror(err)}"


class PsiTrigger:
    """A registered kernel PSI trigger. ``fd`` polls POLLPRI when the stall threshold is met.

    One trigger per file descriptor (a second write gives EBUSY); closing the fd removes it.
    """

    def __init__(self, path: str, spec: TriggerSpec) -> None:
        self.path = path
        self.spec = spec
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TriggerRefused(path, spec, exc.errno or errno.EIO) from None
        try:
            os.write(self.fd, spec.encode())
        except OSError as exc:
            os.close(self.fd)
            raise TriggerRefused(path, spec, exc.errno or errno.EIO) from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> PsiTrigger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fired(self, revents: int) -> str:
        """Interpret poll() events: ``gone`` (POLLERR: cgroup removed or PSI off; test it first,
        POLLPRI is set too), ``fired`` (POLLPRI) or ``idle``."""
        if revents & (select.POLLERR | select.POLLNVAL):
            return "gone"
        if revents & select.POLLPRI:
            return "fired"
        return "idle"
