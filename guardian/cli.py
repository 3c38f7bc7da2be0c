"""The ``guardian`` command.

Exit codes (documented in README.md, "Exit codes"):

  0   success
  1   a kernel interface guardian needs is missing or unreadable, or another runtime error
  2   usage error (unknown option, bad argument, a --scope that names no cgroup)
  78  the configuration is invalid: the policy, or GUARDIAN_LOG_FORMAT (EX_CONFIG from
      sysexits.h; the systemd unit's RestartPreventExitStatus names it so a broken
      configuration is not restarted in a loop)
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from guardian import __version__
from guardian.clock import Clock
from guardian.config import BUILT_IN, Policy, PolicyError, builtin_policy, load_policy
from guardian.errors import GuardianError, Unavailable
from guardian.host import Host, cgroup_path
from guardian.text import shown

if TYPE_CHECKING:
    from guardian.plugins import Plugins
    from guardian.records import StallRate

# Each command imports what it alone needs, in its own function: ``run`` must not pay at start
# for what ``status`` and ``rank`` print (explain, status, json), nor they for the daemon.
# tests/test_startup.py checks what ``run`` has imported by the time it says READY=1.

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        default="/",
        metavar="DIR",
        help="read the machine under DIR instead of / (a fixture tree, a chroot)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0.1):
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0.1 or more, got {text!r}")
    return value


def _columns() -> int:
    """``shutil.get_terminal_size().columns``, computed the same way (COLUMNS, else the
    terminal's width, else 80) without importing shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (ValueError, OSError):
            columns = 0
    return columns or 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, unchanged but for where the width comes from. argparse builds a
    formatter for every argument it adds, and its own imports shutil (and zlib, bz2 and lzma
    behind it: 1.5 ms of every start and their libraries' pages) to ask for the width."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: Optional[int] = None
    ) -> None:
        if width is None:
            width = _columns() - 2  # argparse, too, takes 2 off the width shutil gives it
        super().__init__(prog, indent_increment, max_help_position, width)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guardian",
        formatter_class=HelpFormatter,
        description="Userspace early-OOM guardian: senses memory pressure, ranks and kills "
        "before the kernel OOM killer does, and explains each decision.",
    )
    parser.add_argument("--version", action="version", version=f"guardian {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    status = sub.add_parser(
        "status",
        formatter_class=HelpFormatter,
        help="memory, swap, overcommit, PSI, the cgroups closest to trouble, kernel OOM kills",
        description="Show memory and swap, overcommit state, memory PSI (kernel averages and "
        "the live stall rate), the cgroups closest to their limit or under most pressure, and the "
        "kernel's own OOM kills (since boot, by cgroup, and the last ones in the kernel log).",
    )
    status.add_argument("--json", action="store_true", help="print JSON (keys in README.md)")
    status.add_argument(
        "--interval",
        type=_non_negative_float,
        default=0.5,
        metavar="SECONDS",
        help="measure the live memory stall rate over this many seconds (0: skip; default 0.5)",
    )
    status.add_argument(
        "--top",
        type=_positive_int,
        default=10,
        metavar="N",
        help="cgroups shown per table, and in --json the N closest to trouble (default 10)",
    )
    status.add_argument("--wide", action="store_true", help="print cgroup paths whole (tables only)")
    _add_root(status)

    rank = sub.add_parser(
        "rank",
        formatter_class=HelpFormatter,
        help="rank kill candidates, top first, with each scorer's score",
        description="Rank the processes (or cgroups) guardian could kill in a scope, best victim "
        "first, with each scorer's score and the weighted total.",
    )
    rank.add_argument("--json", action="store_true", help="print JSON (keys in README.md)")
    rank.add_argument(
        "--explain",
        action="store_true",
        help="say why the first is first and why each excluded candidate is excluded",
    )
    rank.add_argument("--scope", metavar="CGROUP", help="rank only inside this cgroup subtree")
    rank.add_argument(
        "--mode",
        choices=("process", "cgroup"),
        default="process",
        help="rank processes (default) or cgroups for a group kill",
    )
    rank.add_argument("--top", type=_positive_int, metavar="N", help="show only the first N candidates")
    rank.add_argument(
        "--wide", action="store_true", help="print cgroup paths and scorer names whole (tables only)"
    )
    rank.add_argument(
        "--interval",
        type=_non_negative_float,
        default=1.0,
        metavar="SECONDS",
        help="read every cgroup's memory use twice this many seconds apart, so that growth counts "
        "as it does in the daemon (0: one reading, growth unknown; default 1; only when a scorer "
        "of the policy uses growth)",
    )
    _add_policy(rank)
    _add_root(rank)

    top = sub.add_parser(
        "top",
        formatter_class=HelpFormatter,
        help="a live view: memory, stall rate, cgroups nearest their lines, who would go first",
        description="Refresh in place every --interval seconds: memory, swap and zram, the live "
        "memory stall rate with its recent history, the cgroups nearest their limits or under most "
        "pressure, and the first three candidates the policy would kill, with why. q or Ctrl-C "
        "quits. When stdout is not a terminal, prints one block of plain lines per refresh.",
    )
    top.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="SECONDS",
        help="seconds between refreshes, 0.1 or more (default 1); the live stall rate is measured "
        "over this window",
    )
    top.add_argument("--count", type=_positive_int, metavar="N", help="stop after N refreshes")
    _add_policy(top)
    _add_root(top)

    check = sub.add_parser(
        "check",
        formatter_class=HelpFormatter,
        help="validate a policy without running it",
        description="Validate a policy file (and that the scorers and plugin settings it names exist) "
        "without running it, and list the plugins that can keep candidates from being killed "
        "(guardian_exclude). Exit 0 when valid, 78 with file, key and reason when not.",
    )
    _add_policy(check)
    _add_root(check)

    run = sub.add_parser(
        "run",
        formatter_class=HelpFormatter,
        help="run the daemon",
        description="Watch memory pressure and kill the worst process or cgroup before the kernel's "
        "OOM killer does, as the policy says. SIGHUP reloads the policy; SIGTERM stops.",
    )
    _add_policy(run)
    run.add_argument("--dry-run", action="store_true", help="decide and report, signal nothing")
    _add_root(run)

    record = sub.add_parser(
        "record",
        formatter_class=HelpFormatter,
        help="record what guardian decides on into a trace file, for replay",
        description="Record, every INTERVAL seconds, the files guardian decides on (meminfo, PSI, "
        "vmstat, the cgroup tree and its memory files, and the process facts the scorers read) "
        "into a compressed trace (docs/trace.md), until DURATION is over or SIGINT/SIGTERM.",
    )
    record.add_argument("--out", required=True, metavar="FILE", help="the trace file to write (mode 0600)")
    record.add_argument(
        "--interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="time between frames (default 1)",
    )
    record.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after this long (default: at SIGINT/SIGTERM)",
    )
    record.add_argument(
        "--processes-every",
        type=_positive_int,
        default=10,
        metavar="N",
        help="read every process every N frames, and in each frame near a line of the policy (default 10)",
    )
    record.add_argument(
        "--max-size",
        type=_positive_int,
        default=64 << 20,
        metavar="BYTES",
        help="stop when the trace reaches this size (default 64 MiB)",
    )
    _add_policy(record)
    _add_root(record)

    replay = sub.add_parser(
        "replay",
        formatter_class=HelpFormatter,
        help="run a policy over a recorded trace: when it would have fired and whom it would have killed",
        description="Replay a trace written by 'guardian record' through a policy with the recorded "
        "clock: print when each trigger would have fired, at which level, and whom the daemon would "
        "have killed. Nothing is killed; after a would-be kill the trace goes on as recorded.",
    )
    replay.add_argument("trace", metavar="FILE", help="a trace written by guardian record")
    replay.add_argument("--json", action="store_true", help="print JSON (keys in docs/trace.md)")
    replay.add_argument(
        "--policy", metavar="FILE", help="the policy to replay the trace through (default: built-in defaults)"
    )
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def _add_policy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        metavar="FILE",
        help="policy file (default: /etc/guardian.toml under --root if it exists, else built-in defaults)",
    )


def load_policy_for(args: argparse.Namespace, host: Host) -> Policy:
    if args.policy:
        return load_policy(args.policy)
    default = host.policy_path()
    return load_policy(default) if os.path.exists(default) else builtin_policy()


def plugins_for(policy: Policy, host: Host) -> Plugins:
    from guardian.plugins import make_plugin_manager

    directory = policy.plugins.directory or host.plugin_dir()
    return make_plugin_manager(directory, entry_points=policy.plugins.entry_points)


def measure_live_stall(host: Host, clock: Clock, interval_s: float) -> Optional[StallRate]:
    """Two readings of /proc/pressure/memory ``interval_s`` apart; None without PSI."""
    from guardian.sources.psi import read_pressure, stall_rate

    if interval_s <= 0:
        return None
    try:
        t0, first = clock.monotonic_us(), read_pressure(host, "memory")
        clock.sleep(interval_s)
        t1, second = clock.monotonic_us(), read_pressure(host, "memory")
    except Unavailable:
        return None
    if t1 <= t0:
        return None
    return stall_rate(first, second, t1 - t0)


def _finite(value: Any) -> Any:
    """``value`` with every nan and infinity replaced by None, at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def json_text(report: Any) -> str:
    """A report as JSON: no NaN or Infinity (invalid JSON; the reports make their numbers finite,
    this is the last guard) and ASCII only, so it is valid UTF-8 whatever the locale. A lone
    surrogate that skipped shown() would still be escaped as ``\\udcff`` rather than crash."""
    import json

    return json.dumps(_finite(report), indent=2, allow_nan=False) + "\n"


def write_out(text: str) -> None:
    """Write to stdout as UTF-8, whatever the locale says: names are shown() already, and a
    terminal in the C locale must not turn a cgroup called "café" into a traceback."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a stream without bytes underneath (an io.StringIO)
        sys.stdout.write(text)
        return
    sys.stdout.flush()
    buffer.write(text.encode("utf-8", "backslashreplace"))
    buffer.flush()


def cmd_status(args: argparse.Namespace, clock: Clock) -> int:
    from guardian.sample import Sample
    from guardian.status import build_status, render_status, with_top

    host = Host(args.root)
    live = measure_live_stall(host, clock, args.interval)
    report = build_status(Sample(host, clock.monotonic_us()), live)
    write_out(
        json_text(with_top(report, args.top)) if args.json else render_status(report, args.top, args.wide)
    )
    return EXIT_OK


def scope_of(host: Host, text: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """``--scope`` as a cgroup path (``system.slice/`` -> ``/system.slice``), and None; or None
    and why it names no cgroup, in words."""
    if text is None:
        return None, None
    try:
        scope = cgroup_path(text)
    except ValueError as exc:
        return None, f"--scope '{shown(text)}': {exc}; give a cgroup path like /system.slice"
    if scope != "/" and not host.cgroup_exists(scope):
        layout = host.cgroup_layout()
        mounts = [m.mount_point for m in (layout.v2_mount, layout.v1_memory_mount) if m is not None]
        where = " or ".join(shown(host.path(m)) for m in mounts) or "nowhere (no cgroup hierarchy is mounted)"
        return None, f"--scope {shown(scope)}: no such cgroup under {where}"
    return scope, None


def cmd_rank(args: argparse.Namespace, clock: Clock) -> int:
    from guardian.explain import build_rank_report, explain, render_rank
    from guardian.history import Histories
    from guardian.sample import Sample
    from guardian.selection import Selector

    host = Host(args.root)
    scope, bad_scope = scope_of(host, args.scope)
    if bad_scope is not None:
        print(f"guardian rank: {bad_scope}", file=sys.stderr)
        return EXIT_USAGE
    policy = load_policy_for(args, host)
    plugins = plugins_for(policy, host)
    selector = Selector(policy, plugins)
    history = None
    if selector.uses_growth and args.interval > 0:
        history = Histories()
        first = Sample(host, clock.monotonic_us())
        history.cgroups.record(first.time_us, *first.cgroup_usage())
        history.record_processes(first.time_us, first.processes_in(scope))
        clock.sleep(args.interval)
    ranking = selector.rank(Sample(host, clock.monotonic_us()), mode=args.mode, scope=scope, history=history)
    report = build_rank_report(host, ranking, plugins.errors, top=args.top)
    explanation = explain(ranking) if args.explain else None
    if args.json:
        if explanation is not None:
            report["explanation"] = explanation
        write_out(json_text(report))
    else:
        write_out(render_rank(report, explanation, wide=args.wide))
    for error in plugins.errors:
        print(f"guardian rank: {shown(error)}", file=sys.stderr)
    return EXIT_OK


def cmd_top(args: argparse.Namespace, clock: Clock) -> int:
    from guardian.selection import Selector
    from guardian.top import LogLines, Monitor, Quit, Screen, Terminal, quit_on_signals, watch

    host = Host(args.root)
    policy = load_policy_for(args, host)
    plugins = plugins_for(policy, host)
    monitor = Monitor(host, Selector(policy, plugins), plugins.errors, clock, args.interval)
    name = shown(args.policy or (host.policy_path() if os.path.exists(host.policy_path()) else BUILT_IN))
    stdout = sys.stdout
    on_terminal = stdout.isatty() and os.environ.get("TERM") != "dumb"
    try:
        with quit_on_signals():
            if on_terminal:
                try:  # keys come from stdin when it is a terminal too
                    keys: Optional[int] = sys.stdin.fileno()
                except (AttributeError, ValueError, OSError):  # no stdin, or closed
                    keys = None
                with Terminal(write_out, stdout.fileno(), keys) as screen:
                    watch(monitor, screen, clock, args.count, name)
            else:
                lines: Screen = LogLines(write_out, clock)
                watch(monitor, lines, clock, args.count, name)
    except (KeyboardInterrupt, Quit):
        pass  # Ctrl-C (or SIGTERM, SIGHUP) is how a live view is left: not an error
    return EXIT_OK


def cmd_check(args: argparse.Namespace, clock: Clock) -> int:
    from guardian.loaded import load, summarize

    host = Host(args.root)
    path = args.policy or (host.policy_path() if os.path.exists(host.policy_path()) else None)
    loaded = load(host, path, dry_run=False)
    name = path or BUILT_IN
    if loaded.plugins.errors:
        # the policy would run without these plugins, and a reload would be rejected: say so
        for error in loaded.plugins.errors:
            print(f"guardian check: {shown(name)}: {shown(error)}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{shown(name)}: valid: {shown(summarize(loaded.policy))}")
    # an installed package can change who may be killed without a line of the policy changing
    hooks = loaded.plugins.exclude_hooks()
    listed = ", ".join(info.describe() for info in hooks) or "none"
    print(f"{shown(name)}: plugins that can keep candidates from being killed (guardian_exclude): {listed}")
    vetoes = ", ".join(info.describe() for info in loaded.plugins.implementing("guardian_before_kill"))
    print(f"{shown(name)}: plugins that can veto a kill (guardian_before_kill): {vetoes or 'none'}")
    if loaded.policy.hooks:
        import shlex  # check alone needs it: a start does not import it

        commands = "; ".join(f"{h.label}: {shlex.join(h.command)}" for h in loaded.policy.hooks)
        print(f"{shown(name)}: commands run after a kill: {shown(commands)}")
    for i, rule in enumerate(loaded.policy.cgroups):
        prefix, depth = rule.walk()
        if not any(rule.matches(path) for path in host.cgroups_below(prefix, depth)):
            print(
                f"note: cgroup[{i}].match {shown(repr(rule.match))} matches no cgroup here now "
                "(it applies to matching groups as they appear)"
            )
    return EXIT_OK


def cmd_run(args: argparse.Namespace, clock: Clock) -> int:
    # What a start makes (modules, plugins, the policy) lives as long as the daemon: the cyclic
    # collector would only walk it again and again before READY=1 (about 20 passes, 1.5-2 ms of
    # the start). Service.run collects once after READY=1, freezes what is left and turns the
    # collector back on; a start that ends before that turns it back on here.
    collecting = gc.isenabled()
    gc.disable()
    try:
        from guardian.daemon.engine import Engine
        from guardian.daemon.service import Service
        from guardian.loaded import load
        from guardian.notify import Notifier
        from guardian.report import QueuedSink, Reporter, default_sink

        host = Host(args.root)
        path = args.policy or (host.policy_path() if os.path.exists(host.policy_path()) else None)
        loaded = load(host, path, dry_run=args.dry_run)
        sink = QueuedSink(default_sink(host.journal_socket()))
        engine = Engine(host, loaded, Reporter(sink), clock)
        try:
            return Service(engine, path, args.dry_run, Notifier()).run()
        finally:
            sink.close()
    finally:
        if collecting:
            gc.enable()


def cmd_record(args: argparse.Namespace, clock: Clock) -> int:
    import signal

    from guardian.loaded import load
    from guardian.trace.hosts import RecordingHost
    from guardian.trace.record import open_out, record

    host = RecordingHost(args.root)
    path = args.policy or (host.policy_path() if os.path.exists(host.policy_path()) else None)
    loaded = load(host, path, dry_run=True)
    stop: list[int] = []

    def stopping(signum: int, frame: object) -> None:
        stop.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stopping)
    with open_out(args.out) as out:
        done = record(
            host,
            loaded,
            out,
            clock,
            interval_s=args.interval,
            duration_s=args.duration,
            processes_every=args.processes_every,
            max_bytes=args.max_size,
            stopping=lambda: bool(stop),
        )
        size = out.tell()
    span = max(done.frames - 1, 0) * args.interval
    per_minute = f", {size * 60 / span / 1024:.1f} KiB per minute" if span > 0 else ""
    cpu = f", CPU {done.cpu_s / done.frames * 1e3:.1f} ms per frame" if done.frames else ""
    print(
        f"guardian record: {done.frames} frames ({done.process_frames} with process facts) to "
        f"{shown(args.out)}: {size} bytes ({done.raw_bytes} uncompressed){per_minute}{cpu}",
        file=sys.stderr,
    )
    if done.stopped:
        print(f"guardian record: stopped early: {done.stopped}", file=sys.stderr)
    return EXIT_OK


def cmd_replay(args: argparse.Namespace, clock: Clock) -> int:
    from guardian.trace.fileformat import TraceReader
    from guardian.trace.replay import render_event, replay, summary

    reader = TraceReader(args.trace)
    try:
        header = reader.header
        if not args.json:
            write_out(
                f"replay of {shown(args.trace)}: recorded {shown(header.started)} under "
                f"{shown(header.root)} every {header.interval_s:g} s (process facts every "
                f"{header.processes_every} frames and near a line of {shown(header.policy)})\n"
                f"policy: {shown(args.policy or 'built-in defaults')}; nothing is killed: after a "
                "would-be kill the trace goes on as recorded (the recorded machine did what it did)\n"
            )
        if args.json:
            result = replay(reader, args.policy)
        else:
            result = replay(reader, args.policy, lambda event: write_out(render_event(event) + "\n"))
    finally:
        reader.close()
    report = summary(result, args.trace)
    if args.json:
        report["events"] = result.events
        write_out(json_text(report))
    else:
        victims = ", ".join(
            f"{v['action']} pid {v['pid']} ({shown(str(v['comm']))}) at {v['t_s']:+.2f}s"
            for v in report["victims"]
        )
        write_out(
            f"{report['frames']} frames over {report['span_s']:g} s: {report['triggers']} trigger(s), "
            f"{report['kills']} would-be kill(s){': ' + victims if victims else ''}\n"
        )
    if result.error is not None:
        print(f"guardian replay: {result.error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None, clock: Optional[Clock] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    clock = clock or Clock()
    commands = {
        "status": cmd_status,
        "rank": cmd_rank,
        "top": cmd_top,
        "check": cmd_check,
        "run": cmd_run,
        "record": cmd_record,
        "replay": cmd_replay,
    }
    try:
        return commands[args.command](args, clock)
    except BrokenPipeError:
        # `guardian status | head`: the reader left; say nothing more (and let Python's exit
        # flush go to /dev/null instead of raising again)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except PolicyError as exc:
        print(f"guardian {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (GuardianError, OSError) as exc:
        print(f"guardian {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
