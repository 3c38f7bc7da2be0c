"""PSI: live stall rate from totals, trigger specs, and the kernel trigger interface."""

from __future__ import annotations

import errno
import os
import select
from pathlib import Path

import pytest
from support.arena import Arena

from guardian.daemon.wakeups import PsiSource, Waiter, WakePlan
from guardian.host import Host
from guardian.records import Pressure, PsiLine
from guardian.sources.psi import (
    PsiTrigger,
    StallMeter,
    TriggerRefused,
    TriggerSpec,
    read_cgroup_pressure,
    read_pressure,
    stall_rate,
)


def pressure(some_total: int, full_total: int = 0, avg10: float = 0.0) -> Pressure:
    return Pressure(PsiLine(avg10, 0.0, 0.0, some_total), PsiLine(0.0, 0.0, 0.0, full_total))


class TestStallRate:
    def test_rate_from_totals(self) -> None:
        rate = stall_rate(pressure(1_000, 0), pressure(251_000, 100_000), 500_000)
        assert rate.some_pct == pytest.approx(50.0)
        assert rate.full_pct == pytest.approx(20.0)
        assert rate.window_us == 500_000

    def test_total_going_backwards_is_no_stall(self) -> None:
        # a cgroup removed and recreated under the same path restarts its counters
        assert stall_rate(pressure(5_000_000), pressure(10), 1_000_000).some_pct == 0.0

    def test_rate_capped_at_100(self) -> None:
        # two CPUs both stalled can accrue more than wall time between two racy reads
        assert stall_rate(pressure(0), pressure(3_000_000), 1_000_000).some_pct == 100.0

    def test_no_elapsed_time(self) -> None:
        with pytest.raises(ValueError, match="apart in time"):
            stall_rate(pressure(0), pressure(1), 0)

    def test_live_rate_leads_avg10(self) -> None:
        """The situation of earlyoom's overload.txt trace: avg10 still 0 while the box stalls."""
        meter = StallMeter(window_us=1_000_000)
        t, total = 0, 0
        for step in range(20):  # 100 ms ticks, stalled 84 % of the time from tick 10 on
            total += 84_000 if step >= 10 else 0
            meter.add(t, pressure(total, avg10=0.0))
            t += 100_000
        rate = meter.rate()
        assert rate is not None
        assert rate.some_pct == pytest.approx(84.0)
        assert rate.window_us == 1_000_000

    def test_meter_window_slides(self) -> None:
        meter = StallMeter(window_us=1_000_000)
        assert meter.rate() is None
        meter.add(0, pressure(0))
        assert meter.rate() is None
        meter.add(500_000, pressure(500_000))  # 100 % stalled
        meter.add(2_000_000, pressure(500_000))  # then idle for 1.5 s
        rate = meter.rate()
        assert rate is not None
        # the oldest reading kept is the newest one at least a window old: t=500 ms
        assert rate.window_us == 1_500_000
        assert rate.some_pct == 0.0

    def test_meter_ignores_stale_readings(self) -> None:
        meter = StallMeter(window_us=1_000_000)
        meter.add(10, pressure(0))
        meter.add(10, pressure(99))
        meter.add(5, pressure(99))
        assert meter.rate() is None


class TestTriggerSpec:
    def test_encoding_is_terminated(self) -> None:
        # without the terminator the kernel reads "some 150000 200000" (kernel.md 3.2)
        assert TriggerSpec("some", 150_000, 2_000_000).encode() == b"some 150000 2000000\n"

    @pytest.mark.parametrize(
        ("kind", "stall", "window"),
        [("half", 1, 2), ("some", 0, 2_000_000), ("full", 3, 2), ("some", 1, 10_000_001)],
    )
    def test_invalid(self, kind: str, stall: int, window: int) -> None:
        with pytest.raises(ValueError):
            TriggerSpec(kind, stall, window)

    def test_refusal_reasons_are_sentences(self, tmp_path: Path) -> None:
        spec = TriggerSpec("some", 150_000, 1_000_000)
        assert "multiple of 2 s" in TriggerRefused("f", spec, errno.EINVAL).reason
        assert "already has a trigger" in TriggerRefused("f", spec, errno.EBUSY).reason
        assert "PSI is disabled" in TriggerRefused("f", spec, errno.EOPNOTSUPP).reason
        with pytest.raises(TriggerRefused, match="ENOENT"):
            PsiTrigger(str(tmp_path / "missing"), spec)


def has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))
    return False


@pytest.mark.live
class TestLiveTriggers:
    @pytest.fixture
    def psi_path(self, live_host: Host) -> str:
        path = live_host.pressure_path("memory")
        if not os.path.exists(path):
            pytest.skip("no PSI on this kernel")
        return path

    def test_two_second_window_is_accepted(self, psi_path: str, live_host: Host) -> None:
        with PsiTrigger(psi_path, TriggerSpec("some", 150_000, 2_000_000)) as trig:  # not refused
            events = select.poll()
            events.register(trig.fd, select.POLLPRI)
            # armed and healthy: no event yet, or the trigger's own; never POLLERR
            assert [trig.fired(revents) for _fd, revents in events.poll(0)] in ([], ["fired"])

    def test_subsecond_window_is_refused_without_cap_sys_resource(self, psi_path: str) -> None:
        if has_cap_sys_resource():
            pytest.skip("with CAP_SYS_RESOURCE the kernel accepts any window")
        with pytest.raises(TriggerRefused, match="multiple of 2 s"):
            PsiTrigger(psi_path, TriggerSpec("some", 150_000, 1_000_000))

    def test_the_daemon_arms_a_kernel_trigger_on_a_live_host(self, psi_path: str, live_host: Host) -> None:
        waiter = Waiter()
        try:
            source = PsiSource(psi_path, "full", 50, ("machine", None))
            armed = waiter.arm(WakePlan(psi=(source,), writes=True))
            assert armed.psi == frozenset({("machine", None)})
            assert armed.psi_modes == {psi_path: "trigger"}
        finally:
            waiter.close()
        assert waiter.fds == {}

    def test_nothing_is_armed_where_nothing_may_be_written(self, psi_path: str) -> None:
        waiter = Waiter()
        source = PsiSource(psi_path, "full", 50, ("machine", None))
        armed = waiter.arm(WakePlan(psi=(source,), writes=False))
        assert armed.psi == frozenset() and "polling" in armed.psi_modes[psi_path]
        waiter.close()

    def test_second_trigger_on_one_fd_is_ebusy(self, psi_path: str) -> None:
        with PsiTrigger(psi_path, TriggerSpec("some", 150_000, 2_000_000)) as trig:
            with pytest.raises(OSError) as info:
                os.write(trig.fd, b"full 150000 2000000\n")
            assert info.value.errno == errno.EBUSY

    def test_cgroup_pressure_trigger(self, arena: Arena, live_host: Host) -> None:
        if arena.v2_dir is None:
            pytest.skip("no cgroup2 hierarchy")
        path = f"{arena.v2_dir}/memory.pressure"
        with PsiTrigger(path, TriggerSpec("some", 100_000, 2_000_000)) as trig:
            with pytest.raises(OSError) as info:  # the first one is registered
                os.write(trig.fd, b"some 100000 2000000\n")
            assert info.value.errno == errno.EBUSY
        # and the pressure file itself reads like the system one: an empty group never stalled
        pressure = read_cgroup_pressure(live_host, arena.name)
        assert pressure.some.total_us == 0
        assert pressure.full is not None and pressure.full.total_us == 0

    def test_trigger_reports_gone_when_cgroup_is_removed(self, live_host: Host) -> None:
        layout = live_host.cgroup_layout()
        if layout.v2_mount is None or os.geteuid() != 0:
            pytest.skip("needs root and cgroup2")
        directory = live_host.cgroup_v2_dir(f"/guardian-test-{os.getpid()}-gone")
        os.mkdir(directory)
        try:
            trig = PsiTrigger(f"{directory}/memory.pressure", TriggerSpec("some", 100_000, 2_000_000))
        finally:
            os.rmdir(directory)
        try:
            events = select.poll()
            events.register(trig.fd, select.POLLPRI)
            results = events.poll(2000)
            assert results, "removing the cgroup must wake the poller"
            assert trig.fired(results[0][1]) == "gone"
        finally:
            trig.close()

    def test_system_totals_never_go_backwards(self, psi_path: str, live_host: Host) -> None:
        readings = [read_pressure(live_host, "memory") for _ in range(50)]
        for before, after in zip(readings, readings[1:]):
            assert after.some.total_us >= before.some.total_us
            assert before.full is not None and after.full is not None
            assert after.full.total_us >= before.full.total_us
