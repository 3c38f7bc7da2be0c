"""Host(root): the only place in guardian that knows where the kernel keeps things.

Every path guardian reads or writes is resolved here, under a root directory that is ``/`` on a
real machine and a fixture tree in tests (``--root DIR`` on every subcommand). Nothing outside
this module spells ``/proc`` or ``/sys``; a test enforces it.

The cgroup layout is discovered from the root's ``proc/self/mountinfo``, never assumed: pure v2
(cgroup2 at ``/sys/fs/cgroup``), hybrid (cgroup2 at ``/sys/fs/cgroup/unified`` next to the v1
``memory`` controller, as on the development machines) and pure v1.

Paths are handed out as ``str``: building ``pathlib.Path`` objects costs about a microsecond
each, and the per-process hot path opens several files for every process (bench/sample_cost.py).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Hashable, Iterable
from typing import Optional, TypeVar, Union

from guardian.errors import NoSuchProcess, Unavailable
from guardian.frozen import frozen
from guardian.offloop import OffLoop
from guardian.text import shown

PROC = "/proc"
MOUNTINFO = "/proc/self/mountinfo"
PSI_DIR = "/proc/pressure"
MEMINFO = "/proc/meminfo"
VMSTAT = "/proc/vmstat"
VM_SYSCTL_DIR = "/proc/sys/vm"
BLOCK_DIR = "/sys/block"
POLICY_FILE = "/etc/guardian.toml"
PLUGIN_DIR = "/etc/guardian/plugins.d"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
# systemd's unit search path for the system manager (systemd.unit(5)), highest precedence first:
# set-property's persistent and runtime drop-ins, transient units, then the usual directories
UNIT_DIRS = (
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
OOMD_CGROUP = "/system.slice/systemd-oomd.service"  # where systemd runs systemd-oomd
KMSG = "/dev/kmsg"  # the kernel log, one record per read() (Documentation/ABI/testing/dev-kmsg)
# How long a call that can wait on another process (Host.slow_call) is waited for: a
# /proc/PID/cmdline read takes microseconds unless the process holds its own memory lock
SLOW_CALL_S = 0.2
DIRS_KEPT = 8192  # cgroup directories remembered (forgotten wholesale when full)
HOT_MAX = 384  # files read_hot keeps open at most (a service's soft RLIMIT_NOFILE is 1024); the
# rest are read with open, read and close

T = TypeVar("T")

# errnos that mean "this process is gone" when reading /proc/PID/*: ENOENT after the directory
# is removed, ESRCH when the task is exiting while we read (proc_pid_* returns -ESRCH).
_GONE = (errno.ENOENT, errno.ESRCH)
# /proc/PID files the kernel makes as one record (single_open, or a value): a read asking for
# more than the file holds gets all of it, so a short read is the end. Not so for files made
# record by record (smaps: a read returns about a page of them, then stops), which are read on
# to an empty read.
_ONE_RECORD = frozenset({"stat", "status", "cgroup", "oom_score", "oom_score_adj"})
_CHUNK = 65536


@frozen
class Mount:
    """One line of /proc/self/mountinfo that matters to guardian."""

    mount_point: str  # absolute path on the host, octal escapes decoded
    root: str  # the part of the filesystem mounted there (cgroup namespaces show a subpath)
    fstype: str
    super_options: frozenset[str]


@frozen
class CgroupLayout:
    """Where the cgroup hierarchies that guardian uses are mounted.

    ``mode`` is ``unified`` (cgroup2 only), ``hybrid`` (cgroup2 plus the v1 memory controller),
    ``legacy`` (v1 memory controller, no cgroup2) or ``none``.
    """

    mode: str
    v2_mount: Optional[Mount]
    v1_memory_mount: Optional[Mount]
    v2_controllers: frozenset[str]

    @property
    def v2_memory(self) -> bool:
        """True when memory.current/.max/.events exist on the cgroup2 hierarchy."""
        return self.v2_mount is not None and "memory" in self.v2_controllers

    @property
    def memory_controller(self) -> Optional[str]:
        """Which hierarchy accounts memory: ``v2``, ``v1`` or None."""
        if self.v2_memory:
            return "v2"
        if self.v1_memory_mount is not None:
            return "v1"
        return None


_OCTAL = frozenset(b"01234567")


def _unescape_mountinfo(field: str) -> Optional[str]:
    """A mountinfo field with its octal escapes decoded; None if it holds an escape the kernel
    never writes.

    show_mountinfo() (fs/proc_namespace.c: mangle()) escapes space, tab, newline and backslash
    as ``\\ooo``; every other byte of a path is printed as it is, so a mount point may be any
    bytes. The field is unescaped as bytes and decoded as file names are (surrogate escapes for
    bytes that are not UTF-8), so the result names the real directory."""
    if "\\" not in field:
        return field
    raw = os.fsencode(field)
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C:  # backslash: the kernel follows it with exactly three octal digits
            digits = raw[i + 1 : i + 4]
            if len(digits) != 3 or not _OCTAL.issuperset(digits) or int(digits, 8) > 0xFF:
                return None
            out.append(int(digits, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/PID/mountinfo (proc(5)):
    ``id parent maj:min root mountpoint opts [tags] - fstype source superopts``.

    A line that is not in that shape (too few fields, no separator, an escape the kernel never
    writes, a path that is not absolute) is skipped: one bad line must not hide the others,
    and a mount guardian cannot read is a mount it does not use."""
    mounts = []
    # Split exactly as the kernel joins: lines on "\n", fields on " ". str.splitlines() and
    # str.split() also break on \x0c, \x1c, U+0085, U+00A0, U+2028..., which a mount point
    # may hold unescaped.
    for line in text.split("\n"):
        fields = [f for f in line.split(" ") if f]
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 4:  # fstype, source and super options follow "-"
            continue
        mount_point = _unescape_mountinfo(fields[4])
        root = _unescape_mountinfo(fields[3])
        if mount_point is None or root is None or not mount_point.startswith("/"):
            continue
        mounts.append(
            Mount(
                mount_point=mount_point,
                root=root,
                fstype=fields[sep + 1],
                super_options=frozenset(fields[sep + 3].split(",")),
            )
        )
    return mounts


def cgroup_path(text: str) -> str:
    """``text`` as a cgroup path in the one form guardian uses: a leading "/", no trailing "/",
    ``/`` for the root (``system.slice/`` -> ``/system.slice``).

    Raises ValueError, with the reason in words, for what names no cgroup: an empty string, an
    empty component (``a//b``), ``.`` or ``..`` (which would lead out of the cgroup mount; a
    process outside guardian's cgroup namespace shows such paths), or a NUL byte."""
    if _plainly_normal(text):
        return text  # the kernel's own form: most paths, on the per-process hot path
    if not text:
        raise ValueError("an empty cgroup path")
    if "\0" in text:
        raise ValueError("a NUL byte in a cgroup path")
    body = text[1:] if text.startswith("/") else text
    body = body[:-1] if body.endswith("/") else body
    if not body:
        return "/"
    for part in body.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"{repr(part) if part else 'an empty'} component in a cgroup path")
    return "/" + body


def _plainly_normal(path: str) -> bool:
    # a few substring tests, no split: "/." also rules out names that merely start with a dot,
    # which cgroup_path() then looks at component by component
    if path == "/":
        return True
    return path[:1] == "/" and path[-1:] != "/" and "//" not in path and "/." not in path and "\0" not in path


def is_cgroup_path(path: str) -> bool:
    """True for a path in cgroup_path()'s form. Cheap for the usual path (it is checked before
    every file a cgroup read opens)."""
    if _plainly_normal(path):
        return True
    try:
        return cgroup_path(path) == path
    except ValueError:
        return False


def cgroup_ancestors(path: str) -> list[str]:
    """``path`` and each cgroup above it, nearest first, without the root:
    ``/a/b/c`` -> ``[/a/b/c, /a/b, /a]``. Terminates for any string (each step is strictly
    shorter); a string that is not a cgroup path has no ancestors."""
    if not is_cgroup_path(path):
        return []
    out = []
    while len(path) > 1:
        out.append(path)
        path = path[: path.rfind("/")]
    return out


def _leading_up(root: str) -> str:
    """The ``/..`` components a mount's root starts with (``/../../x`` -> ``/../..``)."""
    end = 0
    while root[end : end + 3] == "/.." and root[end + 3 : end + 4] in ("", "/"):
        end += 3
    return root[:end]


def cgroup_layout(mounts: list[Mount], v2_controllers: frozenset[str]) -> CgroupLayout:
    """Decide the layout from the mounts. Pure; ``v2_controllers`` is the v2 root's cgroup.controllers."""
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    v1_memory = [m for m in mounts if m.fstype == "cgroup" and "memory" in m.super_options]
    # systemd mounts cgroup2 once; if several exist (bind mounts), the shortest mount point is
    # the canonical one (/sys/fs/cgroup before /sys/fs/cgroup/unified before container binds).
    # Of two at the same mount point the later one is seen: mountinfo lists mounts in the
    # order they were made, and a mount hides what was mounted there before it (a container
    # runtime's own cgroup mount under a bind of the host's tree).
    v2_mount = min(reversed(v2), key=lambda m: len(m.mount_point)) if v2 else None
    v1_mount = min(reversed(v1_memory), key=lambda m: len(m.mount_point)) if v1_memory else None
    if v2_mount and v1_mount:
        mode = "hybrid"
    elif v2_mount:
        mode = "unified"
    elif v1_mount:
        mode = "legacy"
    else:
        mode = "none"
    return CgroupLayout(mode, v2_mount, v1_mount, v2_controllers if v2_mount else frozenset())


def _why_unreadable(path: str, exc: OSError) -> str:
    """Why ``path`` could not be read, in words, for an Unavailable."""
    shown_path = shown(path)
    if isinstance(exc, FileNotFoundError):
        return f"{shown_path} does not exist"
    if isinstance(exc, PermissionError):
        return f"{shown_path} is not readable (permission denied)"
    if exc.errno == errno.EOPNOTSUPP:
        return f"{shown_path}: not supported by this kernel"
    if exc.errno == errno.ENODEV:  # kernfs: the cgroup is being removed as we open it
        return f"{shown_path}: removed while being read"
    # EIO, EISDIR, ENOTDIR, ...: whatever it is, that file is not there to be read
    return f"{shown_path}: {exc.strerror or exc}"


class Host:
    """A machine as seen under ``root``: paths to its kernel interfaces and raw reads of them."""

    def __init__(self, root: Union[str, os.PathLike[str]] = "/") -> None:
        root_str = os.fspath(root)
        self.root = root_str.rstrip("/")  # "" for the real root
        self.proc = self.path(PROC)
        self._layout: Optional[CgroupLayout] = None
        self._above: Optional[str] = None  # cgroupns_above(), once the layout is known
        self._hot: dict[str, int] = {}
        self._hot_dirs: frozenset[str] = frozenset()  # cgroup directories whose files stay open
        self._dirs: dict[tuple[str, str], str] = {}  # ("v2" or "v1", cgroup) -> its directory
        self._offloop = OffLoop(timeout_s=SLOW_CALL_S)

    def __repr__(self) -> str:
        return f"Host({self.root or '/'!r})"

    @property
    def is_live(self) -> bool:
        """True when this Host is the real machine (root ``/``), so pids are real pids."""
        return self.root == ""

    def path(self, absolute: str) -> str:
        """The path under this root of an absolute host path."""
        return self.root + absolute

    # --- raw reads -------------------------------------------------------------------------

    # --- the OS primitives --------------------------------------------------------------------
    # Every read of the machine goes through these few methods (and read_hot's pread on the
    # live root), so that a recorded machine can stand in for a real one: guardian/trace/
    # records what they return and answers them from a trace file in replay. Each is what the
    # plain os call would be, so the daemon pays nothing for them.

    def read_bytes(self, path: str, one_record: bool = False) -> bytes:
        """Read a whole (small) kernel file. os.open/os.read: the cheapest read CPython offers.
        ``one_record``: a file the kernel makes as one record (_ONE_RECORD), whose short read
        is the end: one read() instead of reading on to an empty one."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunk = os.read(fd, _CHUNK)
            if one_record and len(chunk) < _CHUNK:
                return chunk
            chunks = []
            while chunk:
                chunks.append(chunk)
                chunk = os.read(fd, _CHUNK)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        """The entries of a directory as (name, is a directory), unsorted; OSError as os.scandir
        raises it. An entry whose type cannot be told counts as no directory."""
        found = []
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                found.append((entry.name, is_dir))
        return found

    def list_names(self, path: str) -> list[str]:
        """The names in a directory, unsorted (os.listdir: /proc holds hundreds of entries, and
        telling their types would cost half as much again; bench/sample_cost.py)."""
        return os.listdir(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read_link(self, path: str) -> str:
        """os.readlink; OSError as it raises it."""
        return os.readlink(path)

    def root_xattrs(self, directory: str, names: tuple[str, ...]) -> frozenset[str]:
        """Which of ``names`` are set (to anything but "0" or empty) on ``directory``, if root
        owns it; empty when it does not, or cannot be read."""
        try:
            if os.stat(directory).st_uid != 0:
                return frozenset()
        except OSError:
            return frozenset()
        found = set()
        for name in names:
            try:
                value = os.getxattr(directory, name)
            except OSError:
                continue  # ENODATA (not set), ENOTSUP (tmpfs without xattrs), gone
            if value.strip(b"\0 \n") not in (b"", b"0"):
                found.add(name)
        return frozenset(found)

    def read_text(self, path: str) -> str:
        """A kernel file as text. Bytes that are not UTF-8 become surrogate escapes, as file names
        do (``os.fsdecode``): the paths in /proc/PID/cgroup and mountinfo then still name the
        real directories, and shown() prints them as ``\\xNN``."""
        return os.fsdecode(self.read_bytes(path))

    def read_feature(self, path: str, feature: str) -> str:
        """Read a file that a kernel feature provides; a missing file means the feature is off.
        A file of a cgroup held open (hold_open) is read as read_hot reads."""
        if self._hot_dirs and path.rpartition("/")[0] in self._hot_dirs:
            return self.read_hot(path, feature)
        return self._read_feature(path, feature)

    def _read_feature(self, path: str, feature: str) -> str:
        try:
            return self.read_text(path)
        except OSError as exc:
            raise Unavailable(feature, _why_unreadable(path, exc)) from None

    def read_hot(self, path: str, feature: str) -> str:
        """A file read on every tick (meminfo, /proc/pressure/memory): on the live machine the
        descriptor stays open and each read is one pread() from offset 0, which the kernel
        answers with fresh contents; two system calls fewer per tick than open/read/close."""
        if not self.is_live:
            return self._read_feature(path, feature)
        fd = self._hot.get(path)
        if fd is None:
            if len(self._hot) >= HOT_MAX:
                return self._read_feature(path, feature)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return self._read_feature(path, feature)  # the same errors, worded the same way
            self._hot[path] = fd
        try:
            return os.fsdecode(os.pread(fd, 65536, 0))
        except OSError:  # ENODEV: the group was removed (and maybe made again under its name)
            directory = path.rpartition("/")[0]
            if directory in self._hot_dirs:  # its other files too: none stays pinned by guardian
                self.forget_hot([p for p in self._hot if p.rpartition("/")[0] == directory])
            else:
                os.close(fd)
                del self._hot[path]
            return self._read_feature(path, feature)

    def hold_open(self, cgroups: Iterable[str]) -> None:
        """Keep the files guardian reads of these cgroups open from now on (their memory files
        are read on every full look: one pread instead of open, read and close, and opening a
        cgroup file was the costliest part of a look under emulation); close those of the
        groups held before and not now, so that no removed group stays pinned by guardian."""
        dirs: set[str] = set()
        for cgroup in cgroups:
            for directory in (self.cgroup_v2_dir, self.cgroup_v1_memory_dir):
                try:
                    dirs.add(directory(cgroup))
                except Unavailable:
                    continue
        dropped = self._hot_dirs - dirs
        self._hot_dirs = frozenset(dirs)
        if dropped:
            self.forget_hot([path for path in self._hot if path.rpartition("/")[0] in dropped])

    def slow_call(self, key: Hashable, what: str, call: Callable[[], T]) -> T:
        """A call that can wait on another process (a /proc/PID/cmdline read, process_mrelease):
        on the live machine off the loop, at most SLOW_CALL_S, else Stalled (guardian/offloop.py).
        Under a fake root the files are plain files and it is called directly."""
        if not self.is_live:
            return call()
        return self._offloop.call(key, what, call)

    def forget_hot(self, paths: Iterable[str]) -> None:
        """Close the descriptors read_hot keeps for these paths (a watched cgroup that went away
        must not stay pinned by guardian's open file)."""
        for path in list(paths):
            fd = self._hot.pop(path, None)
            if fd is not None:
                os.close(fd)

    def read_pid_file(self, pid: int, name: str) -> bytes:
        """Read /proc/PID/NAME; a process that is gone raises NoSuchProcess. The files of one
        record (stat, status, cgroup, oom_score, oom_score_adj) are read with one read() when
        it comes back short: the four files of each process a ranking reads cost four system
        calls fewer."""
        try:
            return self.read_bytes(f"{self.proc}/{pid}/{name}", name in _ONE_RECORD)
        except OSError as exc:
            if exc.errno in _GONE:
                raise NoSuchProcess(pid) from None
            raise

    # --- /proc -----------------------------------------------------------------------------

    def task_ids(self, pid: int) -> list[int]:
        """The thread ids of a process (/proc/PID/task); empty when it is gone."""
        try:
            names = self.list_names(f"{self.proc}/{pid}/task")
        except OSError:
            return []
        return sorted(int(name) for name in names if name.isascii() and name.isdigit())

    def pids(self) -> list[int]:
        """Every process id in /proc (thread group leaders only, as /proc lists them)."""
        # isascii(): str.isdigit() is also true for superscripts and digits of other scripts,
        # which int() rejects ("\u00b2") or reads as numbers ("\u0661" is 1)
        return [int(name) for name in self.list_names(self.proc) if name.isascii() and name.isdigit()]

    def read_pid_link(self, pid: int, name: str) -> Optional[str]:
        """readlink /proc/PID/NAME (``exe``); None where the kernel hides it (kernel threads,
        zombies, other users' processes without ptrace rights)."""
        try:
            return self.read_link(f"{self.proc}/{pid}/{name}")
        except OSError as exc:
            if exc.errno in _GONE:
                raise NoSuchProcess(pid) from None
            return None

    def pid_path(self, pid: int, name: str) -> str:
        return f"{self.proc}/{pid}/{name}"

    def pressure_path(self, resource: str) -> str:
        return self.path(f"{PSI_DIR}/{resource}")

    def meminfo_path(self) -> str:
        return self.path(MEMINFO)

    def vmstat_path(self) -> str:
        return self.path(VMSTAT)

    def vm_sysctl_path(self, name: str) -> str:
        return self.path(f"{VM_SYSCTL_DIR}/{name}")

    def zram_devices(self) -> list[str]:
        """Directories of the zram block devices (``/sys/block/zramN``)."""
        block = self.path(BLOCK_DIR)
        try:
            names = sorted(n for n in self.list_names(block) if n.startswith("zram"))
        except OSError:
            return []
        return [f"{block}/{n}" for n in names]

    def policy_path(self) -> str:
        return self.path(POLICY_FILE)

    def kmsg_path(self) -> str:
        """The kernel log device; under a fake root, a regular file of recorded records
        (guardian/sources/kmsg.py reads either)."""
        return self.path(KMSG)

    def plugin_dir(self) -> str:
        return self.path(PLUGIN_DIR)

    def unit_dirs(self) -> list[str]:
        """systemd's system unit directories, highest precedence first (guardian/oomd.py)."""
        return [self.path(d) for d in UNIT_DIRS]

    def oomd_running(self) -> bool:
        """True when systemd-oomd's service cgroup holds a process: a read of one cgroup file,
        no D-Bus (guardian/oomd.py)."""
        try:
            procs = os.path.join(self.cgroup_v2_dir(OOMD_CGROUP), "cgroup.procs")
            return bool(self.read_bytes(procs).strip())
        except (Unavailable, OSError):
            return False

    def journal_socket(self) -> str:
        """journald's socket: on the real root only (a fake root has no journald)."""
        return JOURNAL_SOCKET if self.is_live else self.path(JOURNAL_SOCKET)

    def self_pid(self) -> int:
        """guardian's own pid, never a candidate; -1 under a fake root, where guardian is not
        among the processes (and a fixture pid that happens to equal ours is someone else)."""
        return os.getpid() if self.is_live else -1

    # --- cgroups ---------------------------------------------------------------------------

    def cgroup_layout(self) -> CgroupLayout:
        """The cgroup layout of this root, discovered once from proc/self/mountinfo."""
        if self._layout is None:
            try:
                mounts = parse_mountinfo(self.read_text(self.path(MOUNTINFO)))
            except OSError:
                mounts = []  # no mountinfo to read: no cgroup hierarchy guardian can find
            layout = cgroup_layout(mounts, frozenset())
            if layout.v2_mount is not None:
                try:
                    text = self.read_text(self._mount_dir(layout.v2_mount) + "/cgroup.controllers")
                    layout = cgroup_layout(mounts, frozenset(text.split()))
                except OSError:
                    pass  # no controllers known: pressure and cgroup.kill only
            self._layout = layout
        return self._layout

    def _mount_dir(self, mount: Mount) -> str:
        return self.path(mount.mount_point)

    def cgroupns_above(self) -> str:
        """How far the cgroup2 mount reaches above guardian's own cgroup namespace: ``/../..``
        when the host's whole cgroup tree is bind-mounted into a container two levels below
        the namespace's root, else "".

        The kernel prints every cgroup path relative to the reader's cgroup namespace
        (cgroup_path_ns(), and cgroup_show_path() for the mount's root in mountinfo), with a
        ``..`` for each level above it. A container on cgroup v2 gets a private namespace
        unless it is privileged (containerd, CRI-O, podman), and a Kubernetes pod cannot ask
        for the host's; with the host's /sys/fs/cgroup mounted in (a hostPath volume), the
        mount's root reads ``/../../..`` and a host process's cgroup
        ``/../../../system.slice/kubelet.service``. Stripping this prefix gives every path
        as the host names it (README.md, "Kubernetes")."""
        if self._above is None:
            v2_mount = self.cgroup_layout().v2_mount
            self._above = _leading_up(v2_mount.root) if v2_mount is not None else ""
        return self._above

    @staticmethod
    def _relative(mount: Mount, cgroup: str) -> str:
        # Inside a cgroup namespace the mount's root is a subpath and /proc/PID/cgroup paths
        # are relative to it; outside, mount root is "/" and the path is used as is. Only whole
        # components count: mount root /kube does not hold /kubepods. A root that leads up
        # out of guardian's namespace (cgroupns_above) is taken from where it arrives: the
        # processes' paths have had that part taken off already.
        root = mount.root.rstrip("/")
        root = root[len(_leading_up(root)) :]
        if root and (cgroup == root or cgroup.startswith(root + "/")):
            cgroup = cgroup[len(root) :] or "/"
        return cgroup

    @staticmethod
    def _checked(feature: str, cgroup: str) -> None:
        # Every cgroup directory guardian opens is built from a path in cgroup_path()'s form:
        # "system.slice" would name /sys/fs/cgroupsystem.slice, and ".." would leave the mount.
        if not is_cgroup_path(cgroup):
            raise Unavailable(feature, f"'{shown(cgroup)}' is not a cgroup path")

    def cgroup_v2_dir(self, cgroup: str) -> str:
        """Directory of a cgroup2 group given its path as /proc/PID/cgroup prints it."""
        known = self._dirs.get(("v2", cgroup))
        if known is not None:
            return known
        return self._remember_dir("v2", cgroup, self._cgroup_v2_dir(cgroup))

    def _remember_dir(self, tree: str, cgroup: str, directory: str) -> str:
        """A cgroup's directory, remembered (the layout does not change; every cgroup file read
        asks for one, and working it out was a tenth of a full look)."""
        if len(self._dirs) >= DIRS_KEPT:
            self._dirs.clear()
        self._dirs[(tree, cgroup)] = directory
        return directory

    def _cgroup_v2_dir(self, cgroup: str) -> str:
        layout = self.cgroup_layout()
        if layout.v2_mount is None:
            raise Unavailable("cgroup2", "no cgroup2 filesystem is mounted")
        self._checked("cgroup2", cgroup)
        rel = self._relative(layout.v2_mount, cgroup)
        return (self._mount_dir(layout.v2_mount) + rel).rstrip("/")

    def cgroup_v1_memory_dir(self, cgroup: str) -> str:
        """Directory of a cgroup in the v1 memory hierarchy."""
        known = self._dirs.get(("v1", cgroup))
        if known is not None:
            return known
        return self._remember_dir("v1", cgroup, self._cgroup_v1_memory_dir(cgroup))

    def _cgroup_v1_memory_dir(self, cgroup: str) -> str:
        layout = self.cgroup_layout()
        if layout.v1_memory_mount is None:
            raise Unavailable("cgroup v1 memory", "the v1 memory controller is not mounted")
        self._checked("cgroup v1 memory", cgroup)
        rel = self._relative(layout.v1_memory_mount, cgroup)
        return (self._mount_dir(layout.v1_memory_mount) + rel).rstrip("/")

    def cgroup_identity(self, cgroup: str) -> tuple[int, ...]:
        """The inode numbers of the group's directories (cgroup2, v1 memory): what tells a group
        from one removed and made again under the same name; () where it has none."""
        found = []
        for directory in (self.cgroup_v2_dir, self.cgroup_v1_memory_dir):
            try:
                found.append(os.stat(directory(cgroup)).st_ino)
            except (Unavailable, OSError):
                continue
        return tuple(found)

    def cgroup_exists(self, cgroup: str) -> bool:
        """True when ``cgroup`` is a directory in the cgroup2 tree or the v1 memory tree."""
        for directory in (self.cgroup_v2_dir, self.cgroup_v1_memory_dir):
            try:
                if self.is_dir(directory(cgroup)):
                    return True
            except Unavailable:
                continue
        return False

    def walk_cgroups(self, top: str, max_depth: Optional[int] = None) -> list[str]:
        """Every cgroup directory below ``top`` (excluded), as paths relative to it ("/a/b"),
        down to ``max_depth`` levels (all of them when None)."""
        found: list[str] = []
        stack = [("", top)]
        while stack:
            rel, directory = stack.pop()
            if max_depth is not None and rel.count("/") >= max_depth:
                continue
            try:
                entries = self.list_dir(directory)
            except OSError:
                continue  # removed while walking (ENOENT, or ENODEV mid-removal), or not ours to read
            for name, is_dir in entries:
                if is_dir:
                    child = f"{rel}/{name}"
                    found.append(child)
                    stack.append((child, f"{directory}/{name}"))
        found.sort()
        return found

    def v2_cgroups(self) -> list[str]:
        layout = self.cgroup_layout()
        if layout.v2_mount is None:
            return []
        return self.walk_cgroups(self._mount_dir(layout.v2_mount))

    def cgroups_below(self, prefix: str, max_depth: Optional[int]) -> list[str]:
        """Cgroup paths under ``prefix`` ("/system.slice"), at most ``max_depth`` levels below it,
        in the cgroup2 tree and the v1 memory tree: the walk a glob needs, not the whole tree."""
        layout = self.cgroup_layout()
        found: set[str] = set()
        for mount in (layout.v2_mount, layout.v1_memory_mount):
            if mount is None:
                continue
            top = self._mount_dir(mount) + prefix.rstrip("/")
            if prefix.strip("/") and self.is_dir(top):
                found.add(prefix.rstrip("/"))  # the prefix itself, when a glob names it whole
            found.update(prefix.rstrip("/") + rel for rel in self.walk_cgroups(top, max_depth))
        return sorted(found)

    def cgroup_count_files(self) -> list[tuple[str, str]]:
        """(path, kind) of the files whose numbers change when a cgroup that holds memory is made
        or removed: the cgroup2 root's ``cgroup.stat`` ("cgroup.stat": nr_descendants and
        nr_dying_descendants) and, with the v1 memory controller, ``/proc/cgroups`` ("cgroups":
        its num_cgroups, which counts dying groups too)."""
        layout = self.cgroup_layout()
        files = []
        if layout.v2_mount is not None:
            files.append((self._mount_dir(layout.v2_mount) + "/cgroup.stat", "cgroup.stat"))
        if layout.v1_memory_mount is not None:
            files.append((f"{self.proc}/cgroups", "cgroups"))
        return files

    def v1_memory_cgroups(self) -> list[str]:
        layout = self.cgroup_layout()
        if layout.v1_memory_mount is None:
            return []
        return self.walk_cgroups(self._mount_dir(layout.v1_memory_mount))

    def cgroup_xattrs(self, cgroup: str, names: tuple[str, ...]) -> frozenset[str]:
        """Which of ``names`` are set (to anything but "0" or empty) on the cgroup's directory.

        As systemd-oomd (oomd_fetch_cgroup_oom_preference), only a directory owned by root
        counts, so an unprivileged user cannot mark their own group. The cgroup2 directory is
        asked where cgroup2 is mounted (systemd sets these there), else the v1 memory one.
        """
        layout = self.cgroup_layout()
        try:
            directory = self.cgroup_v2_dir(cgroup) if layout.v2_mount else self.cgroup_v1_memory_dir(cgroup)
        except Unavailable:
            return frozenset()
        return self.root_xattrs(directory, names)
