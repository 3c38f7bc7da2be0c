"""cgroup_largest on built roots: protection, size tiers, growth across rankings, and xattrs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest
from fixtures.builder import FakeRoot

from guardian.config import Policy
from guardian.host import Host
from guardian.plugins import make_plugin_manager
from guardian.ranking import Ranking
from guardian.sample import Sample
from guardian.selection import Selector

MiB = 1 << 20
POLICY = Policy(scorers={"cgroup_largest": 1.0})


def build(tmp_path: Path, usage_mib: dict[str, int], low_mib: Optional[dict[str, int]] = None) -> Path:
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=4 * 1024 * 1024, available_kb=1024 * 1024)
    root.process(1, "systemd", ppid=0, rss_anon_kb=4096, cgroup_v2="/init.scope")
    root.cgroup_v2("/init.scope")
    for i, (name, mib) in enumerate(sorted(usage_mib.items())):
        path = f"/work.slice/{name}.service"
        root.process(100 + i, name, ppid=1, rss_anon_kb=mib * 1024, cgroup_v2=path)
        low = (low_mib or {}).get(name, 0) * MiB
        root.cgroup_v2(path, current=mib * MiB, low=low)
    root.finish()
    return tmp_path / "root"


def rank(selector: Selector, root: Path, mode: str = "cgroup") -> Ranking:
    return selector.rank(Sample(Host(root), 0), mode=mode)


def selector() -> Selector:
    return Selector(POLICY, make_plugin_manager(None, entry_points=False))


def order(ranking: Ranking) -> list[str]:
    return [(r.candidate.cgroup or "").rsplit("/", 1)[-1].removesuffix(".service") for r in ranking.ranked]


def test_group_with_half_its_siblings_usage_goes_first(tmp_path: Path) -> None:
    ranking = rank(selector(), build(tmp_path, {"big": 600, "mid": 300, "small": 100}))
    assert order(ranking)[:3] == ["big", "mid", "small"]
    big = ranking.ranked[0]
    assert big.scores["cgroup_largest"] >= 2000  # tier 2: 600 of 1000 MiB among siblings


def test_protection_is_not_held_against_a_group(tmp_path: Path) -> None:
    # "db" uses more, but 350 MiB of it is under memory.low: its effective usage is 50 MiB
    ranking = rank(selector(), build(tmp_path, {"db": 400, "web": 350, "cron": 300}, {"db": 350}))
    assert order(ranking)[0] == "web"


def test_growth_across_rankings(tmp_path: Path) -> None:
    root = build(tmp_path, {"a": 300, "b": 310, "c": 320})
    sel = selector()
    first = rank(sel, root)
    assert sorted(order(first)) == ["a", "b", "c"]
    assert all(r.scores["cgroup_largest"] < 1000 for r in first.ranked)  # no tier yet
    # "a" grows by half while the others stay put
    (root / "sys/fs/cgroup/work.slice/a.service/memory.current").write_text(str(450 * MiB))
    second = rank(sel, root)
    assert order(second)[0] == "a"
    assert 1000 <= second.ranked[0].scores["cgroup_largest"] < 2000  # tier 1: growing


def test_process_scores_as_its_group(tmp_path: Path) -> None:
    ranking = rank(selector(), build(tmp_path, {"big": 600, "small": 100}), mode="process")
    assert [r.candidate.process.comm for r in ranking.ranked if r.candidate.process] == ["big", "small"]


def _xattr(path: Path, name: str) -> None:
    try:
        os.setxattr(path, name, b"1")
    except OSError as exc:
        pytest.skip(f"cannot set {name} here: {exc.strerror}")


def test_avoid_and_prefer_xattrs(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("xattrs count only on root-owned groups")
    root = build(tmp_path, {"big": 600, "mid": 300, "small": 100})
    _xattr(root / "sys/fs/cgroup/work.slice/big.service", "user.oomd_avoid")
    _xattr(root / "sys/fs/cgroup/work.slice/small.service", "trusted.oomd_prefer")
    assert order(rank(selector(), root)) == ["small", "mid", "big"]


def test_omit_xattr_excludes_and_only_root_owned_groups_count(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("xattrs count only on root-owned groups")
    root = build(tmp_path, {"big": 600, "mid": 300})
    big = root / "sys/fs/cgroup/work.slice/big.service"
    _xattr(big, "user.oomd_omit")
    ranking = rank(selector(), root)
    assert order(ranking) == ["mid"]
    (reason,) = [e.reason for e in ranking.excluded if e.candidate.cgroup and "big" in e.candidate.cgroup]
    assert "user.oomd_omit" in reason
    os.chown(big, 1000, 1000)  # an unprivileged user marking their own group: ignored
    assert order(rank(selector(), root)) == ["big", "mid"]


def test_omit_is_read_once_per_cgroup_per_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of processes in one service cost one xattr read per cgroup on their path, not
    one walk per process: the exclude hook must finish within the plugin budget, or the
    candidates it had not reached would lose their omit."""
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=4 * 1024 * 1024, available_kb=1024 * 1024)
    root.process(1, "systemd", ppid=0, rss_anon_kb=4096, cgroup_v2="/init.scope")
    root.cgroup_v2("/init.scope")
    for pid in range(100, 400):
        root.process(pid, "worker", rss_anon_kb=1024, cgroup_v2="/work.slice/pool.service")
    root.cgroup_v2("/work.slice/pool.service")
    root.finish()
    host = Host(tmp_path / "root")
    asked: list[str] = []
    real = host.cgroup_xattrs

    def counting(cgroup: str, names: tuple[str, ...]) -> frozenset[str]:
        asked.append(cgroup)
        return real(cgroup, names)

    monkeypatch.setattr(host, "cgroup_xattrs", counting)
    selector = Selector(POLICY, make_plugin_manager(None, entry_points=False))
    ranking = selector.rank(Sample(host, 0))
    assert len([r for r in ranking.ranked if r.candidate.cgroup == "/work.slice/pool.service"]) == 300
    # one read for the omit walk, one for the prefer/avoid points the scorer gives the group
    assert asked.count("/work.slice/pool.service") == 2 and asked.count("/work.slice") == 1
