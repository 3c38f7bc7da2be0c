"""guardian(8) and guardian.toml(5): made by scripts/gen_packaging.py from the argument parser
and the shipped policy's comments, committed under packaging/man/, and rendered by man without a
warning.

The committed pages must be what the generator makes now: a new option, a changed help text, a
changed README exit code or policy comment fails here until the pages are made again.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.generator import REPO, gen, out_of_date

from guardian import cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GUARDIAN_8 = REPO / "packaging" / "man" / "guardian.8"
GUARDIAN_TOML_5 = REPO / "packaging" / "man" / "guardian.toml.5"
PAGES = [GUARDIAN_8, GUARDIAN_TOML_5]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_committed_page_is_what_the_sources_make(page: Path) -> None:
    assert not out_of_date(page), out_of_date(page)


def test_a_new_option_reaches_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    def parser() -> object:
        built = real()
        sub = next(a for a in built._actions if a.dest == "command")
        sub.choices["run"].add_argument("--frobnicate", metavar="N", default=3, help="frobnicate N times")
        return built

    real = cli.build_parser
    monkeypatch.setattr(gen.cli, "build_parser", parser)
    page = gen.outputs()[GUARDIAN_8]
    assert r"\fB\-\-frobnicate\fR \fIN\fR" in page
    assert "frobnicate N times; default 3" in page
    assert ".OP \\-\\-frobnicate N" in page


def test_a_changed_policy_comment_reaches_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "default_policy.toml"
    text = gen.POLICY.read_text()
    policy.write_text(text.replace("# Decide and report every kill", "# Decide, report and log every kill"))
    monkeypatch.setattr(gen, "POLICY", policy)
    assert "Decide, report and log every kill" in gen.guardian_toml_5()


def test_an_undocumented_key_stops_the_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "default_policy.toml"
    policy.write_text(gen.POLICY.read_text().replace("grace_s = 5.0\n", "grace_s = 5.0\n\nsurprise = 1\n"))
    monkeypatch.setattr(gen, "POLICY", policy)
    with pytest.raises(gen.SourceError, match=r"line \d+: 'surprise = 1' has no comment above it"):
        gen.guardian_toml_5()


def test_exit_codes_come_from_readme_and_match_the_code() -> None:
    readme = (REPO / "README.md").read_text()
    codes = [code for code, _ in gen.exit_codes(readme)]
    assert sorted(codes, key=int) == sorted(
        str(getattr(cli, name)) for name in dir(cli) if name.startswith("EXIT_")
    )
    with pytest.raises(gen.SourceError, match="codes"):
        gen.exit_codes(re.sub(r"^\| 78 \|.*\n", "", readme, flags=re.MULTILINE))


def test_help_that_names_a_default_must_match_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def parser() -> object:
        built = real()
        sub = next(a for a in built._actions if a.dest == "command")
        sub.choices["status"].add_argument("--every", type=float, default=2.0, help="look (default 5)")
        return built

    real = cli.build_parser
    monkeypatch.setattr(gen.cli, "build_parser", parser)
    with pytest.raises(gen.SourceError, match="the help says default 5, the parser 2"):
        gen.outputs()


def section(page: str, name: str) -> str:
    m = re.search(rf"^\.SH {name}\n(.*?)(?=^\.SH )", page, flags=re.MULTILINE | re.DOTALL)
    assert m is not None, name
    return m.group(1)


def environment_variables() -> set[str]:
    """Every environment variable the package reads: os.environ[...] and .get(...) on an
    environment mapping, and module constants named *_ENV."""
    names: set[str] = set()
    for path in (REPO / "guardian").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
                key = node.slice
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and re.search(r"(environ|env)$", ast.unparse(node.func.value))
                and node.args
            ):
                key = node.args[0]
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.endswith("_ENV") for t in node.targets
            ):
                key = node.value
            else:
                continue
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
    return names


def test_every_environment_variable_guardian_reads_is_in_the_page() -> None:
    names = environment_variables()
    assert {
        "GUARDIAN_LOG_FORMAT",
        "GUARDIAN_DISABLE_PLUGIN_AUTOLOAD",
        "NOTIFY_SOCKET",
    } <= names  # the scan works
    documented = section(GUARDIAN_8.read_text(), "ENVIRONMENT").replace("\\-", "-")
    assert sorted(n for n in names if n not in documented) == []


def test_every_command_and_option_is_in_guardian_8() -> None:
    page = GUARDIAN_8.read_text().replace("\\-", "-")
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        assert f".SS {name}\n" in page
        for action in command._actions:
            for option in action.option_strings:
                assert f"\\fB{option}\\fR" in page, (name, option)
            if not action.option_strings and action.metavar:  # an operand: replay FILE
                section = page.split(f".SS {name}\n", 1)[1].split(".SS ", 1)[0]
                assert f".TP\n\\fI{action.metavar}\\fR\n{action.help}" in section, (name, action.metavar)


def test_every_key_of_the_shipped_policy_is_in_guardian_toml_5() -> None:
    text = gen.POLICY.read_text()
    page = GUARDIAN_TOML_5.read_text().replace("\\-", "-")
    shipped = tomllib.loads(text)
    keys = {k for k, v in shipped.items() if not isinstance(v, (dict, list))}
    keys |= {k for v in shipped.values() if isinstance(v, dict) for k in v}
    keys |= set(re.findall(r"^# ([a-z_]+) = ", text, flags=re.MULTILINE))  # commented-out keys
    for key in sorted(keys):
        assert re.search(rf"(\\fB{key}\\fR|^{key}) = ", page, flags=re.MULTILINE), key
    for table in ("machine", "scorers", "plugins", "poll", "metrics"):
        assert f".SS [{table}]\n" in page


def _render(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_man_renders_the_page_without_warnings(page: Path) -> None:
    if shutil.which("man") is None:
        pytest.skip("man (Debian package man-db) is not installed; scripts/setup.sh installs it")
    result = _render(["man", "--warnings", "-l", "-P", "cat", str(page)])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(page.stem.upper())
    assert "NAME" in result.stdout and "SEE ALSO" in result.stdout


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_groff_finds_nothing_to_warn_about(page: Path) -> None:
    """Every groff warning (-ww), tables included (-t): a stricter reading than man's default."""
    if shutil.which("groff") is None:
        pytest.skip("groff (Debian package groff-base) is not installed; scripts/setup.sh installs it")
    result = _render(["groff", "-t", "-man", "-Tutf8", "-ww", "-z", str(page)])
    assert (result.returncode, result.stderr) == (0, "")
