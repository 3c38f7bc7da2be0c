"""scripts/gen_packaging.py, imported for the tests of what it writes (it is a script, not a
module of the package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
SCRIPT = REPO / "scripts" / "gen_packaging.py"

_spec = importlib.util.spec_from_file_location("gen_packaging", SCRIPT)
assert _spec is not None and _spec.loader is not None
gen = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = gen  # dataclasses look their module up there
_spec.loader.exec_module(gen)


def out_of_date(path: Path) -> str:
    """'' when the committed file is what the generator writes now; else why not, with the
    first lines of the difference."""
    import difflib

    want = gen.outputs()[path]
    have = path.read_text("utf-8") if path.exists() else ""
    if have == want:
        return ""
    diff = difflib.unified_diff(have.splitlines(), want.splitlines(), "committed", "generated", lineterm="")
    head = "\n".join(list(diff)[:40])
    return f"{path.relative_to(REPO)} is out of date: run .venv/bin/python scripts/gen_packaging.py\n{head}"
