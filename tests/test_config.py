"""Policy loading: good files give a typed Policy; every mistake names file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardian.cli import EXIT_CONFIG, main
from guardian.config import PolicyError, load_policy, parse_policy
from guardian.rules import Facts, unit_of

SRC = "/etc/guardian.toml"


def test_defaults() -> None:
    policy = parse_policy("", SRC)
    assert dict(policy.scorers) == {"kernel_badness": 1.0, "rules": 1.0}
    assert policy.protect == () and policy.plugins.budget_ms == 250.0


def test_full_ranking_policy() -> None:
    policy = parse_policy(
        """
[scorers]
kernel_badness = 1.0
kubelet_qos = 2

[[protect]]
unit = "^sshd\\\\.service$"

[[prefer]]
cmdline = "--type=renderer"
points = 200

[[avoid]]
exe = "^/usr/lib/postgresql/"
uid = 0

[plugins]
budget_ms = 100
entry_points = false
""",
        SRC,
    )
    assert dict(policy.scorers) == {"kernel_badness": 1.0, "kubelet_qos": 2.0}
    assert policy.prefer[0].points == 200.0 and policy.avoid[0].points == 300.0
    assert policy.avoid[0].label == "avoid[0]"
    assert policy.plugins.budget_ms == 100.0 and policy.plugins.entry_points is False
    facts = Facts(
        comm="postgres",
        cgroup="/system.slice/postgresql.service",
        uid=0,
        cmdline=lambda: "postgres -D /var/lib",
        exe=lambda: "/usr/lib/postgresql/15/bin/postgres",
    )
    assert policy.avoid[0].matches(facts)
    assert not policy.prefer[0].matches(facts)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "scorer = 1\n",
            f"{SRC}: scorer: unknown key (known here: avoid, cgroup, cooldown_s, dry_run, grace_s, hysteresis_pct, ignore, machine, plugins, poll, prefer, protect, scorers, self_oom_score_adj)",
        ),
        (
            "[scorers]\nkernel_badness = 'high'\n",
            f'{SRC}: scorers.kernel_badness: expected a number from -1000 to 1000, got "high"',
        ),
        (
            "[scorers]\nkernel_badness = 5000\n",
            f"{SRC}: scorers.kernel_badness: expected a number from -1000 to 1000, got 5000",
        ),
        ("[scorers]\n", f"{SRC}: scorers: name at least one scorer, e.g. kernel_badness = 1.0"),
        ("scorers = 3\n", f"{SRC}: scorers: expected a table, got a number"),
        (
            "[[prefer]]\ncomm = '(unclosed'\n",
            f"{SRC}: prefer[0].comm: bad regular expression: missing ), unterminated subpattern at position 0",
        ),
        (
            "[[prefer]]\ncomm = 'x'\n[[prefer]]\nname = 'y'\n",
            f"{SRC}: prefer[1].name: unknown key (known here: comm, cmdline, exe, cgroup, unit, uid, points)",
        ),
        (
            "[[protect]]\npoints = 1\n",
            f"{SRC}: protect[0].points: unknown key (known here: comm, cmdline, exe, cgroup, unit, uid)",
        ),
        (
            "[[avoid]]\n",
            f"{SRC}: avoid[0]: a avoid rule needs at least one of: comm, cmdline, exe, cgroup, unit, uid",
        ),
        (
            "[[avoid]]\ncomm = 7\n",
            f"{SRC}: avoid[0].comm: expected a regular expression (a string), got a number",
        ),
        (
            "[[prefer]]\ncomm = 'x'\npoints = -5\n",
            f"{SRC}: prefer[0].points: expected a number from 0 to 100000, got -5",
        ),
        ("protect = 'sshd'\n", f"{SRC}: protect: expected an array of tables ([[protect]]), got a string"),
        ("[plugins]\nbudget_ms = 0\n", f"{SRC}: plugins.budget_ms: expected a number from 1 to 60000, got 0"),
        (
            "[plugins]\nentry_points = 'yes'\n",
            f'{SRC}: plugins.entry_points: expected true or false, got "yes"',
        ),
        (
            "[plugins]\ndir = '/x'\n",
            f"{SRC}: plugins.dir: unknown key (known here: budget_ms, directory, entry_points)",
        ),
        (
            "[scorers\n",
            f"{SRC}: not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 9)",
        ),
    ],
)
def test_broken_policies(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, SRC)
    assert str(info.value) == message


def test_uid_as_integer_is_exact() -> None:
    rule = parse_policy("[[ignore]]\nuid = 0\n", SRC).ignore[0]
    root = Facts(comm="x", cgroup=None, uid=0, cmdline=lambda: None, exe=lambda: None)
    other = Facts(comm="x", cgroup=None, uid=1000, cmdline=lambda: None, exe=lambda: None)
    assert rule.matches(root) and not rule.matches(other)


def test_cmdline_and_exe_are_read_only_when_a_rule_needs_them() -> None:
    rule = parse_policy("[[prefer]]\ncomm = '^web$'\n", SRC).prefer[0]

    def boom() -> str:
        raise AssertionError("read")

    assert rule.matches(Facts(comm="web", cgroup=None, uid=1, cmdline=boom, exe=boom))


def test_unit_of() -> None:
    assert unit_of("/system.slice/nginx.service") == "nginx.service"
    assert unit_of("/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope") == "app-x.scope"
    assert unit_of("/user.slice/user-1000.slice") == "user-1000.slice"
    assert unit_of("/process_api/abc") is None
    assert unit_of(None) is None


def test_load_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such file"):
        load_policy(str(tmp_path / "missing.toml"))
    with pytest.raises(PolicyError, match="is a directory"):
        load_policy(str(tmp_path))
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(str(bad))


def test_rank_with_broken_policy_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scorers]\nkernel_badness = 'high'\n")
    assert main(["rank", "--policy", str(bad), "--root", str(tmp_path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert (
        err
        == f'guardian rank: {bad}: scorers.kernel_badness: expected a number from -1000 to 1000, got "high"\n'
    )
