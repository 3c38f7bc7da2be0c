"""guardian.api is the plugin authors' whole world: everything in it is documented, field by
field, in docs/plugin_hooks.md, and the shipped plugins import nothing else of guardian."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest
from support.modules import load_module

from guardian import api
from guardian.config import Policy, parse_policy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9/3.10 only
    import tomli as tomllib

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs" / "plugin_hooks.md"
EXAMPLE = ROOT / "plugins" / "guardian-example-scorer" / "guardian_example_scorer.py"
NOTIFY = sorted((ROOT / "plugins" / "guardian-notify").glob("*.py"))
PLUGINS = [EXAMPLE, *NOTIFY, *sorted((ROOT / "guardian" / "scorers").glob("*.py"))]


def public_fields(cls: type) -> set[str]:
    """What a plugin can read on an instance: fields, properties, methods and slots that guardian
    defines (not dunders, not private names, not what ``object`` brings)."""
    names: set[str] = set()
    for klass in inspect.getmro(cls):
        if not klass.__module__.startswith("guardian"):
            continue
        names |= (
            set(vars(klass))
            | set(getattr(klass, "__slots__", ()))
            | set(getattr(klass, "__annotations__", {}))
        )
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    return {n for n in names if not n.startswith("_")}


def documented_fields() -> dict[str, set[str]]:
    """``### Name`` sections of the docs, and the first column of the table under each."""
    sections: dict[str, set[str]] = {}
    current = None
    for line in DOCS.read_text().splitlines():
        heading = re.match(r"^###? (\w+)$", line)
        if heading:
            current = heading.group(1)
            sections.setdefault(current, set())
            continue
        row = re.match(r"^\| `(\w+)` \|", line)
        if row and current is not None:
            sections[current].add(row.group(1))
    return sections


API_CLASSES = sorted(
    name
    for name in api.__all__
    if inspect.isclass(getattr(api, name)) and not issubclass(getattr(api, name), Exception)
)


def test_the_api_exports_what_a_plugin_needs() -> None:
    for name in (
        "hookimpl",
        "Scorer",
        "Candidate",
        "RankContext",
        "Process",
        "Facts",
        "PluginFailure",
        "Policy",
    ):
        assert name in api.__all__
    assert all(hasattr(api, name) for name in api.__all__)


@pytest.mark.parametrize("name", API_CLASSES)
def test_every_public_field_of_the_api_is_documented(name: str) -> None:
    cls = getattr(api, name)
    sections = documented_fields()
    assert name in sections, f"docs/plugin_hooks.md has no '### {name}' section"
    fields = public_fields(cls)
    assert fields, f"found no fields on {name}"
    assert sorted(fields - sections[name]) == [], f"{name}: fields missing from docs/plugin_hooks.md"
    assert sorted(sections[name] - fields) == [], f"{name}: documented fields that do not exist"


def test_every_api_name_is_mentioned_in_the_docs() -> None:
    text = DOCS.read_text()
    assert [n for n in api.__all__ if f"`{n}`" not in text and f"### {n}" not in text] == []


def test_the_field_check_sees_a_field_the_docs_miss() -> None:
    """The check itself can fail: a field that no section lists is found."""

    @dataclasses.dataclass(frozen=True)
    class Extended(api.Candidate):
        brand_new_bytes: int = 0

    Extended.__module__ = "guardian.test"
    assert public_fields(Extended) - documented_fields()["Candidate"] == {"brand_new_bytes"}


def guardian_imports(path: Path) -> set[str]:
    """The guardian modules ``path`` imports; a relative import counts as one (it can only
    reach into the package that holds the file: guardian/scorers/ is inside guardian)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            modules.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "guardian":
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules |= {a.name for a in node.names if a.name.split(".")[0] == "guardian"}
    return modules


@pytest.mark.parametrize("path", PLUGINS, ids=lambda p: p.name)
def test_shipped_plugins_import_only_the_api(path: Path) -> None:
    assert guardian_imports(path) <= {"guardian.api"}


def test_the_import_check_sees_every_way_into_guardian(tmp_path: Path) -> None:
    """The check itself can fail: absolute and relative imports of guardian's insides are seen."""
    source = tmp_path / "plugin.py"
    source.write_text(
        "import os\nimport guardian.host\nfrom guardian.api import hookimpl\n"
        "from ..selection import Selector\nfrom . import kernel_badness\n"
    )
    assert guardian_imports(source) == {"guardian.host", "guardian.api", "..selection", "."}


def test_the_docs_examples_import_only_the_api() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    imports = {
        m for block in blocks for m in re.findall(r"^from (guardian[\w.]*) import", block, re.MULTILINE)
    }
    assert imports == {"guardian.api"}


def load_example() -> types.ModuleType:
    return load_module("guardian_example_scorer_under_test", EXAMPLE)


def test_the_example_plugin_of_this_tree_scores_through_the_api() -> None:
    scorers = load_example().guardian_scorers(Policy())
    assert [s.name for s in scorers] == ["example_swap"]
    assert isinstance(scorers[0], api.Scorer)


def test_the_example_plugin_reads_its_settings() -> None:
    module = load_example()
    policy = parse_policy("[plugins.settings.example_swap]\npoints = 500\n", "policy.toml")
    [scorer] = module.guardian_scorers(policy)
    assert scorer.points == 500.0
    for bad in ("points = 3000", "points = true", "point = 5"):
        with pytest.raises(ValueError, match=r"^\[plugins.settings.example_swap\] point"):
            module.guardian_scorers(parse_policy(f"[plugins.settings.example_swap]\n{bad}\n", "p"))


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


def test_the_docs_show_the_example_plugin_as_it_is() -> None:
    """The first example of the docs is the example plugin's code (after its docstring)."""
    source = EXAMPLE.read_text()
    assert code_blocks("python")[0] == source[source.index("from collections.abc import") :]


def test_the_docs_show_the_example_pyproject_as_it_is_and_it_is_installed() -> None:
    """The pyproject.toml the docs show is the example's; the installed example has the entry
    point it declares (scripts/setup.sh installs it), pointing at a module with hooks."""
    pyproject = (EXAMPLE.parent / "pyproject.toml").read_text()
    assert pyproject in code_blocks("toml")
    declared = tomllib.loads(pyproject)["project"]["entry-points"]["guardian"]
    assert declared == {"example_swap": "guardian_example_scorer"}
    installed = {ep.name: ep for ep in metadata.distribution("guardian-example-scorer").entry_points}
    assert {name: ep.value for name, ep in installed.items() if ep.group == "guardian"} == declared
    assert hasattr(installed["example_swap"].load(), "guardian_scorers")


def test_policy_is_the_one_plugins_receive() -> None:
    assert api.Policy is Policy
