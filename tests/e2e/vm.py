"""Boot the cached end-to-end guest under QEMU, run one scenario inside it, bring back the evidence.

The guest is built once by ``tests/e2e/build_image.sh`` (Debian bookworm, full systemd, cgroup v2
with the memory controller, earlyoom / systemd-oomd / nohang installed but not enabled). Every
run gets a qcow2 overlay of its own over the cached disk, so runs never see each other, and a 9p
share (mount tag ``e2e``, ``/mnt/e2e`` in the guest) that holds::

    repo.tar           a copy of this repository (git-tracked and untracked-but-not-ignored files,
                       as they are in the working tree), one file because 9p under TCG pays
                       ~15 ms per file: unpacked in the guest, not copied file by file
    scenario/          the scenario directory (scenario.sh, expect.py, anything else in it)
    lib/guest.sh       shell helpers for scenario.sh (tests/e2e/guest/guest.sh)
    scenario.env       the ``env`` given to run_scenario(), as shell assignments
    run-in-guest.sh    sets E2E_* variables, sources scenario.env, runs scenario/scenario.sh
    guest_timeout_s    how long the guest lets run-in-guest.sh run
    tools/py-spy       only when profiling (GUARDIAN_E2E_PROFILE): the sampling profiler
    results/           written by the guest

The image's ``guardian-e2e.service`` mounts the share, runs ``run-in-guest.sh`` under a timeout
(output to ``results/scenario.log``, exit status to ``results/exit_status``), copies the journal
(``journalctl -b -o json``) and ``dmesg`` to ``results/journal.json`` and ``results/dmesg.txt``,
and powers off. The host kills QEMU (through a pidfd) if it is still running after ``timeout_s``:
a run that does not end by itself is a failed run, never a hang.

Usable from tests and from a benchmark alike (with tests/ on sys.path)::

    from e2e import vm
    scenario = vm.load_scenario(vm.SCENARIOS_DIR / "smoke")
    result = scenario.run(Path("/tmp/out/smoke"))           # or vm.run_scenario(path, ...)
    kills = result.entries(MESSAGE_ID=vm.MSG_KILL)
    failures = scenario.check(result)

By hand: ``python3 tests/e2e/vm.py tests/e2e/scenarios/smoke [RESULTS_DIR]``.

Profiling, for any run: with ``GUARDIAN_E2E_PROFILE=1`` in the host's environment (or
``profile="cpu"``), the share also holds py-spy (from PyPI's wheel, fetched once into the cache:
``py_spy_binary()``), and guest.sh's ``start_daemon`` has it sample guardian's main process
(running or runnable stacks) into ``results/profile.txt`` (py-spy's raw format: one
``frame;frame;... count`` line per stack) until ``record_outcome``. ``GUARDIAN_E2E_PROFILE=idle``
keeps the idle stacks too.
bench/profile.py runs one scenario that way and prints where the time went.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
SCENARIOS_DIR = HERE / "scenarios"
BUILD_SCRIPT = HERE / "build_image.sh"
GUEST_LIB_DIR = HERE / "guest"

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"

# guardian's MESSAGE_IDs (guardian/report.py, packaging/guardian.catalog)
from guardian.report import (  # noqa: E402 - guardian's MESSAGE_IDs, re-exported for scenarios
    MSG_DRY_RUN,
    MSG_KERNEL_OOM_KILL,
    MSG_KILL,
    MSG_LIFECYCLE,
    MSG_NOT_DONE,
    MSG_POLICY_LOADED,
    MSG_POLICY_REJECTED,
)

__all__ = [
    "MSG_DRY_RUN",
    "MSG_KERNEL_OOM_KILL",
    "MSG_KILL",
    "MSG_LIFECYCLE",
    "MSG_NOT_DONE",
    "MSG_POLICY_LOADED",
    "MSG_POLICY_REJECTED",
    "RunResult",
    "Scenario",
    "load_scenario",
    "run_scenario",
    "scenario_dirs",
]

# The guest runner's own files in results/; everything else there is the scenario's.
RUNNER_FILES = ("exit_status", "scenario.log", "journal.json", "journal.err", "dmesg.txt", "guest-info.txt")

# Kernel command line for every boot. No fsck (the overlay is fresh), no reboot after a panic
# (QEMU's -no-reboot then exits), everything on the serial console.
BASE_KERNEL_ARGS = ("root=/dev/vda", "rw", "console=ttyS0", "panic=-1", "fsck.mode=skip", "net.ifnames=0")


def cache_dir() -> Path:
    return Path(os.environ.get("GUARDIAN_E2E_CACHE", "/var/cache/guardian-e2e"))


# --- the cached image ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Image:
    disk: Path
    kernel: Path
    initrd: Path
    stamp: dict[str, str]  # key=value lines of the stamp file (the package list is left out)


class ImageUnavailable(Exception):
    """The cached guest is missing or was built by another version of build_image.sh."""


def read_stamp(path: Path) -> dict[str, str]:
    stamp: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line == "packages:":
            break
        key, sep, value = line.partition("=")
        if sep:
            stamp[key] = value
    return stamp


def recipe_sha256() -> str:
    return hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest()


def find_image(cache: Optional[Path] = None) -> Image:
    """The cached image, checked the way build_image.sh checks it; ImageUnavailable says why not."""
    cache = cache or cache_dir()
    hint = f"build it with: sudo bash {BUILD_SCRIPT}"
    image = Image(cache / "disk.img", cache / "vmlinuz", cache / "initrd.img", {})
    stamp_path = cache / "stamp"
    for path in (image.disk, image.kernel, image.initrd, stamp_path):
        if not path.is_file() or path.stat().st_size == 0:
            raise ImageUnavailable(f"no e2e guest image: {path} is missing; {hint}")
    stamp = read_stamp(stamp_path)
    if stamp.get("recipe_sha256") != recipe_sha256():
        raise ImageUnavailable(f"the e2e guest image in {cache} is stale (build_image.sh changed); {hint}")
    return dataclasses.replace(image, stamp=stamp)


def image_problem(cache: Optional[Path] = None) -> Optional[str]:
    try:
        find_image(cache)
    except ImageUnavailable as e:
        return str(e)
    return None


def qemu_problem() -> Optional[str]:
    missing = [tool for tool in (QEMU, QEMU_IMG) if shutil.which(tool) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not installed (build_image.sh installs qemu-system-x86 and qemu-utils)"
        )
    return None


# --- the profiler (opt-in) ------------------------------------------------------------------------

PROFILE_ENV = "GUARDIAN_E2E_PROFILE"
PROFILE_MODES = ("cpu", "idle")  # running or runnable stacks only (py-spy's default), or idle ones too
# py-spy from PyPI: its manylinux wheel holds one static binary, which runs in the guest as it is.
PY_SPY_VERSION = "0.4.3"
PY_SPY_WHEEL = f"py_spy-{PY_SPY_VERSION}-py2.py3-none-manylinux1_x86_64.manylinux_2_5_x86_64.whl"
PY_SPY_WHEEL_SHA256 = "8a4277225f470d394a85cca0cdd944bef87f0097b6f20150a6dd3ac2e92806b8"


def profile_mode(value: Optional[str] = None) -> Optional[str]:
    """The profiling asked for: value, or else GUARDIAN_E2E_PROFILE from the environment. "1" or
    "cpu": on-CPU stacks; "idle": idle stacks too; unset, "" or "0": none."""
    if value is None:
        value = os.environ.get(PROFILE_ENV, "")
    value = value.strip().lower()
    if value in ("", "0"):
        return None
    if value == "1":
        return "cpu"
    if value not in PROFILE_MODES:
        raise ValueError(f"{PROFILE_ENV}={value!r}: expected 1, cpu or idle")
    return value


def py_spy_from_wheel(wheel: Path, dest: Path) -> Path:
    """Check the wheel against the pinned sha256 and extract its py-spy binary to dest."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != PY_SPY_WHEEL_SHA256:
        raise RuntimeError(f"{wheel}: sha256 {digest}, expected {PY_SPY_WHEEL_SHA256}")
    member = f"py_spy-{PY_SPY_VERSION}.data/scripts/py-spy"
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(part, "wb") as out:
        shutil.copyfileobj(src, out)
    part.chmod(0o755)
    part.replace(dest)
    return dest


def py_spy_binary(cache: Optional[Path] = None) -> Path:
    """py-spy for the guest, kept in the cache (``tools/py-spy-VERSION/py-spy``); the first call
    fetches the pinned wheel with pip from the package registry."""
    dest = (cache or cache_dir()) / "tools" / f"py-spy-{PY_SPY_VERSION}" / "py-spy"
    if dest.is_file():
        return dest
    with tempfile.TemporaryDirectory(prefix="guardian-e2e-py-spy-") as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                "manylinux_2_5_x86_64",
                "-d",
                tmp,
                f"py-spy=={PY_SPY_VERSION}",
            ],
            check=True,
            timeout=600,
        )
        return py_spy_from_wheel(Path(tmp) / PY_SPY_WHEEL, dest)


# --- scenarios ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A directory with ``scenario.sh`` (run as root in the guest) and ``expect.py``, whose
    ``check(result) -> list[str]`` returns the failures (empty: passed). expect.py may also set
    ``TIMEOUT_S``, ``MEMORY_MIB``, ``CPUS`` and ``ENV`` (a dict for scenario.env), and for the
    benchmark (bench.py) ``VICTIM`` and ``SPARED`` (cgroup prefixes) and ``BENCH_ENV``."""

    name: str
    path: Path
    check: Callable[[RunResult], list[str]]
    timeout_s: int = 300
    memory_mib: int = 1024
    cpus: int = 2
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    victim: tuple[str, ...] = ()
    spared: tuple[str, ...] = ()
    bench_env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def run(self, results_dir: Path, **overrides: Any) -> RunResult:
        kwargs: dict[str, Any] = {
            "timeout_s": self.timeout_s,
            "memory_mib": self.memory_mib,
            "cpus": self.cpus,
            "env": self.env,
        }
        kwargs.update(overrides)
        return run_scenario(self.path, results_dir=results_dir, **kwargs)


def _load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_scenario(path: Path) -> Scenario:
    path = Path(path).resolve()
    if not (path / "scenario.sh").is_file():
        raise FileNotFoundError(f"{path}: no scenario.sh")
    expect = _load_module(path / "expect.py", f"e2e_expect_{path.name}")
    check = getattr(expect, "check", None)
    if not callable(check):
        raise AttributeError(f"{path / 'expect.py'}: no check(result) function")
    return Scenario(
        name=path.name,
        path=path,
        check=check,
        timeout_s=int(getattr(expect, "TIMEOUT_S", 300)),
        memory_mib=int(getattr(expect, "MEMORY_MIB", 1024)),
        cpus=int(getattr(expect, "CPUS", 2)),
        env=dict(getattr(expect, "ENV", {})),
        victim=tuple(getattr(expect, "VICTIM", ())),
        spared=tuple(getattr(expect, "SPARED", ())),
        bench_env=dict(getattr(expect, "BENCH_ENV", {})),
    )


def scenario_dirs(root: Path = SCENARIOS_DIR) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "scenario.sh").is_file())


# --- the result --------------------------------------------------------------------------------


def _as_text(value: Any) -> Any:
    # journalctl -o json prints binary field values as arrays of bytes
    if isinstance(value, list) and all(isinstance(b, int) for b in value):
        return bytes(value).decode("utf-8", "replace")
    return value


def parse_journal(text: str) -> list[dict[str, Any]]:
    """``journalctl -o json`` output: one object per line; binary values decoded to text. A field
    that occurs several times in one entry stays a list."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by the power-off
        entries.append({k: _as_text(v) for k, v in entry.items()})
    return entries


@dataclasses.dataclass
class RunResult:
    scenario: str
    results_dir: Path  # everything the guest wrote to results/, plus console.log and qemu.json
    console_log: Path  # the serial console (kernel, systemd status, scenario output)
    timed_out: bool  # QEMU was killed after timeout_s
    qemu_returncode: Optional[int]
    exit_status: Optional[int]  # scenario.sh's, None if the guest never got to write it
    journal: list[dict[str, Any]]
    dmesg: str
    files: dict[str, Path]  # the scenario's own files in results/ (relative name -> path)
    wall_s: float
    command: list[str] = dataclasses.field(default_factory=list)

    @property
    def finished(self) -> bool:
        """The guest ran the scenario to its end and powered off by itself."""
        return not self.timed_out and self.exit_status is not None

    def entries(self, **fields: str) -> list[dict[str, Any]]:
        """Journal entries whose fields have these values (MESSAGE_ID=..., _SYSTEMD_UNIT=...)."""
        return [e for e in self.journal if all(e.get(k) == v for k, v in fields.items())]

    def text(self, name: str, default: str = "") -> str:
        path = self.results_dir / name
        return path.read_text(errors="replace") if path.is_file() else default

    def json(self, name: str) -> Any:
        return json.loads(self.text(name))

    def tail(self, name: str, lines: int = 30) -> str:
        return "\n".join(self.text(name).splitlines()[-lines:])

    def describe(self) -> str:
        """A few lines for a failure message: how the run ended and where to look."""
        how = "timed out" if self.timed_out else f"qemu exit {self.qemu_returncode}"
        head = (
            f"scenario {self.scenario}: {how}, scenario exit status {self.exit_status}, "
            f"{self.wall_s:.1f} s; results in {self.results_dir}"
        )
        return "\n".join(
            [
                head,
                "--- scenario.log (end) ---",
                self.tail("scenario.log"),
                "--- console.log (end) ---",
                self.tail("console.log"),
            ]
        )


# --- running ----------------------------------------------------------------------------------


def repo_files(root: Path = REPO_ROOT) -> list[str]:
    """Paths (relative to root) of the repository as a clone plus the working tree has it:
    tracked files and untracked ones that .gitignore does not exclude. Outside a git checkout,
    every file except the usual build and cache directories."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        names = sorted({n for n in out.decode().split("\0") if n})
    except (OSError, subprocess.SubprocessError):
        skip = {
            ".git",
            ".venv",
            "__pycache__",
            "build",
            "dist",
            ".pytest_cache",
            ".mypy_cache",
            ".ruff_cache",
        }
        names = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(".egg-info")]
            names += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames]
        names.sort()
    return [n for n in names if os.path.lexists(root / n)]  # deleted but still tracked: left out


def pack_repo(dest: Path, root: Path = REPO_ROOT) -> int:
    """Write the repository's files (repo_files) to the tar file dest; returns how many."""
    names = repo_files(root)
    with tarfile.open(dest, "w") as tar:
        for name in names:
            tar.add(root / name, arcname=name, recursive=False)
    return len(names)


def _run_in_guest_sh(name: str, profile: Optional[str] = None) -> str:
    profiler = ""
    if profile:
        profiler = "export E2E_PROFILER=/mnt/e2e/tools/py-spy\n"
        profiler += "export E2E_PROFILER_IDLE=1\n" if profile == "idle" else ""
    return f"""#!/bin/bash
# Written by tests/e2e/vm.py for one run of scenario {name}.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8
export E2E_NAME={shlex.quote(name)}
export E2E_SHARE=/mnt/e2e
export E2E_REPO_TAR=/mnt/e2e/repo.tar
export E2E_SCENARIO=/mnt/e2e/scenario
export E2E_RESULTS=/mnt/e2e/results
export E2E_LIB=/mnt/e2e/lib/guest.sh
{profiler}set -a
. /mnt/e2e/scenario.env
set +a
cd "$E2E_SCENARIO"
exec /bin/bash ./scenario.sh
"""


def _kill(proc: subprocess.Popen[bytes], pidfd: Optional[int]) -> None:
    """SIGKILL the QEMU we started: through its pidfd, which cannot name another process."""
    if proc.poll() is not None:
        return
    if pidfd is not None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    else:  # no pidfd support: the child is not reaped yet, so its pid is still ours
        proc.kill()
    proc.wait(timeout=60)


def qemu_command(
    image: Image,
    overlay: Path,
    share: Path,
    *,
    memory_mib: int,
    cpus: int,
    kernel_args: Sequence[str] = (),
) -> list[str]:
    return [
        QEMU,
        "-accel",
        "tcg",  # nested KVM does not work on the development machines (ARENA.md)
        "-m",
        str(memory_mib),
        "-smp",
        str(cpus),
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        " ".join([*BASE_KERNEL_ARGS, *kernel_args]),
        "-drive",
        f"file={overlay},if=virtio,format=qcow2",
        "-virtfs",
        f"local,path={share},mount_tag=e2e,security_model=none",
        "-nic",
        "none",
        "-nographic",
        "-no-reboot",
    ]


def run_scenario(
    scenario_dir: Path,
    *,
    timeout_s: int,
    results_dir: Path,
    memory_mib: int = 1024,
    cpus: int = 2,
    env: Optional[Mapping[str, str]] = None,
    kernel_args: Sequence[str] = (),
    guest_timeout_s: Optional[int] = None,
    image: Optional[Image] = None,
    keep_workdir: bool = False,
    profile: Optional[str] = None,
) -> RunResult:
    """Boot a fresh guest, run ``scenario_dir/scenario.sh`` in it, and return what came back.

    timeout_s bounds the whole run (boot, scenario, collection, power-off): QEMU is killed then.
    The guest gives the scenario ``guest_timeout_s`` (default timeout_s - 90, which leaves room
    for a TCG boot and the collection), so a slow scenario still brings back its journal.
    results_dir receives the guest's results/ plus console.log and qemu.json (the command and how
    it ended); the overlay and the share are removed unless keep_workdir (or GUARDIAN_E2E_KEEP=1).
    profile ("cpu", "idle"; default: GUARDIAN_E2E_PROFILE, see profile_mode()) has guardian
    sampled by py-spy in the guest, into results/profile.txt.
    """
    scenario_dir = Path(scenario_dir).resolve()
    if not (scenario_dir / "scenario.sh").is_file():
        raise FileNotFoundError(f"{scenario_dir}: no scenario.sh")
    image = image or find_image()
    name = scenario_dir.name
    if guest_timeout_s is None:
        guest_timeout_s = max(30, timeout_s - 90)
    keep_workdir = keep_workdir or os.environ.get("GUARDIAN_E2E_KEEP") == "1"
    profile = profile_mode(profile)
    profiler = py_spy_binary() if profile else None
    bad = [k for k in (env or {}) if not k.isidentifier()]
    if bad:
        raise ValueError(f"env names must be shell identifiers: {bad}")
    results_dir = Path(results_dir)
    if results_dir.exists():
        # only ever a previous run's results (or an empty directory) is replaced
        marks = ("qemu.json", "console.log")
        if any(results_dir.iterdir()) and not any((results_dir / m).exists() for m in marks):
            raise FileExistsError(f"{results_dir} exists and holds no earlier e2e results: not replacing it")
        shutil.rmtree(results_dir)
    results_dir.mkdir(parents=True)
    console_log = results_dir / "console.log"

    workdir = Path(tempfile.mkdtemp(prefix=f"guardian-e2e-{name}-"))
    try:
        overlay = workdir / "overlay.qcow2"
        subprocess.run(
            [QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", str(image.disk), "-F", "raw", str(overlay)],
            check=True,
            timeout=60,
        )
        share = workdir / "share"
        share.mkdir()
        pack_repo(share / "repo.tar")
        shutil.copytree(scenario_dir, share / "scenario", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(GUEST_LIB_DIR, share / "lib")
        (share / "scenario.env").write_text(
            "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in (env or {}).items())
        )
        (share / "run-in-guest.sh").write_text(_run_in_guest_sh(name, profile))
        if profiler is not None:
            (share / "tools").mkdir()
            shutil.copy2(profiler, share / "tools" / "py-spy")
        (share / "guest_timeout_s").write_text(f"{guest_timeout_s}\n")
        (share / "results").mkdir()

        command = qemu_command(
            image, overlay, share, memory_mib=memory_mib, cpus=cpus, kernel_args=kernel_args
        )
        timed_out = False
        start = time.monotonic()
        with open(console_log, "wb") as console:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT
            )
            pidfd: Optional[int] = None
            try:
                if hasattr(os, "pidfd_open"):
                    try:
                        pidfd = os.pidfd_open(proc.pid)
                    except OSError:
                        pidfd = None
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
            finally:
                try:
                    _kill(proc, pidfd)  # on a timeout, and if anything above raised
                finally:
                    if pidfd is not None:
                        os.close(pidfd)
        wall_s = time.monotonic() - start

        shutil.copytree(share / "results", results_dir, dirs_exist_ok=True)
    finally:
        if keep_workdir:
            print(f"e2e: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    (results_dir / "qemu.json").write_text(
        json.dumps(
            {"command": command, "returncode": proc.returncode, "timed_out": timed_out, "wall_s": wall_s},
            indent=2,
        )
        + "\n"
    )
    return read_result(results_dir, name)


def read_result(results_dir: Path, name: Optional[str] = None) -> RunResult:
    """The RunResult of a finished run, from its results directory (run_scenario's return value,
    or a later look at a kept run: the benchmark re-reads its runs this way)."""
    results_dir = Path(results_dir)
    qemu = json.loads((results_dir / "qemu.json").read_text())
    status_text = (
        (results_dir / "exit_status").read_text().strip() if (results_dir / "exit_status").is_file() else ""
    )
    journal_path = results_dir / "journal.json"
    dmesg_path = results_dir / "dmesg.txt"
    files = {
        str(p.relative_to(results_dir)): p
        for p in sorted(results_dir.rglob("*"))
        if p.is_file() and str(p.relative_to(results_dir)) not in (*RUNNER_FILES, "console.log", "qemu.json")
    }
    return RunResult(
        scenario=name or results_dir.name,
        results_dir=results_dir,
        console_log=results_dir / "console.log",
        timed_out=bool(qemu["timed_out"]),
        qemu_returncode=qemu["returncode"],
        exit_status=int(status_text) if status_text.lstrip("-").isdigit() else None,
        journal=parse_journal(journal_path.read_text(errors="replace")) if journal_path.is_file() else [],
        dmesg=dmesg_path.read_text(errors="replace") if dmesg_path.is_file() else "",
        files=files,
        wall_s=float(qemu["wall_s"]),
        command=list(qemu["command"]),
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python tests/e2e/vm.py SCENARIO_DIR [RESULTS_DIR]``: one run by hand, checked by its expect.py."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("scenario", type=Path)
    parser.add_argument("results", type=Path, nargs="?")
    parser.add_argument("--timeout", type=int, help="override the scenario's TIMEOUT_S")
    args = parser.parse_args(argv)
    scenario = load_scenario(args.scenario)
    results = args.results or Path(tempfile.gettempdir()) / f"guardian-e2e-results-{scenario.name}"
    overrides = {"timeout_s": args.timeout} if args.timeout else {}
    result = scenario.run(results, **overrides)
    failures = scenario.check(result)
    print(result.describe() if failures else f"scenario {scenario.name}: passed in {result.wall_s:.1f} s")
    for failure in failures:
        print(f"FAIL: {failure}")
    print(f"results: {result.results_dir}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # expect.py imports e2e.checks
    raise SystemExit(main())
