"""The Debian package, built by dpkg-buildpackage from a copy of this checkout (scripts/build_deb.sh)
and checked by lintian: what it installs, what dpkg keeps, what its maintainer scripts do.

About 8 s on the development machine (the build 5-6 s, lintian 2 s); skipped where Debian's
build tools are missing (scripts/setup.sh installs them).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import guardian

ROOT = Path(__file__).parent.parent
TOOLS = ("dpkg-buildpackage", "dh", "lintian", "dpkg-deb")

pytestmark = [
    pytest.mark.skipif(
        any(shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None for t in TOOLS)
        or not Path("/usr/share/perl5/Debian/Debhelper/Buildsystem/pybuild.pm").exists(),
        reason="needs debhelper, dh-python, pybuild-plugin-pyproject and lintian (scripts/setup.sh)",
    ),
    pytest.mark.skipif(
        shutil.which("git") is None or not (ROOT / ".git").exists(),
        reason="scripts/build_deb.sh copies the files git knows: needs a git checkout",
    ),
]


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_deb.sh"), "--lintian", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (found,) = out.glob("*.deb")
    return found


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("tree")
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    return tree


ARCH = subprocess.run(
    ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False
).stdout.strip()


def test_the_package_is_named_and_versioned_like_the_code(deb: Path) -> None:
    """Architecture-specific: it carries guardian._re2, the binding to Debian's libre2."""
    assert deb.name == f"guardian-oom_{guardian.__version__}_{ARCH}.deb"
    assert dpkg_deb("-f", str(deb), "Package", "Version", "Architecture").split() == [
        "Package:",
        "guardian-oom",
        "Version:",
        guardian.__version__,
        "Architecture:",
        ARCH,
    ]


def test_it_depends_on_debians_python_packages(deb: Path) -> None:
    depends = [d.strip() for d in dpkg_deb("-f", str(deb), "Depends").split(",")]
    assert "python3-pluggy" in depends
    assert "python3-systemd" in depends
    assert "python3-tomli | python3 (>> 3.11)" in depends  # tomllib from 3.11 on
    # Debian's RE2 library for the packaged binding; google-re2 is not in Debian
    assert [d.split()[0] for d in depends if "re2" in d] == ["libre2-9"]


def test_its_rules_run_on_the_packaged_binding_without_google_re2(unpacked: Path) -> None:
    """Debian's python3 with only the package's files: google-re2 is kept out even where pip put
    it, and the shipped policy's patterns compile, refuse and answer on libre2."""
    site = unpacked / "usr" / "lib" / "python3" / "dist-packages"
    script = (
        "import sys; sys.modules['re2'] = None; sys.path.insert(0, sys.argv[1])\n"
        "from guardian import rules; from guardian.config import load_policy\n"
        "policy = load_policy(sys.argv[2]); print(rules.ENGINE, rules.__file__.startswith(sys.argv[1]))\n"
        "p = rules.Pattern('(a+)+$'); print(p.search('a' * 32 + '!'), p.fullmatch('aaa'))\n"
        "try: rules.Pattern('(?=x)')\n"
        "except rules.PatternError as e: print(e)\n"
    )
    run = subprocess.run(
        ["/usr/bin/python3", "-c", script, str(site), str(unpacked / "etc" / "guardian.toml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.stdout.splitlines() == ["libre2 True", "False True", "invalid perl operator: (?="], run.stderr
    assert (site / "guardian" / f"_re2{sysconfig_suffix()}").is_file()
    assert not list(site.glob("guardian/*.cc"))  # the source stays in the source package


def sysconfig_suffix() -> str:
    """The extension suffix of Debian's python3 (the package is built for it, not for a venv's)."""
    return subprocess.run(
        ["/usr/bin/python3", "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_it_installs_the_service_the_policy_and_the_docs(unpacked: Path) -> None:
    for path in (
        "usr/bin/guardian",
        "usr/lib/python3/dist-packages/guardian/cli.py",
        "usr/lib/python3/dist-packages/guardian/default_policy.toml",
        "lib/systemd/system/guardian.service",
        "usr/lib/systemd/catalog/guardian.catalog",
        "usr/share/man/man8/guardian.8.gz",
        "usr/share/man/man5/guardian.toml.5.gz",
        "usr/share/bash-completion/completions/guardian",
        "usr/share/zsh/vendor-completions/_guardian",
        "usr/share/doc/guardian-oom/README.md",  # uncompressed: the unit's Documentation= names it
        "usr/share/doc/guardian-oom/README.Debian",
        "usr/share/doc/guardian-oom/copyright",
        "usr/share/doc/guardian-oom/examples/guardian.toml",
        "usr/share/doc/guardian-oom/examples/guardian-example-scorer/pyproject.toml",
    ):
        assert (unpacked / path).is_file(), path
    # a file, not the link etc/guardian.toml is in the checkout, and the shipped policy itself
    policy = unpacked / "etc" / "guardian.toml"
    assert not policy.is_symlink()
    assert policy.read_text() == (ROOT / "guardian" / "default_policy.toml").read_text()
    assert (unpacked / "DEBIAN" / "conffiles").read_text().split() == ["/etc/guardian.toml"]


def test_the_unit_runs_the_packaged_command_and_names_its_docs(unpacked: Path) -> None:
    shipped = (ROOT / "packaging" / "guardian.service").read_text().splitlines()
    unit = (unpacked / "lib" / "systemd" / "system" / "guardian.service").read_text().splitlines()
    changed = [(a, b) for a, b in zip(shipped, unit) if a != b]
    assert len(shipped) == len(unit)
    assert changed == [
        (
            "Documentation=man:guardian(8) man:guardian.toml(5)",
            "Documentation=man:guardian(8) man:guardian.toml(5) file:/usr/share/doc/guardian-oom/README.md",
        ),
        (
            "ExecStart=/usr/local/bin/guardian run --policy /etc/guardian.toml",
            "ExecStart=/usr/bin/guardian run --policy /etc/guardian.toml",
        ),
    ]


def test_the_maintainer_scripts_enable_start_and_restart_on_upgrade(unpacked: Path) -> None:
    postinst = (unpacked / "DEBIAN" / "postinst").read_text()
    assert "deb-systemd-helper enable 'guardian.service'" in postinst
    # a second configure ($2: the version before) restarts, a first one starts
    assert "_dh_action=restart" in postinst and "_dh_action=start" in postinst
    assert "deb-systemd-invoke $_dh_action 'guardian.service'" in postinst
    # the old guardian is not stopped before the unpack: it watches until the restart
    prerm = (unpacked / "DEBIAN" / "prerm").read_text()
    assert "deb-systemd-invoke stop 'guardian.service'" in prerm
    assert '[ "$1" = remove ]' in prerm


def test_a_version_can_be_built_from_the_same_tree(tmp_path: Path) -> None:
    """What the upgrade scenario of tests/e2e installs first: the same tree as another version."""
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_deb.sh"), "--version", "0.0.1", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (deb,) = tmp_path.glob("*.deb")
    assert deb.name == f"guardian-oom_0.0.1_{ARCH}.deb"
    tree = tmp_path / "tree"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    init = tree / "usr" / "lib" / "python3" / "dist-packages" / "guardian" / "__init__.py"
    assert '__version__ = "0.0.1"' in init.read_text()
