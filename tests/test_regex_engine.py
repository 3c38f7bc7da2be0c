"""The two RE2 engines rule patterns run on (guardian/regex_engine.py) answer alike.

guardian._re2 (guardian/_re2.cc, the Debian package's binding to the system's libre2) is built
here with the system's compiler into a temporary directory, and checked against google-re2 (what
pip installs): the same yes/no on every pattern and text, the same refusals, bytes that are not
UTF-8, wrong argument types, no leak; then the policy and rule tests run again in a child
interpreter whose rules use it. Skipped where g++ or libre2's headers are missing
(scripts/setup.sh installs them).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

import guardian
from guardian import regex_engine
from guardian.regex_engine import PatternSyntax

ROOT = Path(__file__).parent.parent
SOURCE = ROOT / "guardian" / "_re2.cc"

pytestmark = pytest.mark.skipif(
    shutil.which("g++") is None or not Path("/usr/include/re2/re2.h").exists(),
    reason="needs g++ and libre2-dev (scripts/setup.sh)",
)


@pytest.fixture(scope="module")
def binding_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the built guardian._re2, as the package build makes it (setup.py's
    flags, with warnings as errors)."""
    out = tmp_path_factory.mktemp("re2-binding")
    target = out / f"_re2{sysconfig.get_config_var('EXT_SUFFIX')}"
    run = subprocess.run(
        [
            "g++", "-shared", "-fPIC", "-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror",
            f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-lre2", "-o", str(target),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return out


@pytest.fixture(scope="module")
def engines(binding_dir: Path) -> dict[str, regex_engine.Compile]:
    """Both engines' compile: the built binding found through guardian's package path, as an
    installed one would be."""
    guardian.__path__.append(str(binding_dir))
    try:
        libre2 = regex_engine.libre2()
    finally:
        guardian.__path__.remove(str(binding_dir))
        sys.modules.pop("guardian._re2", None)  # loaded once, kept by compile_libre2 only
    google = regex_engine.google()
    assert libre2 is not None and google is not None
    return {"libre2": libre2, "google-re2": google}


PATTERNS = [
    "^(systemd|sshd|dbus-daemon|guardian)$",
    "(?i)^(chrom(e|ium)|firefox|java)",
    r"^/system\.slice/[^/]*\.service$",
    r"\.scope$",
    "^0$",
    "(a+)+$",
    "(x+x+)+y",
    r"\pL+",
    "[[:alpha:]]+[0-9]{2,4}",
    "^a.b$",
    "(?s)a.b",
    "é|ü",
    r"\x{FFFD}",
    "",
    "^$",
    "a|",
    r"\Qa.b\E",
    "kube(let|-proxy)?",
]

TEXTS = [
    "", "a", "aa", "a" * 32 + "!", "xxxxxxxxxxxxxxxxxxxxxxxxy", "systemd", "sshd: root@pts/0",
    "/system.slice/nginx.service", "/user.slice/user-1000.slice/session-2.scope", "0", "10",
    "a\nb", "a\u00e9b", "a\udcffb", "chromium --type=renderer", "CHROME", "ab12", "abc12345",
    "kubelet", "a.b", "axb", "\x00a\x00", "\ufffd", "é", "x" * 70000 + "kubelet",
]  # fmt: skip


def data(text: str) -> bytes:
    """The bytes rules.Pattern hands an engine (surrogate escapes as U+FFFD)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode("utf-8")


def test_both_engines_answer_alike_on_every_pattern_and_text(
    engines: dict[str, regex_engine.Compile],
) -> None:
    for pattern in PATTERNS:
        compiled = {name: compile_fn(pattern) for name, compile_fn in engines.items()}
        for text in TEXTS:
            raw = data(text)
            answers = {name: (r.search(raw), r.fullmatch(raw)) for name, r in compiled.items()}
            assert len(set(answers.values())) == 1, (pattern, text, answers)
            assert all(type(a) is bool for pair in answers.values() for a in pair)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a)\\1", "invalid escape sequence: \\1"),
        ("(?=x)", "invalid perl operator: (?="),
        ("x(?!y)", "invalid perl operator: (?!"),
        # RE2 releases quote lookbehind differently ("(?<" in Debian's 2022 libre2, "(?<!" later,
        # since they read "(?<name>" as a named group): the start is the same
        ("(?<!x)y", "invalid perl operator: (?<"),
        ("[[:alpha:]", "missing ]: [[:alpha:]"),
        ("(unclosed", "missing ): (unclosed"),
        ("*x", "no argument for repetition operator: *"),
        ("a{1001}", "invalid repetition size: {1001}"),
    ],
)
def test_both_engines_refuse_alike(
    engines: dict[str, regex_engine.Compile], pattern: str, reason: str, capfd: pytest.CaptureFixture[str]
) -> None:
    for compile_fn in engines.values():
        with pytest.raises(PatternSyntax) as info:
            compile_fn(pattern)
        assert str(info.value).startswith(reason) and len(str(info.value)) <= len(reason) + 1
    assert capfd.readouterr() == ("", "")  # neither logs the refusal itself


def test_program_sizes_agree(engines: dict[str, regex_engine.Compile]) -> None:
    """The cap on a pattern's size (rules.MAX_PROGRAM_SIZE) means the same on both: equal, but
    for Unicode classes, whose tables follow each RE2 release's Unicode version (``\\pL+``: 1198
    instructions in Debian's 2022 libre2, 1201 in google-re2 1.1 of 2025)."""
    for pattern in [*PATTERNS, "(?s).*a.{1000}c", "(?i)[a-z]+ü"]:
        sizes = [compile_fn(pattern).programsize for compile_fn in engines.values()]
        if "\\p" in pattern:
            assert max(sizes) - min(sizes) <= max(sizes) // 100, (pattern, sizes)
        else:
            assert len(set(sizes)) == 1, (pattern, sizes)


def test_the_binding_refuses_what_is_not_text_or_bytes(engines: dict[str, regex_engine.Compile]) -> None:
    compiled: Any = engines["libre2"]("a")
    for wrong in ("a", None, 1):
        with pytest.raises(TypeError):
            compiled.search(wrong)
        with pytest.raises(TypeError):
            compiled.fullmatch(wrong)
    assert compiled.search(bytearray(b"xa")) and compiled.search(memoryview(b"a"))
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate: rules.Pattern says so
        engines["libre2"]("\udcff")
    for not_text in (b"a", None, 1):
        with pytest.raises(TypeError):
            engines["libre2"](not_text)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        compiled.programsize = 1


def test_a_binding_that_cannot_load_is_an_error_not_a_silent_fallback(tmp_path: Path) -> None:
    """A package whose binding is there but broken (here: not a shared object at all; on a
    machine: its libre2 removed) says so at start instead of running on whatever else is found."""
    (tmp_path / f"_re2{sysconfig.get_config_var('EXT_SUFFIX')}").write_bytes(b"not an ELF file")
    guardian.__path__.append(str(tmp_path))
    try:
        with pytest.raises(ImportError) as info:
            regex_engine.libre2()
        assert not isinstance(info.value, ModuleNotFoundError)
        assert "_re2" in str(info.value)
    finally:
        guardian.__path__.remove(str(tmp_path))
        sys.modules.pop("guardian._re2", None)


def test_the_binding_keeps_no_memory_per_call(binding_dir: Path) -> None:
    """Refused and compiled patterns and matches leave no memory behind: the child's peak RSS
    grows by less than what a leak of one small object per call would take."""
    script = (
        "import resource, sys; sys.path.insert(0, sys.argv[1]); import _re2\n"
        "def work(n):\n"
        "    for i in range(n):\n"
        "        r = _re2.compile('^(a|b)+%d$' % (i % 50)); r.search(b'abab0'); r.fullmatch(b'x')\n"
        "        try: _re2.compile('(unclosed%d' % (i % 50))\n"
        "        except ValueError: pass\n"
        "work(20000)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "work(200000)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(binding_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    # 200000 rounds leaking even one 64-byte object each would be 12 MiB
    assert int(run.stdout) < 4096, f"peak RSS grew by {run.stdout.strip()} KiB"


def test_the_policy_and_rule_tests_pass_on_the_binding(binding_dir: Path) -> None:
    """The tests of patterns, globs, rules and policy refusals, again, in an interpreter whose
    rules were compiled by the binding (google-re2 kept out of it)."""
    script = (
        "import sys; sys.modules['re2'] = None\n"
        "import guardian; guardian.__path__.append(sys.argv[1])\n"
        "from guardian import rules; assert rules.ENGINE == 'libre2', rules.ENGINE\n"
        "import pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *sys.argv[2:]]))\n"
    )
    tests = [
        "tests/test_config.py",
        "tests/test_check.py",
        "tests/test_ranking.py",
        "tests/fuzz/test_fuzz_policy.py",
    ]
    run = subprocess.run(
        [sys.executable, "-c", script, str(binding_dir), *tests],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]
