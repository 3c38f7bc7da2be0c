"""``guardian check``: the shipped policy is valid and documented; broken ones fail with exact
messages and exit code 78."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import pytest

import guardian
from guardian.cli import EXIT_CONFIG, EXIT_OK, main
from guardian.config import BUILT_IN, builtin_policy, glob_to_regex, load_policy
from guardian.rules import FIELDS, Pattern

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHIPPED = Path(__file__).parent.parent / "etc" / "guardian.toml"
V2 = Path(__file__).parent / "fixtures" / "v2-systemd"


def test_shipped_policy_is_valid(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check", "--policy", str(SHIPPED), "--root", str(tmp_path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith(f"{SHIPPED}: valid: machine: MemAvailable 10%/5%")
    policy = load_policy(str(SHIPPED))
    assert policy.machine.psi is not None and not policy.dry_run
    assert [r.match for r in policy.cgroups] == ["system.slice/*.service"]


def test_built_in_defaults_are_the_shipped_policy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """One source: with no policy file guardian runs the shipped one, sshd protected and all."""
    assert builtin_policy() == dataclasses.replace(load_policy(str(SHIPPED)), source=BUILT_IN)
    assert SHIPPED.resolve() == Path(guardian.__file__).parent / "default_policy.toml"
    # check and rank without --policy, on a root without /etc/guardian.toml: the built-in policy
    assert main(["check", "--root", str(tmp_path)]) == EXIT_OK
    assert capsys.readouterr().out.startswith("built-in defaults: valid: machine: MemAvailable 10%/5%")
    assert main(["rank", "--json", "--interval", "0", "--root", str(V2)]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == {"cause": 1.0, "rules": 1.0}
    service = "/system.slice/sshd.service"
    sshd = [e for e in report["excluded"] if e["cgroup"] == service]
    assert sshd and sshd[0]["reason"].startswith("protected by policy protect[0]")
    assert all(c["cgroup"] != service for c in report["candidates"])  # (users' sessions are not it)


def keys_of(value: object, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else k
            keys.add(path)
            keys |= keys_of(v, path)
    elif isinstance(value, list):
        for item in value:
            keys |= keys_of(item, prefix)
    return keys


def test_every_policy_key_is_documented_in_the_shipped_file() -> None:
    """Every key the loader knows appears in etc/guardian.toml, set or in a commented example."""
    text = SHIPPED.read_text()
    uncommented = "\n".join(line[2:] if line.startswith("# ") else line for line in text.splitlines())
    # what the shipped file sets, and what its commented examples would set
    documented = keys_of(tomllib.loads(text))
    for block in re.findall(r"(?:^# \[\[?[a-z_.]+\]\]?\n(?:^# [a-z_]+ = .*\n)+)", text, flags=re.MULTILINE):
        documented |= keys_of(tomllib.loads("\n".join(line[2:] for line in block.splitlines())))
    known = {
        "dry_run", "grace_s", "cooldown_s", "hysteresis_pct", "self_oom_score_adj",
        "machine", "machine.enabled", "machine.mem_available", "machine.mem_available.term",
        "machine.mem_available.kill", "machine.swap_free", "machine.swap_free.term",
        "machine.swap_free.kill", "machine.psi", "machine.psi.kind", "machine.psi.stall_pct",
        "machine.psi.duration_s", "machine.reclaim_window_s",
        "cgroup", "cgroup.match", "cgroup.min_headroom", "cgroup.min_headroom.term",
        "cgroup.min_headroom.kill", "cgroup.psi", "cgroup.psi.kind", "cgroup.psi.stall_pct",
        "cgroup.psi.duration_s", "cgroup.events", "cgroup.action",
        "scorers", "protect", "protect.unit", "ignore", "ignore.comm", "prefer", "prefer.cmdline",
        "prefer.points", "avoid", "avoid.comm", "avoid.points", "avoid.user_unit", "avoid.uid",
        "plugins", "plugins.entry_points", "plugins.directory", "plugins.budget_ms", "plugins.settings",
        "poll", "poll.min_interval_s", "poll.max_interval_s", "poll.fill_rate",
        "metrics", "metrics.listen", "metrics.allow_remote", "metrics.textfile",
        "metrics.textfile_interval_s", "metrics.max_cgroups",
    }  # fmt: skip
    missing = sorted(k for k in known - documented if k.rsplit(".", 1)[-1] not in uncommented)
    assert missing == []
    for event in ("high_per_s", "max_per_s", "oom_per_s"):
        assert event in text


SRC = "bad.toml"

BROKEN = [
    ("dry_run = 'yes'\n", 'dry_run: expected true or false, got "yes"'),
    ("grace_s = -1\n", "grace_s: expected a number from 0 to 600, got -1"),
    ("cooldown = 5\n", "cooldown: unknown key (known here: avoid, cgroup, cooldown_s, dry_run, grace_s, hysteresis_pct, ignore, machine, metrics, plugins, poll, prefer, protect, scorers, self_oom_score_adj)"),
    ("[machine]\nmem_available = { term = '110%' }\n", 'machine.mem_available.term: expected a percentage from 0 to 100, got "110%"'),
    ("[machine]\nmem_available = { term = 'lots' }\n", 'machine.mem_available.term: expected a percentage ("10%") or a size with its unit: K, M, G, T (powers of 1024; "512M" and "512MiB" are the same) or B for bytes ("4096B"), got "lots"'),
    ("[machine]\nmem_available = { term = '5%', kill = '10%' }\n", "machine.mem_available.kill: the KILL level (10%) must not be above the TERM level (5%)"),
    ("[machine]\nswap_free = { term = '1G', kill = '5%' }\n", "machine.swap_free.kill: give term and kill in the same unit (both % or both sizes)"),
    ("[machine]\nmem_available = { trem = '5%' }\n", "machine.mem_available.trem: unknown key (known here: kill, term)"),
    ("[machine]\npsi = { kind = 'half' }\n", 'machine.psi.kind: expected "some" or "full", got "half"'),
    ("[machine]\npsi = { stall_pct = 0 }\n", "machine.psi.stall_pct: expected a number from 0.1 to 100, got 0"),
    ("[machine]\nreclaim_window_s = 'long'\n", 'machine.reclaim_window_s: expected a number from 0 to 3600, got "long"'),
    ("[[cgroup]]\nmin_headroom = { term = '5%' }\n", 'cgroup[0].match: expected a glob over cgroup paths, e.g. "system.slice/*.service"'),
    ("[[cgroup]]\nmatch = 'a/[b'\nmin_headroom = { term = '5%' }\n", 'cgroup[0].match: bad glob "a/[b": unclosed [ in glob'),
    ("[[cgroup]]\nmatch = 'system.slice/*'\n", "cgroup[0]: a cgroup rule needs at least one of min_headroom, psi, events"),
    ("[[cgroup]]\nmatch = 'x'\nevents = {}\n", "cgroup[0].events: give at least one of high_per_s, max_per_s, oom_per_s"),
    ("[[cgroup]]\nmatch = 'x'\nevents = { oom_per_s = -1 }\n", "cgroup[0].events.oom_per_s: expected a number from 0 to 1e+09, got -1"),
    ("[[cgroup]]\nmatch = 'x'\npsi = {}\naction = 'nuke'\n", 'cgroup[0].action: expected "process" or "group", got "nuke"'),
    ("[[cgroup]]\nmatch = 'x'\npsi = {}\n[[cgroup]]\nmatch = 'y'\nheadroom = 1\n", "cgroup[1].headroom: unknown key (known here: action, events, match, min_headroom, psi)"),
    ("[poll]\nmin_interval_s = 2\nmax_interval_s = 1\n", "poll.min_interval_s: must not be above max_interval_s"),
    ("[poll]\nfill_rate = '50%'\n", 'poll.fill_rate: expected a size per second ("4G"), not a percentage'),
    ("[[prefer]]\ncmdline = '*x'\n", "prefer[0].cmdline: bad regular expression: no argument for repetition operator: * (RE2 syntax, no backreferences or lookaround: https://github.com/google/re2/wiki/Syntax)"),
    # each of these once ended in a traceback and exit 1 (OverflowError, RecursionError, ...)
    ("grace_s = " + "1" * 400 + "\n", "grace_s: expected a number from 0 to 600, got 111111111111... (400 digits)"),
    ("[machine]\nmem_available = { term = '" + "9" * 400 + "G' }\n", 'machine.mem_available.term: "' + "9" * 80 + '... (401 characters)" is more memory than any machine has (at most 4T x 1024 = 2^52 bytes)'),
    ("[[prefer]]\ncomm = 'a{99999999999}'\n", "prefer[0].comm: bad regular expression: bad repetition count {99999999999}: RE2 counts up to 1000 (RE2 syntax, no backreferences or lookaround: https://github.com/google/re2/wiki/Syntax)"),
    ("[[prefer]]\ncmdline = '(?!x)'\n", "prefer[0].cmdline: bad regular expression: invalid perl operator: (?! (RE2 syntax, no backreferences or lookaround: https://github.com/google/re2/wiki/Syntax)"),
    ("x = " + "[" * 3000 + "]" * 3000 + "\n", "line 1: arrays, tables and inline tables nested more than 32 deep"),
    ("[poll]\nfill_rate = 0\n", "poll.fill_rate: 0 has no unit, so it is ambiguous: write '0%' for a percentage, '0M' for 0 MiB, or '0B' for bytes"),
    ("self_oom_score_adj = 1000\n", "self_oom_score_adj: expected an integer from -1000 to 0, got 1000"),
    ("[scorers]\nkernel_badness = 1\nnot_a_scorer = 1\n", "scorers.not_a_scorer: no scorer named 'not_a_scorer' (available: cause, cgroup_largest, example_swap, kernel_badness, kubelet_qos, rules)"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BROKEN, ids=[m.split(":")[0][:40] for _, m in BROKEN])
def test_check_rejects_broken_policies(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    message: str,
) -> None:
    path = tmp_path / SRC
    path.write_text(text)
    if "not_a_scorer" not in text:
        monkeypatch.setenv("GUARDIAN_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert main(["check", "--policy", str(path), "--root", str(tmp_path)]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.err == f"guardian check: {path}: {message}\n"
    assert captured.out == ""


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("system.slice/*.service", "system.slice/nginx.service", True),
        ("system.slice/*.service", "system.slice/nginx.service/sub", False),
        ("system.slice/*.service", "system.slice/a.slice/b.service", False),
        ("kubepods.slice/**", "kubepods.slice/kubepods-burstable.slice/pod1.slice/c.scope", True),
        ("kubepods.slice/**/*.scope", "kubepods.slice/kubepods-pod1.slice/crio-1.scope", True),
        ("kubepods.slice/**/*.scope", "kubepods.slice/x.scope", True),
        ("user.slice/user-[0-9]*.slice", "user.slice/user-1000.slice", True),
        ("user.slice/user-[!0]*.slice", "user.slice/user-0.slice", False),
        ("a?c", "abc", True),
        ("a.c", "abc", False),
    ],
)
def test_globs(glob: str, path: str, matches: bool) -> None:
    assert Pattern(glob_to_regex(glob)).fullmatch(path) is matches


def test_every_rule_field_and_who_chooses_it_is_documented() -> None:
    """README's table says, for every field a rule can match, who chooses its value; the shipped
    file lists every field."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    shipped = SHIPPED.read_text()
    for name in FIELDS:
        assert re.search(rf"^\|[^|\n]*`{name}`[^|\n]*\| ", readme, flags=re.MULTILINE), name
        assert re.search(rf"^#   {name} ", shipped, flags=re.MULTILINE), name


def test_check_prints_a_path_as_valid_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A policy path with a byte that is not UTF-8 is printed escaped, never raw (found in
    review: the "valid" line wrote the byte as it is)."""
    name = os.fsdecode(b"policy-\xff.toml")
    (tmp_path / name).write_text("[machine]\nenabled = true\n")
    assert main(["check", "--policy", str(tmp_path / name), "--root", str(tmp_path)]) == EXIT_OK
    out = capsys.readouterr().out
    out.encode("utf-8")  # no lone surrogate: what reached stdout is UTF-8
    assert "policy-\\xff.toml: valid" in out
