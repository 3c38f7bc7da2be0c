"""Calls that can wait on another process are made off the loop with a deadline
(guardian/offloop.py). A /proc/PID/cmdline read takes the process's memory lock, which the
process can hold for as long as it likes (found in review with a FUSE page that is never
served): the loop must neither wait for it nor kill on a guess."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from guardian import sample as sample_module
from guardian.config import parse_policy
from guardian.host import Host
from guardian.offloop import OffLoop, Stalled
from guardian.plugins import make_plugin_manager
from guardian.sample import Sample
from guardian.selection import Selector


def test_a_stuck_call_costs_its_deadline_once_then_fails_at_once() -> None:
    offloop = OffLoop(timeout_s=0.1, max_stuck=2)
    release = threading.Event()
    try:
        with pytest.raises(Stalled, match="reading x"):
            offloop.call(1, "reading x", release.wait)
        assert offloop.stuck_keys() == [1]
        waited = threading.Event()  # a call for the same key does not even start
        with pytest.raises(Stalled):
            offloop.call(1, "reading x", waited.set)
        assert not waited.is_set()
        assert offloop.call(2, "reading y", lambda: "y") == "y"  # other keys are served
    finally:
        release.set()


def test_too_many_stuck_workers_fail_every_call_until_one_returns() -> None:
    offloop = OffLoop(timeout_s=0.05, max_stuck=2)
    releases = [threading.Event(), threading.Event()]
    try:
        for key, release in enumerate(releases):
            with pytest.raises(Stalled):
                offloop.call(key, "reading", release.wait)
        with pytest.raises(Stalled):
            offloop.call(9, "reading", lambda: "fine")
        releases[0].set()
        for _ in range(100):  # the worker comes back and gives its place up
            if len(offloop.stuck_keys()) < 2:
                break
            threading.Event().wait(0.01)
        assert offloop.call(9, "reading", lambda: "fine") == "fine"
    finally:
        for release in releases:
            release.set()


def test_errors_of_the_call_reach_the_caller() -> None:
    def fails() -> None:
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        OffLoop(timeout_s=1).call(1, "reading", fails)


@pytest.mark.live
def test_a_cmdline_that_cannot_be_read_keeps_its_process_protected(
    live_host: Host, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A [[protect]] rule on cmdline, and a process whose cmdline read never returns: the ranking
    finishes (within the deadline, not never) and the process counts as protected; a [[prefer]]
    rule on cmdline simply does not match it."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "guardian-test-stuck"])
    real = sample_module.read_cmdline
    never = threading.Event()

    def read_cmdline(host: Host, pid: int) -> tuple[str, ...]:
        if pid == child.pid:
            never.wait()  # as the kernel waits on a memory lock the process holds
        return real(host, pid)

    monkeypatch.setattr(sample_module, "read_cmdline", read_cmdline)
    policy = parse_policy(
        "[scorers]\nkernel_badness = 1.0\nrules = 1.0\n"
        "[[protect]]\ncmdline = 'postgres: checkpointer'\n[[prefer]]\ncmdline = 'guardian-test-stuck'\n",
        "p.toml",
    )
    selector = Selector(policy, make_plugin_manager(None, entry_points=False))
    done: dict[str, object] = {}

    def rank() -> None:
        done["ranking"] = selector.rank(Sample(live_host, 0))

    try:
        worker = threading.Thread(target=rank, daemon=True)
        worker.start()
        worker.join(timeout=60)  # the bound of the bug: it used to block here for good
        assert not worker.is_alive(), "the ranking waited on the process's cmdline"
        ranking = done["ranking"]
        excluded = {e.candidate.process.pid: e.reason for e in ranking.excluded if e.candidate.process}  # type: ignore[attr-defined]
        assert child.pid in excluded
        assert "did not return in time" in excluded[child.pid] and excluded[child.pid].startswith("protected")
        # prefer/avoid: an unknown cmdline matches nothing (the read fails at once now: stuck)
        prefer_only = parse_policy(
            "[scorers]\nkernel_badness = 1.0\nrules = 1.0\n[[prefer]]\ncmdline = 'guardian-test-stuck'\n",
            "q.toml",
        )
        ranked = Selector(prefer_only, make_plugin_manager(None, entry_points=False)).rank(
            Sample(live_host, 0)
        )
        (mine,) = [r for r in ranked.ranked if r.candidate.process and r.candidate.process.pid == child.pid]
        assert mine.scores["rules"] == 0.0
    finally:
        never.set()
        child.kill()
        child.wait()
