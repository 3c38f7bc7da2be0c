"""Calling plugins: one helper, pluggy's order, one budget for every hook, every failure reported
as a PluginFailure, and nothing a plugin returns reaching guardian unchecked (hardening)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Optional

import pytest
from conftest import documented_keys, fixture_root, report_keys
from support.secure import root_only_dir, secure_base

from guardian.api import Candidate, PluginFailure, Policy, RankContext, Scorer, hookimpl
from guardian.cli import EXIT_OK, main
from guardian.config import parse_policy
from guardian.host import Host
from guardian.plugins import Plugins, make_plugin_manager
from guardian.ranking import Ranking
from guardian.sample import Sample
from guardian.selection import Selector

V2 = fixture_root("v2-systemd")


def rank(plugins: Plugins, policy: Optional[Policy] = None) -> Ranking:
    return Selector(policy or Policy(), plugins).rank(Sample(Host(V2), 0))


def excluder(name: str, **marker: bool) -> object:
    """A plugin that excludes every candidate, saying who it is."""

    class Plugin:
        @hookimpl(**marker)
        def guardian_exclude(self, candidate: Candidate) -> Optional[str]:
            return f"by {name}"

    Plugin.__name__ = name
    return Plugin()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Released at teardown, so that a plugin made to hang does not outlive its test for long."""
    event = threading.Event()
    yield event
    event.set()


def test_exclude_hooks_are_called_in_pluggys_order() -> None:
    plugins = make_plugin_manager(
        None,
        entry_points=False,
        extra=[
            excluder("plain"),
            excluder("first", tryfirst=True),
            excluder("last", trylast=True),
            excluder("newest"),
        ],
    )
    ranking = rank(plugins)
    assert ranking.ranked == ()
    by_plugins = [e for e in ranking.excluded if e.by.startswith("extra:")]
    assert by_plugins
    candidate = by_plugins[0].candidate
    # what pluggy's own call returns, in the order it called the implementations
    expected = plugins.manager.hook.guardian_exclude(candidate=candidate, context=ranking.context)
    assert expected == ["by first", "by newest", "by plain", "by last"]
    assert by_plugins[0].reason == "; ".join(expected)
    assert by_plugins[0].by == "extra:1:first"


class Slow:
    """Hangs on its first question until the gate opens (or 30 s pass)."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.asked = 0

    @hookimpl
    def guardian_exclude(self, candidate: Candidate, context: RankContext) -> Optional[str]:
        self.asked += 1
        if self.asked == 1:
            self.gate.wait(30)
        return None

    @hookimpl
    def guardian_scorers(self) -> list[Scorer]:
        return [Flat()]


class Flat(Scorer):
    name: ClassVar[str] = "flat"
    kinds: ClassVar[frozenset[str]] = frozenset({"process"})

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        return 1.0


def test_an_exclude_hook_has_the_same_budget_as_a_scorer(gate: threading.Event) -> None:
    """An exclude hook had no budget: one that hung blocked the kill."""
    policy = parse_policy(
        "[scorers]\nkernel_badness = 1.0\nflat = 1.0\n[plugins]\nbudget_ms = 50\n", "p.toml"
    )
    plugins = make_plugin_manager(None, entry_points=False, extra=[Slow(gate)])
    selector = Selector(policy, plugins)
    ranking = selector.rank(Sample(Host(V2), 0))
    assert ranking.ranked, "the ranking completes with the others"
    assert ranking.failures == (
        PluginFailure("extra:0:Slow", "flat.prepare", "not started: its earlier guardian_exclude is still running past its budget (hung)"),
        PluginFailure("extra:0:Slow", "guardian_exclude", "did not finish within its budget of 50 ms"),
    )  # fmt: skip
    again = selector.rank(Sample(Host(V2), 0))
    assert (
        PluginFailure(
            "extra:0:Slow",
            "guardian_exclude",
            "not started: its earlier guardian_exclude is still running past its budget (hung)",
        )
        in again.failures
    )


class Partial:
    """Excludes the first candidate it is asked about, then raises."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.first: Optional[Candidate] = None

    @hookimpl
    def guardian_exclude(self, candidate: Candidate) -> Optional[str]:
        if self.first is None:
            self.first = candidate
            return "asked first"
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (RuntimeError("boom"), "raised RuntimeError: boom"),
        (SystemExit(0), "raised SystemExit: 0"),
        (KeyboardInterrupt(), "raised KeyboardInterrupt"),
    ],
)
def test_a_failing_exclude_hook_is_that_plugins_failure_and_its_answers_stand(
    exc: BaseException, reason: str
) -> None:
    """A raising exclude hook was reported as a scorer named "NAME (guardian_exclude)", and a
    SystemExit from one ended ``guardian rank`` with exit 0 and no output."""
    partial = Partial(exc)
    ranking = rank(make_plugin_manager(None, entry_points=False, extra=[partial]))
    assert ranking.failures == (PluginFailure("extra:0:Partial", "guardian_exclude", reason),)
    assert [e.candidate for e in ranking.excluded if e.by == "extra:0:Partial"] == [partial.first]
    assert ranking.ranked


class BoolRaises:
    def __bool__(self) -> bool:
        raise SystemExit("truth")


class StrRaises(str):
    def __str__(self) -> str:
        raise SystemExit("text")


class Answers:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    @hookimpl
    def guardian_exclude(self, candidate: Candidate) -> object:
        return self.answer


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (BoolRaises(), "returned <"),
        (42, "returned 42 (int) for pid "),
        (b"bytes", "returned b'bytes' (bytes) for pid "),
        ("", "returned an empty reason for pid "),
        ("  ", "returned an empty reason for pid "),
    ],
)
def test_an_exclude_answer_that_is_not_a_reason_is_that_plugins_failure(answer: object, reason: str) -> None:
    """A reason whose __bool__ raised gave a traceback."""
    ranking = rank(make_plugin_manager(None, entry_points=False, extra=[Answers(answer)]))
    assert len(ranking.failures) == 1
    failure = ranking.failures[0]
    assert (failure.plugin, failure.hook) == ("extra:0:Answers", "guardian_exclude")
    assert failure.reason.startswith(reason)
    assert not any(e.by == "extra:0:Answers" for e in ranking.excluded)


def test_an_exclude_reason_reaches_guardian_as_a_plain_printable_str() -> None:
    ranking = rank(make_plugin_manager(None, entry_points=False, extra=[Answers(StrRaises("keep\nit"))]))
    assert ranking.failures == ()
    reasons = {e.reason for e in ranking.excluded if e.by == "extra:0:Answers"}
    assert reasons == {"keep\\nit"}
    assert all(type(r) is str for r in reasons)


# --- guardian_scorers, called when the plugin set is resolved ----------------------------------


class OffersBadly:
    def __init__(self, gate: Optional[threading.Event] = None, exc: Optional[BaseException] = None) -> None:
        self.gate = gate
        self.exc = exc

    @hookimpl
    def guardian_scorers(self) -> list[Scorer]:
        if self.gate is not None:
            self.gate.wait(30)
        if self.exc is not None:
            raise self.exc
        return []


def test_guardian_scorers_raising_system_exit_is_reported() -> None:
    plugins = make_plugin_manager(None, entry_points=False, extra=[OffersBadly(exc=SystemExit(5))])
    assert "kernel_badness" in plugins.scorers(Policy())
    assert plugins.errors == [
        "plugin extra:0:OffersBadly, guardian_scorers: raised SystemExit: 5; its scorers are not offered"
    ]


def test_guardian_scorers_that_hangs_is_cut_off(gate: threading.Event) -> None:
    policy = parse_policy("[plugins]\nbudget_ms = 50\n", "p.toml")
    plugins = make_plugin_manager(None, entry_points=False, extra=[OffersBadly(gate=gate)])
    assert "kernel_badness" in plugins.scorers(policy)
    assert plugins.errors == [
        "plugin extra:0:OffersBadly, guardian_scorers: did not finish within its budget of 50 ms; "
        "its scorers are not offered"
    ]


class NameRaises(Scorer):
    @property  # type: ignore[override]
    def name(self) -> str:
        raise SystemExit("named")


class OffersNameRaises:
    @hookimpl
    def guardian_scorers(self) -> list[Scorer]:
        return [NameRaises(), Flat()]


def test_a_scorer_whose_name_raises_is_refused_and_its_siblings_offered() -> None:
    plugins = make_plugin_manager(None, entry_points=False, extra=[OffersNameRaises()])
    available = plugins.scorers(Policy())
    assert available["flat"].plugin == "extra:0:OffersNameRaises"
    assert plugins.errors == [
        "plugin extra:0:OffersNameRaises, guardian_scorers: reading a scorer's name and kinds raised "
        "SystemExit: named; that scorer is not offered"
    ]


# --- the command line --------------------------------------------------------------------------


EXITS_IN_EXCLUDE = """
from guardian.api import hookimpl

@hookimpl
def guardian_exclude(candidate, context):
    raise SystemExit(0)
"""


@pytest.fixture
def exiting_plugin_dir() -> Iterator[Path]:
    if secure_base() is None:
        pytest.skip("accepted plugin trees need root and a root-only base directory such as /run")
    with root_only_dir() as path:
        directory = path / "plugins.d"
        directory.mkdir()
        directory.chmod(0o755)
        (directory / "exits.py").write_text(EXITS_IN_EXCLUDE)
        (directory / "exits.py").chmod(0o644)
        yield directory


def test_rank_reports_a_plugin_that_exits_in_a_hook(
    exiting_plugin_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f"[plugins]\ndirectory = {str(exiting_plugin_dir)!r}\nentry_points = false\n")
    argv = ["rank", "--json", "--explain", "--policy", str(policy), "--root", str(V2)]
    assert main(argv) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    plugin = f"file:{exiting_plugin_dir}/exits.py"
    assert report["failures"] == [
        {"plugin": plugin, "hook": "guardian_exclude", "reason": "raised SystemExit: 0"}
    ]
    assert report["candidates"]
    assert (
        f"plugin {plugin}, guardian_exclude: raised SystemExit: 0; "
        "not asked about the rest of this ranking's candidates"
    ) in report["explanation"]
    # the README documents the failure keys, now that there is one to see
    assert sorted(report_keys(report, maps=("scores", "weights", "why")) - documented_keys()) == []
    assert main([a for a in argv if a != "--json"]) == EXIT_OK  # the table shows the sentence too
    assert "raised SystemExit: 0; not asked about the rest" in capsys.readouterr().out
