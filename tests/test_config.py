"""Policy loading: good files give a typed Policy; every mistake names file, key and reason."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Optional, get_args

import pytest

from guardian import config
from guardian.cli import EXIT_CONFIG, main
from guardian.config import (
    DEFAULT_SCORERS,
    MAX_POLICY_BYTES,
    Amount,
    MachineRule,
    PluginSettings,
    Policy,
    PolicyError,
    PollSettings,
    PsiRule,
    load_policy,
    parse_policy,
)
from guardian.kinds import PsiKind, RuleAction
from guardian.rules import MAX_MATCH_BYTES, Facts, Pattern, Rule, unit_of, user_unit_of

SRC = "/etc/guardian.toml"


def test_defaults() -> None:
    policy = parse_policy("", SRC)
    assert dict(policy.scorers) == {"cause": 1.0, "rules": 1.0}
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
            f"{SRC}: scorer: unknown key (known here: avoid, cgroup, cooldown_s, dry_run, grace_s, hook, hysteresis_pct, ignore, machine, metrics, plugins, poll, prefer, protect, scorers, self_oom_score_adj)",
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
            f"{SRC}: prefer[0].comm: bad regular expression: missing ): (unclosed (RE2 syntax, no backreferences or lookaround: https://github.com/google/re2/wiki/Syntax)",
        ),
        (
            "[[prefer]]\ncomm = 'x'\n[[prefer]]\nname = 'y'\n",
            f"{SRC}: prefer[1].name: unknown key (known here: comm, cmdline, exe, cgroup, unit, user_unit, uid, points)",
        ),
        (
            "[[protect]]\npoints = 1\n",
            f"{SRC}: protect[0].points: unknown key (known here: comm, cmdline, exe, cgroup, unit, user_unit, uid)",
        ),
        (
            "[[avoid]]\n",
            f"{SRC}: avoid[0]: a avoid rule needs at least one of: comm, cmdline, exe, cgroup, unit, user_unit, uid",
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
            f"{SRC}: plugins.dir: unknown key (known here: budget_ms, directory, entry_points, settings)",
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


# --- who names a unit: the system manager, or a local user -------------------------------------

SHIPPED = Path(__file__).resolve().parent.parent / "etc" / "guardian.toml"
REPO = Path(__file__).resolve().parent.parent

# cgroups whose deepest unit-like name a local user chose: a user unit (systemd-run --user
# --unit=sshd), names below a Delegate=yes service, a container's own systemd
SPOOFED = [
    "/user.slice/user-1000.slice/user@1000.service/app.slice/sshd.service",
    "/user.slice/user-1000.slice/user@1000.service/app.slice/guardian.service",
    "/system.slice/foo.service/sshd.service",
    "/system.slice/foo.service/x/sshd.service",
    "/machine.slice/machine-c1.scope/payload/system.slice/systemd-journald.service",
]


def facts_in(cgroup: str) -> Facts:
    return Facts(comm="x", cgroup=cgroup, uid=1000, cmdline=lambda: "x", exe=lambda: "/usr/bin/x")


@pytest.mark.parametrize("cgroup", SPOOFED)
def test_user_chosen_unit_names_do_not_satisfy_the_shipped_protect_rule(cgroup: str) -> None:
    protect = load_policy(str(SHIPPED)).protect
    assert [r.label for r in protect if r.matches(facts_in(cgroup))] == []


@pytest.mark.parametrize(
    "cgroup",
    ["/system.slice/sshd.service", "/system.slice/dbus-broker.service", "/system.slice/guardian.service"],
)
def test_system_units_still_satisfy_the_shipped_protect_rule(cgroup: str) -> None:
    assert load_policy(str(SHIPPED)).protect[0].matches(facts_in(cgroup))


@pytest.mark.parametrize(
    ("cgroup", "unit", "user_unit"),
    [
        ("/system.slice/nginx.service", "nginx.service", None),
        ("/system.slice/foo.service/x/sshd.service", "foo.service", None),
        (SPOOFED[0], "user@1000.service", "sshd.service"),
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope",
            "user@1000.service",
            "app-x.scope",
        ),
        ("/user.slice/user-1000.slice/user@1000.service/init.scope", "user@1000.service", "init.scope"),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice", "user@1000.service", "app.slice"),
        ("/user.slice/user-1000.slice/user@1000.service", "user@1000.service", None),
        ("/user.slice/user-1000.slice/session-2.scope", "session-2.scope", None),
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-a1.scope",
            "cri-containerd-a1.scope",
            None,
        ),
        (
            "/kubepods.slice/kubepods-pod1.slice/cri-containerd-a1.scope/sub.service",
            "cri-containerd-a1.scope",
            None,
        ),
        ("/user.slice/user-1000.slice", "user-1000.slice", None),
        ("/init.scope", "init.scope", None),
        ("/process_api/abc", None, None),
        ("/process_api/sshd.service", None, None),  # not systemd's tree: whoever made it chose it
        ("/", None, None),
        (None, None, None),
        # only ASCII digits make a user manager (str.isdigit takes an Arabic-Indic one, U+0661)
        ("/user.slice/user-1.slice/user@\u0661.service/app.slice/a.service", "user@\u0661.service", None),
    ],
)
def test_units_of_a_cgroup(cgroup: Optional[str], unit: Optional[str], user_unit: Optional[str]) -> None:
    assert (unit_of(cgroup), user_unit_of(cgroup)) == (unit, user_unit)


def test_user_unit_rules_name_a_users_own_units() -> None:
    rule = parse_policy("[[prefer]]\nuser_unit = '^sshd\\.service$'\n", SRC).prefer[0]
    assert rule.matches(facts_in(SPOOFED[0]))
    assert not rule.matches(facts_in("/system.slice/sshd.service"))
    assert not rule.matches(facts_in(SPOOFED[2]))


# --- anything but a PolicyError is a bug -------------------------------------------------------

RE2_HINT = "(RE2 syntax, no backreferences or lookaround: https://github.com/google/re2/wiki/Syntax)"

HOSTILE = [
    ("grace_s = " + "1" * 400, "grace_s: expected a number from 0 to 600, got 111111111111... (400 digits)"),
    ("grace_s = -" + "1" * 400, "grace_s: expected a number from 0 to 600, got -11111111111... (400 digits)"),
    ("grace_s = inf", "grace_s: expected a number from 0 to 600, got inf"),
    ("grace_s = nan", "grace_s: expected a number from 0 to 600, got nan"),
    ("grace_s = 1979-05-27", "grace_s: expected a number from 0 to 600, got a date"),
    ("grace_s = [[1]]", "grace_s: expected a number from 0 to 600, got an array"),
    ("[scorers]\nrules = " + "9" * 400, "scorers.rules: expected a number from -1000 to 1000, got 999999999999... (400 digits)"),
    (
        "[machine]\nmem_available = { term = '" + "1" * 400 + "G' }",
        'machine.mem_available.term: "' + "1" * 80 + '... (401 characters)" is more memory than any machine has (at most 4T x 1024 = 2^52 bytes)',
    ),
    (
        "[machine]\nswap_free = { term = '" + "1" * 400 + "%' }",
        'machine.swap_free.term: expected a percentage from 0 to 100, got "' + "1" * 80 + '... (401 characters)"',
    ),
    ("[[prefer]]\ncomm = 'a{99999999999}'", f"prefer[0].comm: bad regular expression: bad repetition count {{99999999999}}: RE2 counts up to 1000 {RE2_HINT}"),
    ("[[prefer]]\ncomm = 'a{1001}'", f"prefer[0].comm: bad regular expression: invalid repetition size: {{1001}} {RE2_HINT}"),
    ("[[ignore]]\nuid = -1", "ignore[0].uid: expected a uid from 0 to 4294967294, got -1"),
    ("[[ignore]]\nuid = " + "9" * 40, "ignore[0].uid: expected a uid from 0 to 4294967294, got 999999999999... (40 digits)"),
    ("[[cgroup]]\nmatch = 'a/[z-a]'\npsi = {}", 'cgroup[0].match: bad glob "a/[z-a]": invalid character class range: z-a'),
    ("x = " + "[" * 3000 + "]" * 3000, "line 1: arrays, tables and inline tables nested more than 32 deep"),
    ("x = " + "{a = " * 3000 + "1" + "}" * 3000, "line 1: arrays, tables and inline tables nested more than 32 deep"),
    ("# a comment\nx.y = 1\n" + "a" + ".a" * 40 + " = 1", "line 3: a dotted key of more than 32 parts"),
    ("[" + "a." * 40 + "b]", "line 1: a dotted key of more than 32 parts"),
    ("grace_s = " + "1" * 5000, "not valid TOML: Exceeds the limit (4300 digits) for integer string conversion"),
    ('"a\\nb\\u001b[31m" = 1', 'a\\nb\\x1b[31m: unknown key (known here: avoid, cgroup, cooldown_s, dry_run, grace_s, hook, hysteresis_pct, ignore, machine, metrics, plugins, poll, prefer, protect, scorers, self_oom_score_adj)'),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), HOSTILE, ids=[m[:40] for _, m in HOSTILE])
def test_hostile_policies_raise_only_policy_error(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, SRC)
    assert str(info.value) == f"{SRC}: {message}"
    assert info.value.__cause__ is None  # a cause of its own, not the last-resort guard


def test_strings_inside_values_do_not_count_as_nesting() -> None:
    """The nesting scan skips strings and comments: brackets and dots in them are text."""
    deep = "[" * 100 + "." * 100
    text = (
        f'[[prefer]]\ncomm = \'{deep}x\'\ncmdline = "\\"{deep}"\n# {deep}\n'
        f'exe = \'\'\'{deep}\'\'\'\ncgroup = """a\\"""{deep}""""\n'
    )
    with pytest.raises(PolicyError, match=r"prefer\[0\]\.comm: bad regular expression: missing \]"):
        parse_policy(text, SRC)


def bounded(code: str, timeout_s: float = 20.0) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter. The bug these tests catch is a hang: the timeout makes it
    a failure instead of a stalled suite (subprocess.run kills the child it started)."""
    try:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not return within {timeout_s:g} s: {code[:200]}")


def test_a_long_dotted_key_is_refused_at_once() -> None:
    """tomllib is quadratic in the parts of one dotted key: 50 000 parts took 39 s."""
    result = bounded(
        "from guardian.config import PolicyError, parse_policy\n"
        "try:\n    parse_policy('a' + '.a' * 50000 + ' = 1', 'p.toml')\n"
        "except PolicyError as exc:\n    print(exc)\n"
    )
    assert result.stdout == "p.toml: line 1: a dotted key of more than 32 parts\n", result.stderr


def test_last_resort_guard_turns_any_other_exception_into_a_policy_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(data: object, source: str) -> object:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(config, "policy_from_dict", broken)
    with pytest.raises(PolicyError) as info:
        parse_policy("", SRC)
    assert (
        str(info.value)
        == f"{SRC}: cannot be read (ZeroDivisionError: division by zero); this is a bug in guardian"
    )
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_a_warning_while_loading_is_a_refusal_and_never_output(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    real = config.policy_from_dict

    def warns(data: Mapping[str, object], source: str) -> Policy:
        warnings.warn("Possible nested set at position 1", FutureWarning, stacklevel=1)
        return real(data, source)

    monkeypatch.setattr(config, "policy_from_dict", warns)
    with pytest.raises(PolicyError) as info:
        parse_policy("", SRC)
    assert str(info.value) == f"{SRC}: refused on a warning: Possible nested set at position 1"
    assert capfd.readouterr() == ("", "")


# --- regular expressions: RE2, bounded -----------------------------------------------------------


def test_a_backtracking_pattern_on_hostile_text_returns() -> None:
    """With Python's re, (a+)+$ against 32 "a" and a "!" runs for minutes, holding the GIL."""
    result = bounded(
        "from guardian.config import parse_policy\n"
        "from guardian.rules import Facts\n"
        "rule = parse_policy(\"[[prefer]]\\ncmdline = '(a+)+$'\\n\", 'p.toml').prefer[0]\n"
        "hostile = 'a' * 32 + '!'\n"
        "print(rule.matches(Facts('x', None, 0, lambda: hostile, lambda: None)))\n"
    )
    assert result.stdout == "False\n", result.stderr


def test_a_polynomial_glob_on_a_deep_cgroup_returns() -> None:
    """Eight ``**`` over a path 80 components deep: O(n^8) with re (40 deep took 5.8 s)."""
    result = bounded(
        "from guardian.config import parse_policy\n"
        "text = \"[[cgroup]]\\nmatch = '**/**/**/**/**/**/**/**/x'\\npsi = {}\\n\"\n"
        "rule = parse_policy(text, 'p.toml').cgroups[0]\n"
        "print(rule.matches('/' + 'a/' * 80 + 'b'), rule.matches('/' + 'a/' * 80 + 'x'))\n"
    )
    assert result.stdout == "False True\n", result.stderr


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a)\\1", "invalid escape sequence: \\1"),
        ("(?=x)", "invalid perl operator: (?="),
        ("x(?!y)", "invalid perl operator: (?!"),
        ("[[:alpha:]", "missing ]: [[:alpha:]"),  # re warned FutureWarning here, with a source line
        ("x\\Z", "invalid escape sequence: \\Z"),
        (
            "(?s).*a.{1000}c",
            "too complex for a rule: it compiles to 7013 RE2 instructions, at most 2000 (the cost of a match grows with them)",
        ),
    ],
)
def test_patterns_re2_refuses_are_policy_errors_and_stderr_stays_clean(
    pattern: str, reason: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(f"[[avoid]]\ncmdline = '{pattern}'\n", SRC)
    assert str(info.value) == f"{SRC}: avoid[0].cmdline: bad regular expression: {reason} {RE2_HINT}"
    assert capfd.readouterr() == ("", "")  # RE2 logs refused patterns to stderr unless told not to


def test_only_the_head_of_a_long_fact_is_matched() -> None:
    rules = parse_policy("[[prefer]]\ncmdline = 'TAIL$'\n[[prefer]]\ncmdline = '^HEAD'\n", SRC).prefer
    long = "HEAD" + "x" * MAX_MATCH_BYTES + "TAIL"
    facts = Facts(comm="x", cgroup=None, uid=0, cmdline=lambda: long, exe=lambda: None)
    assert [r.matches(facts) for r in rules] == [False, True]


def test_undecodable_bytes_in_a_name_match_as_one_character_each() -> None:
    """cgroup names are bytes, kept as surrogate escapes (os.fsdecode)."""
    rule = parse_policy("[[protect]]\nunit = '^a.b\\.service$'\n", SRC).protect[0]
    assert rule.matches(facts_in("/system.slice/a\udcffb.service"))
    assert rule.matches(facts_in("/system.slice/a\u00e9b.service"))
    assert not rule.matches(facts_in("/system.slice/a\udcff\udcfeb.service"))


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("system.slice/*.service", "system.slice/a\nb.service", True),
        ("a/**", "a/b\nc/d", True),
        ("a/[!x]", "a/y", True),
        ("a/[!x]b", "a//b", False),  # a negated class stays within a component
        ("a/[]x]", "a/]", True),
        ("a/[!]]", "a/]", False),
        ("a/[a-]", "a/-", True),
        ("a b+(c)", "a b+(c)", True),
        ("a.b", "axb", False),
    ],
)
def test_globs_run_on_re2(glob: str, path: str, matches: bool) -> None:
    rule = parse_policy(f'[[cgroup]]\nmatch = "{glob}"\npsi = {{}}\n', SRC).cgroups[0]
    assert rule.matches(path) is matches


# --- values that must be refused ---------------------------------------------------------------

REFUSED = [
    ("[poll]\nfill_rate = 0", "poll.fill_rate: 0 has no unit, so it is ambiguous: write '0%' for a percentage, '0M' for 0 MiB, or '0B' for bytes"),
    ("[poll]\nfill_rate = '0B'", 'poll.fill_rate: expected at least 1M (1048576 bytes) per second, got "0B"'),
    ("[poll]\nfill_rate = '0.0001K'", 'poll.fill_rate: expected at least 1M (1048576 bytes) per second, got "0.0001K"'),
    ("[poll]\nfill_rate = '512K'", 'poll.fill_rate: expected at least 1M (1048576 bytes) per second, got "512K"'),
    ("[machine]\nmem_available = { term = '18446744073709551616B' }", 'machine.mem_available.term: "18446744073709551616B" is more memory than any machine has (at most 4T x 1024 = 2^52 bytes)'),
    ("[machine]\nmem_available = { term = 10, kill = 5 }", "machine.mem_available.term: 10 has no unit, so it is ambiguous: write '10%' for a percentage, '10M' for 10 MiB, or '10B' for bytes"),
    ("[machine]\nmem_available = { term = '10' }", "machine.mem_available.term: 10 has no unit, so it is ambiguous: write '10%' for a percentage, '10M' for 10 MiB, or '10B' for bytes"),
    ("[machine]\nmem_available = { term = 2.5 }", "machine.mem_available.term: 2.5 has no unit, so it is ambiguous: write '2.5%' for a percentage, '2.5M' for 2.5 MiB, or '2.5B' for bytes"),
    ("[machine]\nmem_available = { term = '4 GB' }", "machine.mem_available.term: \"4 GB\" is ambiguous (GB is 1000^n bytes to some tools, 1024^n to others): write '4G' or '4GiB' (powers of 1024)"),
    ("[[cgroup]]\nmatch = 'a'\nmin_headroom = { term = '10mb' }", "cgroup[0].min_headroom.term: \"10mb\" is ambiguous (MB is 1000^n bytes to some tools, 1024^n to others): write '10M' or '10MiB' (powers of 1024)"),
    ("[[cgroup]]\nmatch = 'a'\nmin_headroom = { term = '4097T' }", 'cgroup[0].min_headroom.term: "4097T" is more memory than any machine has (at most 4T x 1024 = 2^52 bytes)'),
    ("[machine]\nmem_available = { term = -1 }", 'machine.mem_available.term: expected a percentage ("10%") or a size with its unit: K, M, G, T (powers of 1024; "512M" and "512MiB" are the same) or B for bytes ("4096B"), got -1: a size cannot be negative'),
    ("self_oom_score_adj = -999.9", "self_oom_score_adj: expected an integer from -1000 to 0, got -999.9"),
    ("self_oom_score_adj = -1000.0", "self_oom_score_adj: expected an integer from -1000 to 0, got -1000"),
    ("self_oom_score_adj = 1000", "self_oom_score_adj: expected an integer from -1000 to 0, got 1000"),
    ("self_oom_score_adj = 1", "self_oom_score_adj: expected an integer from -1000 to 0, got 1"),
    ("self_oom_score_adj = true", "self_oom_score_adj: expected an integer from -1000 to 0, got true"),
    ("[machine]\nmem_available = { term = '\u0665%' }", 'machine.mem_available.term: expected a percentage ("10%") or a size with its unit: K, M, G, T (powers of 1024; "512M" and "512MiB" are the same) or B for bytes ("4096B"), got "\u0665%"'),
    ("[machine]\nmem_available = { term = '\uff15G' }", 'machine.mem_available.term: expected a percentage ("10%") or a size with its unit: K, M, G, T (powers of 1024; "512M" and "512MiB" are the same) or B for bytes ("4096B"), got "\uff15G"'),
    ("[machine]\nmem_available = { term = '1\u212a' }", 'machine.mem_available.term: expected a percentage ("10%") or a size with its unit: K, M, G, T (powers of 1024; "512M" and "512MiB" are the same) or B for bytes ("4096B"), got "1\u212a"'),
    ("[plugins]\ndirectory = 'plugins.d'", 'plugins.directory: "plugins.d": expected an absolute path to a directory'),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), REFUSED, ids=[m[:40] for _, m in REFUSED])
def test_values_guardian_must_refuse(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, SRC)
    assert str(info.value) == f"{SRC}: {message}"


def test_sizes_are_exact_and_ascii() -> None:
    policy = parse_policy(
        "[machine]\nmem_available = { term = '1.5G', kill = ' 512 MiB ' }\nswap_free = { term = '4096B', kill = '1k' }\n"
        "[poll]\nfill_rate = '1M'\n",
        SRC,
    )
    assert policy.machine.mem_available.term == Amount(bytes=3 << 29)
    assert policy.machine.mem_available.kill == Amount(bytes=512 << 20)
    assert policy.machine.swap_free.kill == Amount(bytes=1024)
    assert policy.poll.fill_rate_bytes_per_s == 1 << 20
    assert parse_policy(
        "[machine]\nmem_available = { term = '4096T' }\n", SRC
    ).machine.mem_available.term == Amount(bytes=1 << 52)


def test_a_size_is_read_exactly_as_decimal_arithmetic_reads_it() -> None:
    """Sizes are read with integers alone (no decimal at start): the same bytes, rounded down,
    as exact decimal arithmetic gives, for fractions past 64 digits, thousands of digits (more
    than int() takes) and leading zeros."""
    import decimal
    import random

    from guardian.config import _UNITS, MAX_BYTES, _size_bytes

    exact = decimal.Context(prec=5000, traps=[decimal.InvalidOperation])

    def reference(number: str, unit: str) -> int:
        amount = exact.multiply(decimal.Decimal(number), decimal.Decimal(_UNITS[unit.upper()]))
        return int(amount) if amount <= MAX_BYTES else MAX_BYTES + 1

    rng = random.Random(7)
    numbers = ["0", "000", "0.5", "0001.0100", "4096", str(MAX_BYTES), str(MAX_BYTES + 1), "9" * 4400]
    numbers += ["0." + "9" * 90, "1." + "0" * 63 + "1", "4095.99999999999999999999999999999999999999999"]
    for _ in range(3000):
        whole = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20)))
        fraction = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 80)))
        numbers.append(f"{whole}.{fraction}" if fraction else whole)
    for number in numbers:
        for unit in ("", "K", "m", "G", "T"):
            assert _size_bytes(number, unit) == reference(number, unit), (number[:80], unit)


def test_plugin_directory_must_be_a_directory(tmp_path: Path) -> None:
    a_file = tmp_path / "plugin.py"
    a_file.write_text("")
    for path, reason in [
        (a_file, "not a directory"),
        (tmp_path / "missing", "cannot use it: No such file or directory"),
    ]:
        with pytest.raises(PolicyError) as info:
            parse_policy(f"[plugins]\ndirectory = '{path}'\n", SRC)
        assert str(info.value) == f'{SRC}: plugins.directory: "{path}": {reason}'
    assert parse_policy(f"[plugins]\ndirectory = '{tmp_path}'\n", SRC).plugins.directory == str(tmp_path)


# --- the policy file ---------------------------------------------------------------------------


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "guardian.toml"
    os.mkfifo(fifo)
    result = bounded(
        f"import sys\nfrom guardian.cli import main\nsys.exit(main(['check', '--policy', {str(fifo)!r}]))\n"
    )
    assert (result.returncode, result.stderr) == (
        EXIT_CONFIG,
        f"guardian check: {fifo}: is a FIFO, not a regular file\n",
    )


def test_a_policy_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * MAX_POLICY_BYTES + "\n")
    with pytest.raises(PolicyError) as info:
        load_policy(str(big))
    assert str(info.value) == f"{big}: larger than 1 MiB: not a policy file"
    with pytest.raises(PolicyError, match="is a character device, not a regular file"):
        load_policy(os.devnull)


# --- defaults written once ---------------------------------------------------------------------


@dataclass(frozen=True)
class OtherPsi(PsiRule):
    kind: PsiKind = "some"
    stall_pct: float = 12.5
    duration_s: float = 7.0


@dataclass(frozen=True)
class OtherPoll(PollSettings):
    min_interval_s: float = 0.5
    max_interval_s: float = 9.0
    fill_rate_bytes_per_s: int = 5 << 20


@dataclass(frozen=True)
class OtherPlugins(PluginSettings):
    entry_points: bool = False
    budget_ms: float = 99.0


@dataclass(frozen=True)
class OtherPolicy(Policy):
    grace_s: float = 1.5
    cooldown_s: float = 2.5
    hysteresis_pct: float = 3.5
    self_oom_score_adj: int = -17


@dataclass(frozen=True)
class OtherMachine(MachineRule):
    enabled: bool = False
    reclaim_window_s: Optional[float] = 11.0


@pytest.mark.parametrize(
    ("name", "replacement", "text", "read"),
    [
        ("PsiRule", OtherPsi, "[machine]\npsi = {}\n", lambda p: p.machine.psi),
        ("PollSettings", OtherPoll, "[poll]\n", lambda p: p.poll),
        ("PluginSettings", OtherPlugins, "[plugins]\n", lambda p: p.plugins),
        ("MachineRule", OtherMachine, "[machine]\n", lambda p: p.machine),
        ("Policy", OtherPolicy, "", lambda p: p),
    ],
)
def test_the_parser_reads_defaults_from_the_dataclasses(
    monkeypatch: pytest.MonkeyPatch, name: str, replacement: type, text: str, read: Callable[[Policy], object]
) -> None:
    """A default lives in its dataclass only: change it there and the parser follows."""
    monkeypatch.setattr(config, name, replacement)
    parsed = read(parse_policy(text, SRC))
    expected = replacement()
    for f in fields(replacement):
        if f.name != "source":
            assert getattr(parsed, f.name) == getattr(expected, f.name), f.name


def test_states_are_the_literal_types_of_guardian_kinds() -> None:
    assert get_args(PsiKind) == ("some", "full") and get_args(RuleAction) == ("process", "group")
    with pytest.raises(PolicyError) as info:
        parse_policy("[machine]\npsi = { kind = 'half' }\n", SRC)
    assert str(info.value) == f'{SRC}: machine.psi.kind: expected "some" or "full", got "half"'
    with pytest.raises(PolicyError) as info:
        parse_policy("[[cgroup]]\nmatch = 'x'\npsi = {}\naction = 7\n", SRC)
    assert str(info.value) == f'{SRC}: cgroup[0].action: expected "process" or "group", got 7'
    policy = parse_policy(
        "[machine]\npsi = { kind = 'some' }\n[[cgroup]]\nmatch = 'x'\npsi = {}\naction = 'group'\n", SRC
    )
    assert (
        policy.machine.psi is not None
        and policy.machine.psi.kind == "some"
        and policy.cgroups[0].action == "group"
    )


# --- read-only all the way down ------------------------------------------------------------------


def test_plugins_cannot_change_the_policy() -> None:
    policy = load_policy(str(SHIPPED))
    rule = policy.protect[0]
    attempts: list[Callable[[], object]] = [
        # (a lambda, not the bound method: the lookup of the missing .clear must raise below)
        lambda: rule.patterns.clear(),  # type: ignore[attr-defined]  # noqa: PLW0108 - see above
        lambda: rule.patterns.__setitem__("comm", Pattern("x")),  # type: ignore[attr-defined]
        lambda: policy.scorers.__setitem__("rules", 1000.0),  # type: ignore[attr-defined]
        lambda: policy.scorers.pop("rules"),  # type: ignore[attr-defined]
        lambda: policy.protect.append(rule),  # type: ignore[attr-defined]
        lambda: setattr(policy, "grace_s", 0.0),
        lambda: setattr(rule, "patterns", {}),
        lambda: setattr(rule.patterns["unit"], "pattern", "."),
        lambda: setattr(rule.patterns["unit"], "_regexp", None),
        lambda: setattr(policy.cgroups[0], "pattern", Pattern(".*")),
        lambda: DEFAULT_SCORERS.__setitem__("rules", 0.0),  # type: ignore[attr-defined]
    ]
    for attempt in attempts:
        with pytest.raises((AttributeError, TypeError)):
            attempt()
    assert rule.matches(facts_in("/system.slice/sshd.service"))
    assert dict(policy.scorers) == {"cause": 1.0, "rules": 1.0}


def test_a_policy_built_in_code_is_read_only_too() -> None:
    policy = Policy(scorers={"rules": 1.0}, prefer=[Rule(kind="prefer", patterns={"comm": Pattern("x")})])  # type: ignore[arg-type]
    assert isinstance(policy.scorers, MappingProxyType) and isinstance(policy.prefer, tuple)
    assert isinstance(policy.prefer[0].patterns, MappingProxyType)
    assert replace(policy, dry_run=True).scorers == {"rules": 1.0}
