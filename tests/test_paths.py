"""cgroup paths: one normal form where they are read (``/a/b``), user-given ones checked, and
every walk up a path ends, whatever the string.

``guardian rank --scope system.slice`` (no leading "/") looped for ever, growing until the kernel
killed it, and a /proc/PID/cgroup path without a leading "/" sent the user.oomd_omit walk of
cgroup_largest into a loop that ignored SIGTERM: both walked ``rsplit("/", 1)`` on a string
without "/".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.bounds import guardian_bounded, hard_timeout, python_bounded
from support.machine import WEB, small_machine, v2_dir

from guardian.candidates import Candidate
from guardian.cli import EXIT_OK, EXIT_USAGE
from guardian.config import Policy
from guardian.host import Host, cgroup_ancestors, cgroup_path, is_cgroup_path
from guardian.plugins import make_plugin_manager
from guardian.sample import Sample
from guardian.scorers import cgroup_largest
from guardian.selection import Selector
from guardian.sources.processes import parse_proc_cgroup


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("/", "/"),
        ("/system.slice", "/system.slice"),
        ("system.slice", "/system.slice"),
        ("system.slice/", "/system.slice"),
        ("/a/b.service/", "/a/b.service"),
        ("/.hidden/x", "/.hidden/x"),  # a dot that starts a name is a name
        ("/a/...", "/a/..."),
    ],
)
def test_cgroup_path_normal_form(text: str, path: str) -> None:
    assert cgroup_path(text) == path
    assert is_cgroup_path(path)


@pytest.mark.parametrize("text", ["", "a//b", "/a//", "//a", "/a/./b", "/a/../b", "..", "/..", "a/\0b"])
def test_what_names_no_cgroup_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="cgroup path"):
        cgroup_path(text)
    assert not is_cgroup_path(text)


@pytest.mark.parametrize(
    "text", ["system.slice", "", "/", "//", "a/b/c", "/a/b/", "/a/../b", "\udcff", "/a\0/b", "/" * 50]
)
def test_every_walk_ends(text: str) -> None:
    """None of these is a cgroup path below the root: the walk ends, with nothing to walk."""
    with hard_timeout(10):
        assert cgroup_ancestors(text) == []


def test_ancestors_nearest_first() -> None:
    assert cgroup_ancestors("/a/b/c") == ["/a/b/c", "/a/b", "/a"]
    assert cgroup_ancestors("/") == []


def test_proc_cgroup_paths_are_normalised() -> None:
    cgroups = parse_proc_cgroup(
        "12:memory:system.slice/x.service\n0::system.slice/x.service\n4:pids:/../outside\n3:cpu:/a//b\n"
    )
    assert cgroups.v2 == "/system.slice/x.service"
    assert cgroups.v1 == {"memory": "/system.slice/x.service"}  # the others name no cgroup here
    assert parse_proc_cgroup("0::/\n").v2 == "/"
    assert parse_proc_cgroup("0::/gone.scope (deleted)\n").v2 == "/gone.scope"


def test_host_refuses_to_build_a_directory_from_a_bad_path(tmp_path: Path) -> None:
    small_machine(tmp_path / "root")
    host = Host(tmp_path / "root")
    for bad in ("system.slice", "/a/../../etc", "/x//y"):
        with pytest.raises(Exception, match="not a cgroup path"):
            host.cgroup_v2_dir(bad)
        assert not host.cgroup_exists(bad)


TOTALPAGES = """
from pathlib import Path
from guardian.host import Host
from guardian.sample import Sample
from guardian.selection import totalpages_for
sample = Sample(Host(sys.argv[1]), 0)
for scope in sys.argv[2:]:
    print(scope, *totalpages_for(sample, scope, 4096), sep="|")
"""


def test_totalpages_walk_ends_for_any_scope(tmp_path: Path) -> None:
    """In a child with bounded memory: on a string without "/", the old walk grew a traceback by
    gigabytes within seconds."""
    small_machine(tmp_path / "root")
    scopes = ["system.slice/web.service", "system.slice", "nowhere", "/a/../b", "//"]
    done = python_bounded(TOTALPAGES, [str(tmp_path / "root"), *scopes])
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    sources = dict(line.split("|")[0::2] for line in done.stdout.decode().splitlines())
    assert sources == {
        "system.slice/web.service": f"memcg {WEB}",
        "system.slice": "global",
        "nowhere": "global",
        "/a/../b": "global",
        "//": "global",
    }


def test_omit_walk_ends_for_a_path_without_a_slash(tmp_path: Path) -> None:
    """The candidate's cgroup as an unnormalised /proc/PID/cgroup line used to give it."""
    small_machine(tmp_path / "root")
    policy = Policy(scorers={"cgroup_largest": 1.0})
    selector = Selector(policy, make_plugin_manager(None, entry_points=False))
    context = selector.context(Sample(Host(tmp_path / "root"), 0))
    for cgroup in ("system.slice/web.service", "system.slice", "x"):
        with hard_timeout(30):
            assert cgroup_largest.guardian_exclude(Candidate(kind="cgroup", cgroup=cgroup), context) is None


def test_relative_proc_cgroup_does_not_hang_rank(tmp_path: Path) -> None:
    root = small_machine(tmp_path / "root")
    root.write("/proc/200/cgroup", "0::system.slice/web.service\n")
    (tmp_path / "policy.toml").write_text("[scorers]\ncgroup_largest = 1.0\nkernel_badness = 1.0\n")
    done = guardian_bounded(
        ["rank", "--json", "--root", str(tmp_path / "root"), "--policy", str(tmp_path / "policy.toml")]
    )
    assert done.returncode == EXIT_OK, done.stderr.decode()
    web = next(c for c in json.loads(done.stdout)["candidates"] if c["pid"] == 200)
    assert web["cgroup"] == WEB


def test_scope_without_a_leading_slash(tmp_path: Path) -> None:
    small_machine(tmp_path / "root")
    done = guardian_bounded(["rank", "--json", "--scope", "system.slice", "--root", str(tmp_path / "root")])
    assert done.returncode == EXIT_OK, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["scope"] == "/system.slice"
    assert {c["pid"] for c in report["candidates"]} == {200, 201, 300}


# The scope tests run guardian in a bounded child: before scopes were checked, each of these
# scopes sent the totalpages walk into a loop that grows by gigabytes within seconds.


@pytest.mark.parametrize(
    ("text", "scope"), [("system.slice/", "/system.slice"), ("/", "/"), (WEB + "/", WEB)]
)
def test_scope_is_normalised(tmp_path: Path, text: str, scope: str) -> None:
    small_machine(tmp_path / "root")
    done = guardian_bounded(["rank", "--json", "--scope", text, "--root", str(tmp_path / "root")])
    assert done.returncode == EXIT_OK, done.stderr.decode()[-2000:]
    assert json.loads(done.stdout)["scope"] == scope


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("/nowhere.slice", "no such cgroup under"),
        ("system.slice//web.service", "an empty component"),
        ("/system.slice/../etc", "'..' component"),
        ("", "an empty cgroup path"),
    ],
)
def test_a_scope_that_names_no_cgroup_is_a_usage_error(tmp_path: Path, text: str, says: str) -> None:
    small_machine(tmp_path / "root")
    done = guardian_bounded(["rank", "--scope", text, "--root", str(tmp_path / "root")])
    err = done.stderr.decode()
    assert done.returncode == EXIT_USAGE, err[-2000:]
    assert err.startswith("guardian rank: --scope ") and says in err and err.count("\n") == 1


def test_oom_group_walk_ends_for_any_string(tmp_path: Path) -> None:
    """Selector._with_oom_group walks up through host.cgroup_ancestors(): it ends for any
    string, and one that is not a cgroup path has no ancestors to walk."""
    root = small_machine(tmp_path / "root")
    root.write(f"{v2_dir(root, WEB)}/memory.oom.group", "1\n")  # what the walk would find
    sample = Sample(Host(tmp_path / "root"), 0)
    (process,) = (p for p in sample.processes if p.pid == 200)
    selector = Selector(Policy(), make_plugin_manager(None, entry_points=False))
    context = selector.context(sample)
    found = selector._with_oom_group(
        sample, context, Candidate(kind="process", cgroup=WEB, process=process), None, ()
    )
    assert found.kill_group == WEB  # the walk from the real path finds the oom.group
    for cgroup in ("system.slice/web.service", "system.slice", "x", "/a/../b", "\udcff"):
        with hard_timeout(30):
            walked = selector._with_oom_group(
                sample, context, Candidate(kind="process", cgroup=cgroup, process=process), None, ()
            )
        assert walked.kill_group is None
