"""bash and zsh completion: made by scripts/gen_packaging.py from the argument parser, committed
under packaging/completion/, and run: the bash function is called the way bash calls it
(COMP_WORDS, COMP_CWORD) and its COMPREPLY read back."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from support.generator import REPO, out_of_date

from guardian import cli

BASH = REPO / "packaging" / "completion" / "guardian.bash"
ZSH = REPO / "packaging" / "completion" / "_guardian"

# source the script, set the line, call the function bash would call, print what it offers
CALL = """
source "$1"
shift
COMP_WORDS=("$@")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
complete -p guardian >&2
_guardian
((${#COMPREPLY[@]} == 0)) || printf '%s\\n' "${COMPREPLY[@]}"
"""


def complete(line: Sequence[str], cwd: Path = REPO) -> list[str]:
    """What the completion offers for the last word of ``line`` (the word being typed)."""
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", CALL, "bash", str(BASH), *line],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "complete -F _guardian guardian\n"  # registered, and nothing else said
    return sorted(result.stdout.splitlines())


def parser_commands() -> dict[str, list[str]]:
    """Each command and its options (``-h``, ``--help`` included), as the parser has them."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {name: sorted(o for a in p._actions for o in a.option_strings) for name, p in sub.choices.items()}


@pytest.mark.parametrize("script", [BASH, ZSH], ids=lambda p: p.name)
def test_committed_completion_is_what_the_parser_makes(script: Path) -> None:
    assert not out_of_date(script), out_of_date(script)


def test_commands() -> None:
    assert complete(["guardian", ""]) == sorted(parser_commands())
    assert complete(["guardian", "r"]) == ["rank", "record", "replay", "run"]
    assert complete(["guardian", "--"]) == ["--help", "--version"]


@pytest.mark.parametrize("command", sorted(parser_commands()))
def test_options_of_each_command(command: str) -> None:
    options = parser_commands()[command]
    assert complete(["guardian", command, "-"]) == options
    assert complete(["guardian", "--version", command, "--"]) == [o for o in options if o.startswith("--")]


def test_rank_options() -> None:
    assert complete(["guardian", "rank", "--"]) == [
        "--explain", "--help", "--interval", "--json", "--mode", "--policy", "--root", "--scope", "--top", "--wide",
    ]  # fmt: skip
    assert complete(["guardian", "rank", "--json", "--w"]) == ["--wide"]
    assert complete(["guardian", "rank", "--mode", ""]) == ["cgroup", "process"]
    assert complete(["guardian", "rank", "--mode", "c"]) == ["cgroup"]
    assert complete(["guardian", "rank", "--top", ""]) == []  # a number to type


@pytest.fixture
def files(tmp_path: Path) -> Path:
    here = tmp_path / "here"
    (here / "sub").mkdir(parents=True)
    for name in ("a.toml", "b.toml", "sub/c.toml"):
        (here / name).write_text("")
    return here


@pytest.mark.parametrize("command", ["run", "check", "rank"])
def test_policy_completes_files(files: Path, command: str) -> None:
    assert complete(["guardian", command, "--policy", ""], cwd=files) == ["a.toml", "b.toml", "sub"]
    assert complete(["guardian", command, "--policy", "a"], cwd=files) == ["a.toml"]
    assert complete(["guardian", command, "--policy", "sub/"], cwd=files) == ["sub/c.toml"]


def test_the_trace_of_replay_completes_files(files: Path) -> None:
    assert complete(["guardian", "replay", ""], cwd=files) == ["a.toml", "b.toml", "sub"]
    assert complete(["guardian", "replay", "--json", "s"], cwd=files) == ["sub"]
    assert complete(["guardian", "replay", "--j"], cwd=files) == ["--json"]
    assert complete(["guardian", "record", "--out", "a"], cwd=files) == ["a.toml"]


def test_policy_after_an_equals_sign(files: Path) -> None:
    # bash splits "--policy=a" into "--policy", "=", "a" (COMP_WORDBREAKS holds "=")
    assert complete(["guardian", "run", "--policy", "="], cwd=files) == ["a.toml", "b.toml", "sub"]
    assert complete(["guardian", "run", "--policy", "=", "b"], cwd=files) == ["b.toml"]


def test_root_completes_directories(files: Path) -> None:
    assert complete(["guardian", "status", "--root", ""], cwd=files) == ["sub"]
    assert complete(["guardian", "run", "--dry-run", "--root", "s"], cwd=files) == ["sub"]


@pytest.fixture
def zsh() -> str:
    path = shutil.which("zsh")
    if path is None:
        pytest.skip("zsh is not installed; scripts/setup.sh installs it")
    return path


def test_zsh_reads_the_script(zsh: str) -> None:
    result = subprocess.run([zsh, "-n", str(ZSH)], capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode, result.stderr) == (0, "")


CAPTURE = REPO / "tests" / "support" / "zsh_capture.zsh"


def zsh_complete(line: str, cwd: Path, zsh: str) -> list[str]:
    """What zsh offers when Tab is pressed after ``line``: an interactive zsh on a
    pseudo-terminal, with the completion system and packaging/completion/ on its fpath."""
    out = cwd.parent / "matches"
    out.unlink(missing_ok=True)
    env = {**os.environ, "COMPDIR": str(ZSH.parent), "OUT": str(out), "TERM": "dumb", "HOME": str(cwd)}
    primary, secondary = pty.openpty()
    with subprocess.Popen(
        [zsh, "-f", "-i"], stdin=secondary, stdout=secondary, stderr=secondary, cwd=cwd, env=env
    ) as shell:
        os.close(secondary)
        os.write(primary, f"source {CAPTURE}\n{line}\t".encode())
        # the shell exits after the completion (comppostfuncs=exit); read its terminal meanwhile
        # so it never blocks on a full one
        while select.select([primary], [], [], 20)[0]:
            try:
                if not os.read(primary, 4096):
                    break
            except OSError:  # EIO: the shell has closed its side
                break
        os.close(primary)
        assert shell.wait(timeout=20) == 0
    return sorted(set(out.read_text().splitlines())) if out.exists() else []


def test_zsh_completes(files: Path, zsh: str) -> None:
    assert zsh_complete("guardian r", files, zsh) == ["rank", "record", "replay", "run"]
    assert zsh_complete("guardian replay ", files, zsh) == ["a.toml", "b.toml", "sub"]
    assert zsh_complete("guardian rank --", files, zsh) == [o for o in parser_commands()["rank"] if o != "-h"]
    assert zsh_complete("guardian rank --mode ", files, zsh) == ["cgroup", "process"]
    assert zsh_complete("guardian run --policy ", files, zsh) == ["a.toml", "b.toml", "sub"]
    assert zsh_complete("guardian check --policy=su", files, zsh) == ["sub"]
    assert zsh_complete("guardian status --root ", files, zsh) == ["sub"]
