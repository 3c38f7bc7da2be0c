"""Loading a plugin of this tree from its file, as a module of its own, for tests that read it
without installing it."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path


def load_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
