"""Ranking on records built in memory: order, weights, tie-breaks, and scorer isolation."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import ClassVar, Optional

import pytest

from guardian.badness import badness_points, cdiv, oom_score, process_oom_score
from guardian.candidates import Candidate, never_kill_reason, process_candidates
from guardian.config import Policy, parse_policy
from guardian.hookspecs import Scorer
from guardian.host import Host, cgroup_layout, parse_mountinfo
from guardian.isolation import PluginFailure, Refusal
from guardian.ranking import Offered, RankContext, Ranker
from guardian.records import ProcCgroups, Process
from guardian.rules import Facts
from guardian.sample import Sample

MiB = 1 << 20
LAYOUT = cgroup_layout(
    parse_mountinfo("1 1 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"), frozenset({"memory"})
)


def proc(
    pid: int, rss_mib: float = 10, adj: int = 0, comm: str = "", cgroup: str = "/x", **kw: object
) -> Process:
    fields: dict[str, object] = {
        "pid": pid,
        "ppid": 1,
        "comm": comm or f"p{pid}",
        "state": "S",
        "starttime_ticks": pid * 10,
        "is_kernel_thread": False,
        "uid": 1000,
        "rss_anon_bytes": int(rss_mib * MiB),
        "rss_file_bytes": 0,
        "rss_shmem_bytes": 0,
        "swap_bytes": 0,
        "pte_bytes": 0,
        "oom_score_adj": adj,
        "cgroup": ProcCgroups(v2=cgroup, v1={}),
    }
    fields.update(kw)
    return Process(**fields)  # type: ignore[arg-type]


def facts_of(p: Process, cgroup: Optional[str]) -> Facts:
    return Facts(
        comm=p.comm,
        cgroup=cgroup or p.cgroup.v2,
        uid=p.uid,
        cmdline=lambda: "cmd --flag",
        exe=lambda: "/usr/bin/x",
    )


def context(tmp_path: Path, policy: Optional[Policy] = None, totalpages: int = 1_000_000) -> RankContext:
    return RankContext(
        sample=Sample(Host(tmp_path), 0),
        policy=policy or Policy(),
        mode="process",
        scope=None,
        page_size=4096,
        totalpages=totalpages,
        totalpages_source="global",
        capacity_bytes=totalpages * 4096,
        self_pid=999_999,
        facts_of=facts_of,
    )


class Size(Scorer):
    name: ClassVar[str] = "size"

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        return float(candidate.rss_bytes // MiB)


class Raises(Scorer):
    name: ClassVar[str] = "raises"

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        raise RuntimeError("boom")


class Hangs(Scorer):
    name: ClassVar[str] = "hangs"

    def __init__(self) -> None:
        self.release = threading.Event()

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        self.release.wait(30)
        return 1.0


class NotANumber(Scorer):
    name: ClassVar[str] = "nan"

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        return "high"  # type: ignore[return-value]


class Infinite(Scorer):
    name: ClassVar[str] = "inf"

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        return float("inf")


def weighted(*pairs: tuple[Scorer, float]) -> list[tuple[Offered, float]]:
    return [(Offered.of(scorer), weight) for scorer, weight in pairs]


def cands(*procs: Process) -> list[Candidate]:
    return [Candidate("process", p.cgroup.v2, process=p) for p in procs]


def test_order_weights_and_breakdown(tmp_path: Path) -> None:
    ranking = Ranker(weighted((Size(), 2.0)), 1000).rank(
        context(tmp_path), cands(proc(1, 5), proc(2, 50), proc(3, 20))
    )
    assert [r.candidate.process.pid for r in ranking.ranked if r.candidate.process] == [2, 3, 1]
    assert ranking.top is not None and ranking.top.scores == {"size": 50.0} and ranking.top.total == 100.0


def test_ties_go_to_the_newest_process(tmp_path: Path) -> None:
    ranking = Ranker(weighted((Size(), 1.0)), 1000).rank(
        context(tmp_path), cands(proc(7, 10), proc(9, 10), proc(8, 10))
    )
    assert [r.candidate.process.pid for r in ranking.ranked if r.candidate.process] == [9, 8, 7]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (Raises(), "raised RuntimeError: boom"),
        (NotANumber(), "returned 'high' (str) for pid 1, not a number"),
        (Infinite(), "returned inf for pid 1, not a finite number"),
    ],
)
def test_a_bad_scorer_is_left_out_and_reported(tmp_path: Path, bad: Scorer, reason: str) -> None:
    ranking = Ranker(weighted((bad, 1.0), (Size(), 1.0)), 1000).rank(
        context(tmp_path), cands(proc(1, 5), proc(2, 50))
    )
    assert ranking.failures == (PluginFailure(bad.name, f"{bad.name}.score", reason),)
    assert ranking.top is not None and ranking.top.candidate.process is not None
    assert ranking.top.candidate.process.pid == 2
    assert bad.name not in ranking.top.scores


def test_a_hanging_scorer_is_cut_off_at_its_budget(tmp_path: Path) -> None:
    hangs = Hangs()
    ranker = Ranker(weighted((hangs, 1.0), (Size(), 1.0)), budget_ms=50)
    try:
        ranking = ranker.rank(context(tmp_path), cands(proc(1, 5), proc(2, 50)))
        assert ranking.failures == (
            PluginFailure("hangs", "hangs.score", "did not finish within its budget of 50 ms"),
        )
        assert ranking.top is not None and ranking.top.scores == {"size": 50.0}
        # while its old run is stuck, it is not started again
        again = ranker.rank(context(tmp_path), cands(proc(1, 5)))
        assert again.failures == (
            PluginFailure(
                "hangs",
                "hangs.prepare",
                "not started: its earlier hangs.score is still running past its budget (hung)",
            ),
        )
    finally:
        hangs.release.set()
    for _ in range(100):
        if not any(
            t.name.startswith("guardian-plugin hangs ") and t.is_alive() for t in threading.enumerate()
        ):
            break
        time.sleep(0.01)
    assert ranker.rank(context(tmp_path), cands(proc(1, 5))).failures == ()


# --- kernel_badness arithmetic (kernel.md 1.3, verified values on the 24 GiB host) -------------


def test_cdiv_truncates_toward_zero() -> None:
    assert cdiv(-7, 2) == -3 and cdiv(7, 2) == 3 and cdiv(-7, -2) == 3 and cdiv(7, -2) == -3


@pytest.mark.parametrize(
    ("rss_pages", "adj", "expected"),
    [(0, 0, 666), (0, -999, 1), (0, 1000, 1332), (412058, 0, 710)],
)
def test_oom_score_known_values(rss_pages: int, adj: int, expected: int) -> None:
    t = 6_170_914  # totalpages of the verification host
    assert oom_score(rss_pages + adj * (t // 1000), t) == expected


def test_badness_counts_rss_swap_and_page_tables() -> None:
    p = proc(5, rss_file_bytes=8192, rss_shmem_bytes=4096, swap_bytes=3 * 4096, pte_bytes=2 * 4096, adj=2)
    assert badness_points(p, 4096, 10_000) == 10 * 256 + 2 + 1 + 3 + 2 + 2 * 10


def test_ineligible_processes_score_zero() -> None:
    assert process_oom_score(proc(1, 100), 4096, 10_000) == 0  # pid 1
    assert process_oom_score(proc(5, 100, adj=-1000), 4096, 10_000) == 0
    assert process_oom_score(proc(5, 100, state="Z"), 4096, 10_000) == 0
    assert process_oom_score(proc(5, 0, is_kernel_thread=True), 4096, 10_000) == 0


# --- candidates and exclusions --------------------------------------------------------------


def test_never_kill() -> None:
    assert "guardian itself" in (never_kill_reason(proc(42), self_pid=42) or "")
    assert "pid 1" in (never_kill_reason(proc(1), self_pid=42) or "")
    assert "kernel thread" in (never_kill_reason(proc(2, is_kernel_thread=True), self_pid=42) or "")
    assert "zombie" in (never_kill_reason(proc(3, state="Z"), self_pid=42) or "")
    assert "-1000" in (never_kill_reason(proc(4, adj=-1000), self_pid=42) or "")
    assert never_kill_reason(proc(5, adj=-999), self_pid=42) is None


def test_policy_protect_ignore_and_scope() -> None:
    policy = parse_policy(
        '[[protect]]\ncomm = "^sshd$"\n[[ignore]]\ncgroup = "^/batch"\nuid = 1000\n', "test.toml"
    )
    procs = [
        proc(10, comm="sshd"),
        proc(11, cgroup="/batch/job"),
        proc(12, cgroup="/web"),
        proc(13, cgroup="/webx"),
    ]
    kept, excluded = process_candidates(procs, LAYOUT, None, policy, 1, facts_of)
    assert [c.process.pid for c in kept if c.process] == [12, 13]
    reasons = {e.candidate.process.pid: e.reason for e in excluded if e.candidate.process}
    assert reasons[10].startswith("protected by policy protect[0]")
    assert reasons[11].startswith("ignored by policy ignore[0]")
    kept, _ = process_candidates(procs, LAYOUT, "/web", policy, 1, facts_of)
    assert [c.process.pid for c in kept if c.process] == [12]  # /webx is not inside /web


# --- what a scorer raises or returns cannot take the ranking down (hardening) -------------------


class Exits(Scorer):
    name: ClassVar[str] = "exits"

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        if candidate.process is not None and candidate.process.pid == 2:
            raise self.exc
        return 1.0


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (SystemExit(0), "raised SystemExit: 0"),
        (KeyboardInterrupt(), "raised KeyboardInterrupt"),
        (GeneratorExit(), "raised GeneratorExit"),
    ],
)
def test_a_scorer_raising_a_base_exception_is_left_out_and_reported(
    tmp_path: Path, exc: BaseException, reason: str
) -> None:
    """A scorer's SystemExit used to end its thread silently: the scorer kept the scores it had
    given so far, and nothing was reported."""
    ranking = Ranker(weighted((Exits(exc), 1.0), (Size(), 1.0)), 1000).rank(
        context(tmp_path), cands(proc(1, 5), proc(2, 50))
    )
    assert ranking.failures == (PluginFailure("exits", "exits.score", reason),)
    assert [(r.candidate.process.pid, r.scores) for r in ranking.ranked if r.candidate.process] == [
        (2, {"size": 50.0}),
        (1, {"size": 5.0}),
    ]  # the scores it gave before it raised are dropped too


class Unprintable(Exception):
    def __str__(self) -> str:
        raise SystemExit("nor this")


class RaisesUnprintable(Scorer):
    name: ClassVar[str] = "unprintable"

    def prepare(self, context: RankContext, candidates: list[Candidate]) -> None:
        raise Unprintable


def test_an_exception_whose_message_raises_is_still_reported(tmp_path: Path) -> None:
    ranking = Ranker(weighted((RaisesUnprintable(), 1.0)), 1000).rank(context(tmp_path), cands(proc(1, 5)))
    assert ranking.failures == (
        PluginFailure(
            "unprintable", "unprintable.prepare", "raised Unprintable (its message could not be rendered)"
        ),
    )


class Returns(Scorer):
    name: ClassVar[str] = "returns"

    def __init__(self, value: object) -> None:
        self.value = value

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        return self.value  # type: ignore[return-value]


class SneakyFloat(float):
    def __float__(self) -> float:
        raise SystemExit("converted")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (10**400, "returned an int too large for a float for pid 1"),
        (float("nan"), "returned nan for pid 1, not a finite number"),
        (True, "returned True (bool) for pid 1, not a number"),
        (SneakyFloat(1.0), "raised SystemExit: converted"),
    ],
)
def test_scores_must_be_finite_numbers(tmp_path: Path, value: object, reason: str) -> None:
    ranking = Ranker(weighted((Returns(value), 1.0), (Size(), 1.0)), 1000).rank(
        context(tmp_path), cands(proc(1, 5))
    )
    assert ranking.failures == (PluginFailure("returns", "returns.score", reason),)


def test_a_weighted_score_that_overflows_the_total_is_that_scorers_failure(tmp_path: Path) -> None:
    """weight 1000 x 1e306 is finite times finite, and infinite: it used to reach the JSON
    output as Infinity."""
    ranking = Ranker(weighted((Size(), 1.0), (Returns(1e306), 1000.0)), 1000).rank(
        context(tmp_path), cands(proc(1, 5), proc(2, 50))
    )
    assert ranking.failures == (
        PluginFailure(
            "returns",
            "returns.score",
            "weight 1000 x score 1e+306 for pid 1 makes its total overflow (not finite)",
        ),
    )
    assert [r.total for r in ranking.ranked] == [50.0, 5.0]
    assert all(math.isfinite(r.total) for r in ranking.ranked)


def test_two_huge_scores_overflow_together_and_the_later_scorer_is_blamed(tmp_path: Path) -> None:
    class Huge(Returns):
        name: ClassVar[str] = "huge"

    ranking = Ranker(weighted((Huge(1e308), 1.0), (Returns(1e308), 1.0)), 1000).rank(
        context(tmp_path), cands(proc(1, 5))
    )
    assert [f.plugin for f in ranking.failures] == ["returns"]
    assert ranking.ranked[0].total == 1e308 and ranking.ranked[0].scores == {"huge": 1e308}


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"name": ""}, "returned a scorer named '' (str): a name is a non-empty printable str"),
        ({"name": "a\nb"}, "returned a scorer named 'a\\nb' (str): a name is a non-empty printable str"),
        ({"name": 7}, "returned a scorer named 7 (int): a name is a non-empty printable str"),
        ({"kinds": "process"}, "scorer bad: kinds is 'process' (str), not a set of ['cgroup', 'process']"),
        (
            {"kinds": frozenset({"thread"})},
            "scorer bad: kind 'thread' (str) is not one of ['cgroup', 'process']",
        ),
        ({"kinds": frozenset()}, "scorer bad: kinds is empty, so it would score nothing"),
    ],
)
def test_a_scorer_is_checked_once_when_offered(attrs: dict[str, object], reason: str) -> None:
    bad = type("Bad", (Size,), {"name": "bad", **attrs})()
    with pytest.raises(Refusal) as info:
        Offered.of(bad)
    assert str(info.value) == reason


def test_when_no_scorer_ranks_anyone_the_kernels_order_decides(tmp_path: Path) -> None:
    """Every scorer failed (overran its budget, raised, abstained): ties used to go to the newest
    process, which chose a 4 MiB session over a 40 GiB hog in review. The kernel's own
    oom_badness order decides instead, and the ranking says so."""
    old_hog, young_tiny = proc(5, rss_mib=40 << 10), proc(6, rss_mib=4)
    ranking = Ranker(weighted((Raises(), 1.0)), 1000).rank(context(tmp_path), cands(old_hog, young_tiny))
    assert [r.candidate.process.pid for r in ranking.ranked if r.candidate.process] == [5, 6]
    assert "kernel's own order" in ranking.fallback
    assert [f.hook for f in ranking.failures] == ["raises.score"]
    scored = Ranker(weighted((Size(), 1.0)), 1000).rank(context(tmp_path), cands(old_hog, young_tiny))
    assert scored.fallback == "" and scored.top is not None and scored.top.scores == {"size": float(40 << 10)}
