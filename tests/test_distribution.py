"""The Python distribution: `python -m build` makes an sdist and a wheel named guardian-oom.

"guardian" on the Python package index is an unrelated project, so the distribution has a name
of its own; the import package and the command stay ``guardian``. The build runs on a copy of
the tracked files (setuptools writes build/ and *.egg-info beside the sources) and without build
isolation: offline, with the setuptools of the test environment.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import guardian

ROOT = Path(__file__).parent.parent


def tracked_copy(dest: Path) -> Path:
    """The files git tracks (as the working tree has them) copied under ``dest``."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, names):
        src = ROOT / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tracked_copy(tmp_path_factory.mktemp("tree"))
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


def test_build_makes_an_sdist_and_a_wheel_named_guardian_oom(built: Path) -> None:
    # setuptools before 69 keeps the hyphen in the sdist's name, later ones write an underscore
    names = sorted(p.name.replace("guardian-oom", "guardian_oom") for p in built.iterdir())
    version = guardian.__version__
    assert names == [f"guardian_oom-{version}-py3-none-any.whl", f"guardian_oom-{version}.tar.gz"]


def test_wheel_metadata_and_contents(built: Path) -> None:
    wheel = next(built.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
        info = f"guardian_oom-{guardian.__version__}.dist-info"
        meta = email.parser.Parser().parsestr(zf.read(f"{info}/METADATA").decode())
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert meta["Name"] == "guardian-oom"
    assert meta["Version"] == guardian.__version__  # one source: guardian.__version__
    requires = meta.get_all("Requires-Dist") or []
    assert any(r.startswith("pluggy") for r in requires)
    assert any(r.startswith("google-re2") for r in requires)
    # the command keeps its name, and the built-in policy travels with the package
    assert "guardian = guardian.cli:main" in entry_points
    assert "guardian/default_policy.toml" in files
    assert "guardian/cli.py" in files
    # nothing but the package: no tests, benchmarks or example plugins inside the wheel
    assert {f.split("/")[0] for f in files} == {"guardian", info}


def test_sdist_holds_the_sources_and_the_policy(built: Path) -> None:
    sdist = next(built.glob("*.tar.gz"))
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert "guardian/default_policy.toml" in names
    assert "pyproject.toml" in names
    assert "README.md" in names


def test_without_re2_guardian_says_what_to_install() -> None:
    """Debian does not package google-re2 (debian/README.Debian): its absence is a sentence."""
    run = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['re2'] = None; import guardian.cli"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: guardian needs the module re2 of google-re2 ")
    assert "pip install --break-system-packages google-re2" in last
