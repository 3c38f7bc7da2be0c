"""A directory that guardian's plugin-path rule accepts, for tests that need one.

The rule (guardian/plugins.py: secure_realpath) wants every component from ``/`` down owned by
root and writable by nobody else. pytest's ``tmp_path`` lives under ``/tmp``, which is
world-writable (sticky or not), so nothing under it is accepted, and rightly so. Tests that need
an accepted directory make a fresh one in a base whose chain is root-only (``/run`` is a tmpfs
owned by root, mode 0755, on systemd hosts), and remove it afterwards. The base is chosen by a
check written independently of the one under test, so a bug there cannot pick the base.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

BASES = ("/run", "/var/lib", "/var/cache")


def _root_only_chain(path: str) -> bool:
    real = os.path.realpath(path)
    parts = real.split("/")
    for i in range(1, len(parts) + 1):
        here = "/".join(parts[:i]) or "/"
        try:
            st = os.stat(here)
        except OSError:
            return False
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or not stat.S_ISDIR(st.st_mode):
            return False
    return True


def secure_base() -> Optional[str]:
    """A directory whose chain root alone controls, or None (not root, or no such base)."""
    if os.geteuid() != 0:
        return None
    for base in BASES:
        if _root_only_chain(base):
            return os.path.realpath(base)
    return None


@contextlib.contextmanager
def root_only_dir() -> Iterator[Path]:
    """A fresh, empty directory (root, 0755) in a root-only chain; removed afterwards."""
    base = secure_base()
    if base is None:
        raise RuntimeError(f"no root-only base directory among {BASES} (or not running as root)")
    path = Path(tempfile.mkdtemp(prefix="guardian-test-plugins-", dir=base))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
