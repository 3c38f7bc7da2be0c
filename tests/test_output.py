"""What guardian hands to plugins cannot be changed by them, and what it prints is valid: JSON
without NaN or Infinity, text without nan or inf.

A plugin's score may be as large as a float goes; weighted, the total overflows to inf, which
``json.dump`` printed as ``Infinity`` (not JSON) and the table as ``inf``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Optional

import pytest
from support.clock import FakeClock
from support.machine import WEB, small_machine
from support.secure import root_only_dir, secure_base

from guardian.candidates import Candidate
from guardian.cli import EXIT_OK, main
from guardian.config import Policy
from guardian.hookspecs import Scorer, hookimpl
from guardian.host import Host
from guardian.plugins import make_plugin_manager
from guardian.ranking import RankContext
from guardian.records import CgroupMemory, ProcCgroups, VmStat, VmSysctl
from guardian.sample import Sample
from guardian.selection import Selector

HUGE_PLUGIN = """
from guardian.hookspecs import Scorer, hookimpl

class Huge(Scorer):
    name = "huge"
    kinds = frozenset({"process", "cgroup"})
    def score(self, candidate, context):
        return 1e308 if candidate.rss_bytes > 200 << 20 else -1e308

@hookimpl
def guardian_scorers():
    return [Huge()]
"""


@pytest.fixture
def huge_root(tmp_path: Path) -> Iterator[Path]:
    """A machine and a policy that weighs a scorer of 1e308 points ten times; the plugin file
    in a directory the secure-path rule accepts (tests/support/secure.py)."""
    if secure_base() is None:
        pytest.skip("plugin files must be in a root-only directory")
    small_machine(tmp_path / "root")
    with root_only_dir() as plugins:
        (plugins / "huge.py").write_text(HUGE_PLUGIN)
        (plugins / "huge.py").chmod(0o644)
        (tmp_path / "policy.toml").write_text(
            f"[scorers]\nhuge = 10.0\nkernel_badness = 1.0\n[plugins]\ndirectory = {str(plugins)!r}\n"
        )
        yield tmp_path


def strict_json(text: str) -> Any:
    def reject(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=reject)


def test_overflowing_totals_are_null_in_json(huge_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "rank",
        "--json",
        "--explain",
        "--root",
        str(huge_root / "root"),
        "--policy",
        str(huge_root / "policy.toml"),
    ]
    assert main(argv, clock=FakeClock()) == EXIT_OK
    report = strict_json(capsys.readouterr().out)
    # 10 x 1e308 is no number: the scorer that overflowed the totals is left out, reported
    assert [(f["hook"], f["plugin"].endswith("huge.py")) for f in report["failures"]] == [
        ("huge.score", True)
    ]
    first = report["candidates"][0]
    assert "huge" not in first["scores"] and math.isfinite(first["total"])
    assert report["explanation"], "--explain gives an explanation"
    for line in report["explanation"]:
        assert not re.search(r"\b(nan|inf)\b", line), line


def test_overflowing_totals_never_print_as_inf(huge_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "rank",
        "--explain",
        "--root",
        str(huge_root / "root"),
        "--policy",
        str(huge_root / "policy.toml"),
    ]
    assert main(argv, clock=FakeClock()) == EXIT_OK
    out = capsys.readouterr().out
    assert not re.search(r"\b(nan|inf)\b", out, flags=re.IGNORECASE), out


# --- read-only records ---------------------------------------------------------------------------


def test_record_mappings_are_read_only_copies() -> None:
    v1 = {"memory": "/a"}
    cgroups = ProcCgroups(v2="/a", v1=v1)
    v1["memory"] = "/elsewhere"  # whoever built it cannot change it afterwards either
    assert cgroups.v1_memory == "/a"
    events = {"oom_kill": 1}
    records: list[Any] = [
        cgroups.v1,
        CgroupMemory("v2", 1, 2, events=events).events,
        CgroupMemory("v2", 1, 2).events,
        VmStat(counters={"oom_kill": 0}).counters,
        VmSysctl(0, 50, 0, 0, unreadable={"panic_on_oom": "why"}).unreadable,
    ]
    for mapping in records:
        assert isinstance(mapping, Mapping)  # a mapping (None would raise TypeError too)
        with pytest.raises(TypeError):
            mapping["x"] = 1
        assert "x" not in mapping


def test_sample_hands_out_nothing_mutable(tmp_path: Path) -> None:
    small_machine(tmp_path / "root")
    sample = Sample(Host(tmp_path / "root"), 0)
    group = sample.cgroup(WEB)
    for mapping in (group.stat, group.events_local, group.memory.events):
        assert isinstance(mapping, Mapping) and mapping  # read (None would raise TypeError too)
        with pytest.raises(TypeError):
            mapping["oom_kill"] = 99  # type: ignore[index]
        assert mapping.get("oom_kill") != 99
    for sequence in (
        sample.processes,
        sample.processes_in(WEB),
        group.procs,
        sample.cgroup_paths,
        sample.zram,
    ):
        assert isinstance(sequence, tuple)


class Meddler(Scorer):
    """A plugin that tries to move every process out of its cgroup before the others score."""

    name: ClassVar[str] = "meddler"

    def prepare(self, context: RankContext, candidates: list[Candidate]) -> None:
        for candidate in candidates:
            assert candidate.process is not None
            candidate.process.cgroup.v1.clear()  # type: ignore[attr-defined]

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        return 0.0


class MeddlerPlugin:
    @hookimpl
    def guardian_scorers(self) -> list[Scorer]:
        return [Meddler()]


def test_a_plugin_cannot_change_what_the_next_ranking_sees(tmp_path: Path) -> None:
    small_machine(tmp_path / "root", "hybrid")  # the memory cgroup comes from cgroup.v1 here
    policy = Policy(scorers={"meddler": 1.0, "kernel_badness": 1.0})
    selector = Selector(policy, make_plugin_manager(None, entry_points=False, extra=[MeddlerPlugin()]))
    sample = Sample(Host(tmp_path / "root"), 0)
    first = selector.rank(sample, scope=WEB)
    assert [(f.plugin, f.hook) for f in first.failures] == [("extra:0:MeddlerPlugin", "meddler.prepare")]
    second = selector.rank(sample, scope=WEB)
    assert {r.candidate.process.pid for r in second.ranked if r.candidate.process} == {200, 201}
    # (on a hybrid host processes_in() lists the v1 memory tree's own cgroup.procs)
    members = {p.pid: p.cgroup.v1_memory for p in sample.processes_in(WEB) if p.pid in (200, 201)}
    assert members == {200: WEB, 201: WEB}
