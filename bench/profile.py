"""Where guardian's CPU goes in an end-to-end scenario: one run in the QEMU guest with py-spy
sampling the daemon, then the frames that took the samples.

    .venv/bin/python bench/profile.py zram-swap [--results DIR] [--top 15] [--rate 20] [--idle]
    .venv/bin/python bench/profile.py --summarize DIR_OR_PROFILE_TXT [--top 15]

The run is tests/e2e/vm.py's with ``profile="cpu"`` (what ``GUARDIAN_E2E_PROFILE=1`` asks of any
e2e run): once guardian is up, guest.sh's ``start_daemon`` starts ``nice -n -20 py-spy record
--pid <guardian's MainPID> --rate 20 --format raw --nonblocking``, and ``record_outcome`` stops it
(SIGINT to its pid) before the results come back, so ``results/profile.txt`` covers guardian
from READY to the end of the scenario. py-spy comes from its PyPI wheel (a static binary),
fetched once into the e2e cache. As root, with the guest image built (tests/e2e/build_image.sh).

What is counted: at each tick py-spy reads guardian's stack; without ``--idle`` it keeps a
sample only when the thread's state is running or runnable (not asleep in poll() or a read that
waits), so the counts are guardian's busy time, in 1/rate s, and "% of samples" is a share of
it. Runnable includes waiting for the CPU: a sample innermost in a wait (``Waiter.wait``'s
poll() line) is guardian inside the system call yet not asleep: woken and not yet back in
Python, or the kernel's own work for the call (setting up the poll of every fd); no Python
work, and py-spy cannot tell the two apart. ``--idle`` keeps the idle
samples too (wall time). ``--nonblocking`` does not stop guardian to read its stack, so a few
samples may be torn; ``nice -n -20`` lets py-spy take its samples on time against guardian's own
Nice=-10 (at nice 0 on one vCPU it fell seconds behind and saw guardian mostly asleep).

The rate: under emulation (TCG) one sample costs py-spy about 3 ms of the guest's CPU. At 100/s
(zram-swap, one vCPU) py-spy used 25 s of CPU in an 82 s window and the episode took 71 s
instead of 41; at 20/s, 4.7 s in 58 s. Hence 20/s by default; ``--rate`` changes it.

The summary has three tables over the same samples: by function (``function (file)``), self,
the samples in which it was the innermost frame (where the CPU actually was), and cumulative,
the samples in which it was anywhere on the stack (once per sample even when it recurses); and
the innermost lines, with their text from this checkout (the guest ran the same tree). With the
benchmark's own numbers of the run (outcome.json: s to kill, daemon CPU over the episode).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from e2e import bench, vm  # noqa: E402 - tests/ is on the path only from here on

LINE = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def function_of(frame: str) -> str:
    """``Waiter.wait (guardian/daemon/wakeups.py:309)`` -> ``Waiter.wait (guardian/daemon/wakeups.py)``."""
    m = LINE.match(frame)
    return f"{m.group('function')} ({m.group('file')})" if m else frame


@dataclass
class Profile:
    samples: int  # every stack's count, added up
    self_counts: Counter[str]  # innermost function -> samples
    cumulative: Counter[str]  # function anywhere on the stack -> samples (once per stack)
    self_lines: Counter[str]  # innermost frame, with its line -> samples
    stacks: int  # distinct stacks


def parse_raw(lines: Iterable[str]) -> Profile:
    """py-spy's raw (collapsed) format: ``frame;frame;...;innermost COUNT`` per line, outermost
    first, each frame ``function (file:line)``. Lines that do not end in a count are skipped."""
    self_counts: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    self_lines: Counter[str] = Counter()
    samples = stacks = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        stacks += 1
        self_lines[frames[-1]] += count
        self_counts[function_of(frames[-1])] += count
        for function in {function_of(f) for f in frames}:
            cumulative[function] += count
    return Profile(samples, self_counts, cumulative, self_lines, stacks)


def source_line(frame: str, root: Path = ROOT) -> str:
    """The text of a frame's line, from this checkout (the guest ran the same tree), or ""."""
    m = LINE.match(frame)
    if not m or not m.group("line"):
        return ""
    path = root / m.group("file")
    try:
        return path.read_text().splitlines()[int(m.group("line")) - 1].strip()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


@dataclass
class Window:
    seconds: float  # from py-spy's start to its stop (guest uptime)
    rate: int  # samples asked for per second
    profiler_cpu_s: Optional[float]  # py-spy's own CPU time


def read_window(text: str) -> Optional[Window]:
    """profile-window.txt: ``start UPTIME guardian PID rate N MODE`` and ``end UPTIME
    profiler_cpu_ticks T clk_tck HZ`` (guest.sh's start_profiler and stop_profiler)."""
    lines = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            lines[parts[0]] = parts
    if "start" not in lines or "end" not in lines:
        return None
    start, end = lines["start"], lines["end"]
    try:
        fields = dict(zip(start[2::2], start[3::2]))
        fields.update(zip(end[2::2], end[3::2]))
        cpu = None
        if "profiler_cpu_ticks" in fields and "clk_tck" in fields:
            cpu = int(fields["profiler_cpu_ticks"]) / int(fields["clk_tck"])
        return Window(float(end[1]) - float(start[1]), int(fields.get("rate", 100)), cpu)
    except ValueError:
        return None


def table(title: str, counts: Counter[str], samples: int, top: int, code: bool = False) -> str:
    lines = [title, f"{'samples':>8} {'%':>6}  frame"]
    for frame, count in counts.most_common(top):
        text = source_line(frame) if code else ""
        lines.append(f"{count:8d} {100.0 * count / samples:5.1f}%  {frame}" + (f"  | {text}" if text else ""))
    return "\n".join(lines)


def summary(profile: Profile, top: int, window: Optional[Window] = None) -> str:
    if not profile.samples:
        return "no samples in the profile"
    head = f"{profile.samples} samples in {profile.stacks} distinct stacks"
    if window and window.seconds > 0:
        asked = window.seconds * window.rate
        head += (
            f"; sampled for {window.seconds:.1f} s at {window.rate}/s: {profile.samples / window.rate:.2f} s "
            f"of samples, {100.0 * profile.samples / asked:.1f} % of the {asked:.0f} samples asked for"
        )
        if window.profiler_cpu_s is not None:
            head += f"; py-spy itself used {window.profiler_cpu_s:.2f} s of CPU"
    return "\n\n".join(
        [
            head,
            table(
                f"top {top} functions by self samples (innermost)", profile.self_counts, profile.samples, top
            ),
            table(
                f"top {top} functions by cumulative samples (anywhere on the stack)",
                profile.cumulative,
                profile.samples,
                top,
            ),
            table(
                f"top {top} lines by self samples (a wait such as poll() here is guardian inside the "
                "call and not asleep: woken but not yet back in Python, or the kernel's work for it)",
                profile.self_lines,
                profile.samples,
                top,
                code=True,
            ),
        ]
    )


def summarize(path: Path, top: int) -> str:
    """The summary of a profile.txt, or of the one in a results directory (with its window and
    the run's outcome.json when they are there)."""
    directory = path if path.is_dir() else path.parent
    profile_txt = path / "profile.txt" if path.is_dir() else path
    if not profile_txt.is_file():
        log = directory / "profile.log"
        why = log.read_text(errors="replace").strip() if log.is_file() else "no profile.log either"
        return f"{profile_txt}: no profile ({why})"
    window_txt = directory / "profile-window.txt"
    window = read_window(window_txt.read_text()) if window_txt.is_file() else None
    parts = [f"profile: {profile_txt}"]
    outcome = directory / "outcome.json"
    if outcome.is_file():
        o = json.loads(outcome.read_text())
        parts.append(
            f"run: {o['scenario']} with {o['daemon']}: right victim {o['right_victim']}, "
            f"s to kill {o['s_to_kill']}, worst stall {o['worst_stall_ms']} ms, "
            f"daemon CPU over the episode {o['daemon_cpu_s']} s"
        )
    with open(profile_txt, errors="replace") as f:
        parts.append(summary(parse_raw(f), top, window))
    return "\n".join(parts[:-1]) + "\n\n" + parts[-1]


def run(scenario_name: str, results: Path, idle: bool, rate: int) -> Path:
    scenario = vm.load_scenario(vm.SCENARIOS_DIR / scenario_name)
    print(f"profile: {scenario.name} with guardian, py-spy in the guest at {rate}/s ...", flush=True)
    env = {**scenario.env, "E2E_PROFILER_RATE": str(rate)}
    result = scenario.run(results, profile="idle" if idle else "cpu", env=env)
    outcome = bench.judge(scenario, "guardian", result)
    print(f"profile: {result.wall_s:.0f} s; " + " | ".join(outcome.row()[2:]), flush=True)
    for failure in outcome.failures:
        print(f"profile:   check failed: {failure}", flush=True)
    return result.results_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", help="a scenario under tests/e2e/scenarios/ to run")
    parser.add_argument("--results", type=Path, help="default: /tmp/guardian-profile/SCENARIO")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--idle", action="store_true", help="keep idle samples too (wall time)")
    parser.add_argument("--rate", type=int, default=20, help="samples per second (default 20)")
    parser.add_argument("--summarize", type=Path, metavar="PATH", help="run nothing: summarize this")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize, args.top))
        return 0
    if not args.scenario:
        parser.error("give a scenario to run, or --summarize PATH")
    results = args.results or Path("/tmp/guardian-profile") / args.scenario
    print(summarize(run(args.scenario, results, args.idle, args.rate), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
