"""Two Hosts for traces: one that notes every answer the machine gives, one that gives the
answers of a recorded frame.

Both override only Host's OS primitives (read_bytes, list_dir, list_names, is_dir, exists,
read_link, root_xattrs), so every reader in guardian/sources, the Sample, the ranking and the Engine run
unchanged over them: what a replay decides is decided by the daemon's own code.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Optional, Union

from guardian.host import Host
from guardian.trace.fileformat import Answer, Observations


def _errno(exc: OSError) -> int:
    return exc.errno if exc.errno and 0 < exc.errno <= 4095 else errno.EIO


class RecordingHost(Host):
    """The machine under ``root``, noting each answer by path relative to the root."""

    def __init__(self, root: Union[str, os.PathLike[str]] = "/") -> None:
        super().__init__(root)
        self._lock = threading.Lock()  # slow_call reads /proc/PID/cmdline on another thread
        self.seen = Observations()

    def take(self) -> Observations:
        """What was read since the last take(), and start a new frame. The cgroup layout is
        read again in the first frame so that it is in the trace."""
        with self._lock:
            seen, self.seen = self.seen, Observations()
        return seen

    def forget_layout(self) -> None:
        self._layout = None

    def _note(self, op: str, path: str, answer: Answer) -> None:
        rel = path[len(self.root) :] if self.root and path.startswith(self.root) else path
        with self._lock:
            self.seen.note(op, os.fsencode(rel), answer)

    def read_hot(self, path: str, feature: str) -> str:
        return self._read_feature(path, feature)  # through read_bytes, so that it is noted

    def read_bytes(self, path: str, one_record: bool = False) -> bytes:
        try:
            data = super().read_bytes(path, one_record)
        except OSError as exc:
            self._note("file", path, _errno(exc))
            raise
        self._note("file", path, data)
        return data

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        try:
            entries = super().list_dir(path)
        except OSError as exc:
            self._note("dir", path, _errno(exc))
            raise
        self._note("dir", path, tuple(sorted((os.fsencode(n), d) for n, d in entries)))
        return entries

    def list_names(self, path: str) -> list[str]:
        return [name for name, _ in self.list_dir(path)]  # noted with the entries' types

    def _kind(self, path: str) -> str:
        kind = "d" if os.path.isdir(path) else "f" if os.path.exists(path) else "-"
        self._note("kind", path, kind)
        return kind

    def is_dir(self, path: str) -> bool:
        return self._kind(path) == "d"

    def exists(self, path: str) -> bool:
        return self._kind(path) != "-"

    def read_link(self, path: str) -> str:
        try:
            target = super().read_link(path)
        except OSError as exc:
            self._note("link", path, _errno(exc))
            raise
        self._note("link", path, os.fsencode(target))
        return target

    def root_xattrs(self, directory: str, names: tuple[str, ...]) -> frozenset[str]:
        found = super().root_xattrs(directory, names)
        self._note("xattr", directory, frozenset(os.fsencode(n) for n in found))
        return found


class TraceHost(Host):
    """The machine of a trace, as it was at the frame last applied. ``root`` names the trace
    (it appears in messages); nothing under it is read. Not live: its Killer only decides."""

    def __init__(self, root: str, self_pid: int) -> None:
        super().__init__(root)
        self.state = Observations()
        self._self_pid = self_pid

    def apply(self, delta: Observations) -> None:
        self.state.apply(delta)

    def self_pid(self) -> int:
        return self._self_pid

    def _answer(self, op: str, path: str) -> Optional[Answer]:
        rel = path[len(self.root) :] if path.startswith(self.root) else path
        answer = self.state.get(op, os.fsencode(rel))
        if isinstance(answer, int):
            raise OSError(answer, os.strerror(answer), path)
        return answer

    def read_bytes(self, path: str, one_record: bool = False) -> bytes:
        answer = self._answer("file", path)
        if not isinstance(answer, bytes):
            raise FileNotFoundError(errno.ENOENT, "not in the trace", path)
        return answer

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        answer = self._answer("dir", path)
        if not isinstance(answer, tuple):
            raise FileNotFoundError(errno.ENOENT, "not in the trace", path)
        return [(os.fsdecode(name), is_dir) for name, is_dir in answer]

    def list_names(self, path: str) -> list[str]:
        return [name for name, _ in self.list_dir(path)]

    def _kind(self, path: str) -> str:
        try:
            kind = self._answer("kind", path)
            if isinstance(kind, str):
                return kind
            if self._answer("dir", path) is not None:
                return "d"
            return "f" if self._answer("file", path) is not None else "-"
        except OSError:
            return "-"

    def is_dir(self, path: str) -> bool:
        return self._kind(path) == "d"

    def exists(self, path: str) -> bool:
        return self._kind(path) != "-"

    def read_link(self, path: str) -> str:
        answer = self._answer("link", path)
        if not isinstance(answer, bytes):
            raise FileNotFoundError(errno.ENOENT, "not in the trace", path)
        return os.fsdecode(answer)

    def root_xattrs(self, directory: str, names: tuple[str, ...]) -> frozenset[str]:
        try:
            answer = self._answer("xattr", directory)
        except OSError:
            return frozenset()
        if not isinstance(answer, frozenset):
            return frozenset()
        return frozenset(n for n in names if os.fsencode(n) in answer)
