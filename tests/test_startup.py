"""How ``guardian run`` decides, without importing importlib.metadata (and the email and
zipfile packages behind it), that no installed package offers a guardian plugin. Structural,
never timed: bench/startup.py measures the CPU time and the memory a start costs.
"""

from __future__ import annotations

import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from guardian import plugins

# --- deciding, without importlib.metadata, that no package declares a guardian entry point -------


def dist(site: Path, name: str, entry_points: str, directory: str = "") -> None:
    """An installed distribution's metadata directory (``NAME-1.0.dist-info`` by default)."""
    info = site / (directory or f"{name}-1.0.dist-info")
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


CONSOLE_SCRIPT = "[console_scripts]\nguardian = guardian.cli:main\n"


def found_by_importlib_metadata() -> bool:
    return any(True for _ in metadata.entry_points(group="guardian"))


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("nothing", False),
        ("console script only", False),
        ("a guardian entry point", True),
        ("a guardian entry point in an egg", True),
        ("an upper-case DIST-INFO", True),
        ("an egg-info directory", True),
        ("an empty group header", True),
    ],
)
def test_no_plugin_is_decided_as_importlib_metadata_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str, expected: bool
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    path = [str(site), str(tmp_path / "missing")]
    dist(site, "guardian", CONSOLE_SCRIPT)
    if layout == "console script only":
        dist(site, "other", "[console_scripts]\nguardian-top = other.cli:main\n")
    elif layout == "a guardian entry point":
        dist(site, "plugin", "[console_scripts]\np = p:main\n\n[guardian]\nmine = plugin_module\n")
    elif layout == "a guardian entry point in an egg":
        egg = tmp_path / "plugin-1.0-py3.11.egg"
        dist(egg, "plugin", "[guardian]\nmine = plugin_module\n", "EGG-INFO")
        path.append(str(egg))
    elif layout == "an upper-case DIST-INFO":
        dist(site, "plugin", "[guardian]\nmine = plugin_module\n", "Plugin-1.0.DIST-INFO")
    elif layout == "an egg-info directory":
        dist(site, "plugin", "[guardian]\r\nmine = plugin_module\r\n", "plugin.egg-info")
    elif layout == "an empty group header":
        dist(site, "plugin", "[guardian]\n")
    monkeypatch.setattr(sys, "path", path)
    assert plugins._may_have_entry_points() is expected
    # never False where importlib.metadata finds one (an empty header declares none: True is
    # only a scan the long way)
    assert found_by_importlib_metadata() <= plugins._may_have_entry_points()


def test_what_it_cannot_read_itself_is_left_to_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("plugin-1.0.dist-info/entry_points.txt", "[guardian]\nmine = plugin_module\n")
        z.writestr("plugin-1.0.dist-info/METADATA", "Name: plugin\nVersion: 1.0\n")
    monkeypatch.setattr(sys, "path", [str(archive)])
    assert found_by_importlib_metadata()
    assert plugins._may_have_entry_points()

    site = tmp_path / "site"
    dist(site, "odd", "")
    (site / "odd-1.0.dist-info" / "entry_points.txt").write_bytes(b"[\xff]\n")  # not UTF-8
    monkeypatch.setattr(sys, "path", [str(site)])
    assert plugins._may_have_entry_points()


def test_another_finder_of_distributions_is_left_to_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Finder:
        @staticmethod
        def find_spec(*args: object) -> None:
            return None

        @staticmethod
        def find_distributions(*args: object) -> list[object]:
            return []

    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert not plugins._may_have_entry_points()
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder()])
    assert plugins._may_have_entry_points()
