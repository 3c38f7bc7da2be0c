"""What a new user found in the interface: tables that cut the useful end, counts, options that
took nonsense, ties broken finer than the kernel breaks them, a glob that matches nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.builder import FakeRoot
from support.clock import FakeClock

from guardian.cli import EXIT_OK, EXIT_USAGE, main
from guardian.config import Policy, parse_policy
from guardian.explain import explain
from guardian.host import Host
from guardian.loaded import summarize
from guardian.plugins import make_plugin_manager
from guardian.sample import Sample
from guardian.selection import Selector
from guardian.text import ELLIPSIS, counted, middle

FIXTURES = Path(__file__).parent / "fixtures"
K8S = FIXTURES / "k8s-node"
V2 = FIXTURES / "v2-systemd"
POD = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod49f92b35_2cd6.slice/cri-containerd-2226.scope"


def test_middle_keeps_both_ends_and_marks_the_cut() -> None:
    short = middle(POD, 40)
    assert len(short) == 40 and ELLIPSIS in short
    assert short.startswith("/kubepods.sli") and short.endswith("/cri-containerd-2226.scope")
    assert middle("/system.slice", 40) == "/system.slice"
    assert middle("abcdef", 1) == ELLIPSIS


def test_rank_table_shortens_the_middle_and_wide_prints_whole(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["rank", "--interval", "0", "--root", str(K8S)]
    assert main(args) == EXIT_OK
    table = capsys.readouterr().out
    assert ELLIPSIS in table and ".scope " in table  # the container's end is kept, marked
    assert main([*args, "--wide"]) == EXIT_OK
    wide = capsys.readouterr().out
    assert ELLIPSIS not in wide
    assert main([*args, "--json"]) == EXIT_OK
    paths = [c["cgroup"] for c in json.loads(capsys.readouterr().out)["candidates"]]
    assert all(p in wide for p in paths if p)


def test_scorer_names_in_the_header_are_not_cut_to_fourteen(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text("[scorers]\nkernel_badness = 1.0\ncgroup_largest = 1.0\n")
    assert main(["rank", "--interval", "0", "--wide", "--policy", str(policy), "--root", str(V2)]) == EXIT_OK
    assert "cgroup_largest" in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize("command", ["status", "rank"])
@pytest.mark.parametrize("top", ["-1", "0", "x"])
def test_top_takes_a_count_of_one_or_more(command: str, top: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--top", top, "--root", str(V2)])
    assert exit_.value.code == EXIT_USAGE
    assert "expected a whole number of 1 or more" in capsys.readouterr().err


def test_status_json_honours_top_and_gives_usage_in_pct(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["status", "--json", "--interval", "0", "--top", "2", "--root", str(V2)], clock=FakeClock()) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert len(report["cgroups"]) == 2 and report["cgroups_total"] > 2
    limited = [g for g in report["cgroups"] if g["usage_pct"] is not None]
    assert limited and all(0 <= g["usage_pct"] <= 200 for g in limited)
    assert any(g["usage_pct"] > 1 for g in limited)  # a percentage, not a ratio
    assert "usage_ratio" not in report["cgroups"][0]


def test_counts_are_said_right() -> None:
    assert counted(1, "process", "processes") == "1 process" and counted(2, "cgroup rule") == "2 cgroup rules"
    one = parse_policy("[[cgroup]]\nmatch = 'a/*'\nmin_headroom = { term = '10%' }\n", "p.toml")
    assert "1 cgroup rule (a/*)" in summarize(one)


def test_a_glob_that_matches_nothing_is_a_note_not_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text("[[cgroup]]\nmatch = 'no.slice/*.service'\nmin_headroom = { term = '10%' }\n")
    assert main(["check", "--policy", str(policy), "--root", str(V2)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "note: cgroup[0].match 'no.slice/*.service' matches no cgroup here now" in out


def test_ties_are_broken_at_the_kernels_resolution(tmp_path: Path) -> None:
    """2.6 and 2.0 MiB share an oom_score point on a 16 GiB machine; the kernel compares
    pages, so the larger goes first even when it is the older."""
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=16 * 1024 * 1024, available_kb=1024 * 1024)
    root.process(1, "systemd", ppid=0, rss_anon_kb=4096, cgroup_v2="/init.scope")
    root.cgroup_v2("/init.scope")
    root.process(100, "older", ppid=1, rss_anon_kb=2660, cgroup_v2="/a.scope", starttime=1000)
    root.process(200, "newer", ppid=1, rss_anon_kb=2048, cgroup_v2="/a.scope", starttime=5000)
    root.cgroup_v2("/a.scope")
    root.finish()
    selector = Selector(
        Policy(scorers={"kernel_badness": 1.0}), make_plugin_manager(None, entry_points=False)
    )
    ranking = selector.rank(Sample(Host(tmp_path / "root"), 0))
    first, second = ranking.ranked[0], ranking.ranked[1]
    assert first.total == second.total  # one oom_score point apart at most: the same here
    assert first.candidate.process is not None and first.candidate.process.comm == "older"
    text = "\n".join(explain(ranking))
    assert "the kernel's own badness in pages decides (665 vs 512 pages)" in text
