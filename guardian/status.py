"""``guardian status``: what an operator wants to know first, as a dict (``--json``) and as text.

The dict is the single source: the text view is rendered from it. Every key is documented in
README.md ("guardian status --json"); a test keeps the two in step.

Every string in the dict that the kernel or a user chose (cgroup paths, mount points, event
names, reasons that quote a file) has been through shown(): one printable line of valid UTF-8,
whatever bytes the name holds. Every number is finite.
"""

from __future__ import annotations

from typing import Any, Optional

from guardian.errors import Malformed, Unavailable
from guardian.records import CgroupMemory, KernelOomKill, Pressure, PsiLine, StallRate
from guardian.sample import Sample
from guardian.sources.kmsg import read_logged_kills
from guardian.sources.psi import RESOURCES
from guardian.text import human_bytes, middle, shown

Report = dict[str, Any]
RECENT_KERNEL_KILLS = 5  # the kernel log's last OOM kills shown


def _psi_line(line: Optional[PsiLine]) -> Optional[dict[str, Any]]:
    if line is None:
        return None
    return {
        "avg10": line.avg10_pct,
        "avg60": line.avg60_pct,
        "avg300": line.avg300_pct,
        "total_us": line.total_us,
    }


def _pressure(p: Optional[Pressure]) -> Optional[dict[str, Any]]:
    if p is None:
        return None
    return {"some": _psi_line(p.some), "full": _psi_line(p.full)}


def _live(rate: Optional[StallRate]) -> Optional[dict[str, Any]]:
    if rate is None:
        return None
    return {"window_us": rate.window_us, "some_pct": rate.some_pct, "full_pct": rate.full_pct}


def _cgroup_entry(path: str, memory: Optional[CgroupMemory], pressure: Optional[Pressure]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": shown(path),
        "memory_source": memory.source if memory else None,
        "current_bytes": memory.current_bytes if memory else None,
        "max_bytes": memory.max_bytes if memory else None,
        "high_bytes": memory.high_bytes if memory else None,
        "headroom_bytes": memory.headroom_bytes if memory else None,
        "usage_pct": memory.usage_pct if memory else None,
        "swap_current_bytes": memory.swap_current_bytes if memory else None,
        "oom_group": memory.oom_group if memory else None,
        "events": {shown(k): v for k, v in memory.events.items()} if memory else {},
        "pressure": _pressure(pressure),
    }
    return entry


def concern(entry: dict[str, Any]) -> float:
    """How close a cgroup is to trouble, 0..1: the larger of its usage/limit and its memory
    some-avg10 stall fraction. Used to order the cgroup list."""
    usage = (entry["usage_pct"] or 0.0) / 100.0
    pressure = entry["pressure"]
    stall = pressure["some"]["avg10"] / 100.0 if pressure else 0.0
    return float(max(usage, stall))


def build_status(sample: Sample, live: Optional[StallRate] = None) -> Report:
    """Assemble the status report from one Sample (and a live memory stall rate if measured)."""
    host = sample.host
    unavailable: list[dict[str, str]] = []

    def note(exc: Unavailable) -> None:
        item = {"feature": shown(exc.feature), "reason": shown(exc.reason)}
        if item not in unavailable:
            unavailable.append(item)

    layout = host.cgroup_layout()
    report: Report = {
        "root": shown(host.root or "/"),
        "cgroup_layout": {
            "mode": layout.mode,
            "v2_mount": shown(layout.v2_mount.mount_point) if layout.v2_mount else None,
            "v1_memory_mount": shown(layout.v1_memory_mount.mount_point) if layout.v1_memory_mount else None,
            "memory_controller": layout.memory_controller,
        },
    }
    if layout.v2_mount is None:
        note(Unavailable("cgroup2", "no cgroup2 filesystem is mounted"))
    if layout.memory_controller is None:
        note(Unavailable("memory cgroup", "no hierarchy has the memory controller"))
    elif layout.memory_controller == "v1" and layout.v2_mount is not None:
        note(
            Unavailable(
                "cgroup2 memory controller",
                "memory is accounted by cgroup v1 here; cgroup2 gives pressure and cgroup.kill only",
            )
        )

    mem = sample.meminfo
    report["memory"] = {
        "total_bytes": mem.total_bytes,
        "available_bytes": mem.available_bytes,
        "available_pct": round(mem.available_pct, 2),
        "available_estimated": mem.available_estimated,
        "free_bytes": mem.free_bytes,
        "swap_total_bytes": mem.swap_total_bytes,
        "swap_free_bytes": mem.swap_free_bytes,
        "swap_free_pct": None if mem.swap_free_pct is None else round(mem.swap_free_pct, 2),
        "commit_limit_bytes": mem.commit_limit_bytes,
        "committed_as_bytes": mem.committed_as_bytes,
        "anon_bytes": mem.anon_pages_bytes,
        "shmem_bytes": mem.shmem_bytes,
        "zram": [
            {
                "name": shown(z.name),
                "disksize_bytes": z.disksize_bytes,
                "orig_data_bytes": z.orig_data_bytes,
                "compr_data_bytes": z.compr_data_bytes,
                "mem_used_total_bytes": z.mem_used_total_bytes,
            }
            for z in sample.zram
        ],
    }

    sysctl = sample.vm_sysctl
    report["overcommit"] = {
        "overcommit_memory": sysctl.overcommit_memory,
        "overcommit_ratio": sysctl.overcommit_ratio,
        "panic_on_oom": sysctl.panic_on_oom,
        "oom_kill_allocating_task": sysctl.oom_kill_allocating_task,
        "warnings": sysctl.warnings(),
    }
    for name, why in sysctl.unreadable.items():
        note(Unavailable(f"vm.{name}", why))

    psi: dict[str, Any] = {}
    for resource in RESOURCES:
        try:
            psi[resource] = _pressure(sample.pressure(resource))
        except Unavailable as exc:
            psi[resource] = None
            note(exc)
    if psi["memory"] is not None:
        psi["memory"]["live"] = _live(live)
    report["psi"] = psi

    try:
        vm = sample.vmstat
        report["vmstat"] = {
            "pgscan": vm.pgscan,
            "pgsteal": vm.pgsteal,
            "workingset_refault": vm.workingset_refault,
            "oom_kill": vm.oom_kill,
        }
    except Unavailable as exc:
        report["vmstat"] = None
        note(exc)

    entries = []
    for path in sample.cgroup_paths:
        group = sample.cgroup(path)
        memory: Optional[CgroupMemory]
        pressure: Optional[Pressure]
        try:
            memory = group.memory
        except Malformed as exc:
            memory = None
            note(exc)  # a file there but unreadable: the operator should hear which
        except Unavailable:
            memory = None  # only in the v2 tree on a hybrid host, or no memory controller
        try:
            pressure = group.pressure
        except Malformed as exc:
            pressure = None
            note(exc)
        except Unavailable:
            pressure = None  # only in the v1 tree, or no PSI
        if memory is None and pressure is None:
            continue
        entries.append(_cgroup_entry(path, memory, pressure))
    entries.sort(key=lambda e: (-concern(e), e["path"]))
    report["cgroups"] = entries
    report["kernel_oom_kills"] = _kernel_oom_kills(sample, report, entries)
    report["unavailable"] = unavailable
    return report


def _kill_entry(kill: KernelOomKill) -> dict[str, Any]:
    return {
        "pid": kill.pid,
        "comm": shown(kill.comm),
        "cgroup": None if kill.task_memcg is None else shown(kill.task_memcg),
        "context": shown(kill.context),
        "constraint": kill.constraint,
        "oom_memcg": None if kill.oom_memcg is None else shown(kill.oom_memcg),
        "anon_rss_bytes": kill.anon_rss_bytes,
        "file_rss_bytes": kill.file_rss_bytes,
        "shmem_rss_bytes": kill.shmem_rss_bytes,
        "kernel_time_us": kill.kernel_time_us,
    }


def _kernel_oom_kills(sample: Sample, report: Report, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The kernel's own OOM kills, from what the kernel keeps (guardian's daemon reports each
    one as it happens; status is another process, and reads the kernel's record): the count
    since boot, the cgroups whose oom_kill counter is not 0, and the last kills in the kernel
    log's buffer (kernel.dmesg_restrict may keep it from a user without CAP_SYSLOG)."""
    vmstat = report["vmstat"]
    counted = [
        {"path": e["path"], "oom_kill": e["events"]["oom_kill"]}
        for e in entries
        if e["events"].get("oom_kill")
    ]
    counted.sort(key=lambda c: (-c["oom_kill"], c["path"]))
    log: dict[str, Any] = {"readable": True, "reason": None, "kills": 0, "recent": []}
    try:
        kills = read_logged_kills(sample.host)
    except Unavailable as exc:
        log.update(readable=False, reason=shown(exc.reason))
    else:
        log.update(kills=len(kills), recent=[_kill_entry(k) for k in kills[-RECENT_KERNEL_KILLS:]])
    return {"since_boot": None if vmstat is None else vmstat["oom_kill"], "cgroups": counted, "log": log}


# --- text --------------------------------------------------------------------------------------


def _render_kernel_kills(kernel: dict[str, Any], width: int) -> list[str]:
    """The kernel's OOM kills: nothing when there were none and the log could be read."""
    log = kernel["log"]
    if not kernel["since_boot"] and not kernel["cgroups"] and not log["kills"] and log["readable"]:
        return []
    out = [
        "",
        f"kernel OOM kills: {kernel['since_boot'] if kernel['since_boot'] is not None else '-'} since boot",
    ]
    if not log["readable"]:
        out.append(f"  the kernel log cannot be read: {log['reason']}")
    elif log["recent"]:
        out.append(f"  the last {len(log['recent'])} of {log['kills']} still in the kernel log:")
        for kill in log["recent"]:
            where = kill["oom_memcg"] if kill["constraint"] == "CONSTRAINT_MEMCG" else None
            scope = f"memory cgroup {where}" if where else (kill["constraint"] or kill["context"] or "-")
            out.append(
                f"  [{kill['kernel_time_us'] / 1e6:12.6f}] pid {kill['pid']} ({kill['comm']}) in "
                f"{kill['cgroup'] or '-'}: {scope}, anon-rss {human_bytes(kill['anon_rss_bytes'])}"
            )
    if kernel["cgroups"]:
        out.append(f"  {'cgroup':{width}} {'oom_kill':>10}")
        out.extend(f"  {middle(c['path'], width):{width}} {c['oom_kill']:>10}" for c in kernel["cgroups"])
    return out


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}%"


def with_top(report: Report, top: int) -> Report:
    """The report with only the ``top`` cgroups closest to trouble (``cgroups_total`` says how
    many there were): what ``status --json --top N`` prints."""
    return {**report, "cgroups": report["cgroups"][:top], "cgroups_total": len(report["cgroups"])}


def memory_lines(report: Report) -> list[str]:
    """Memory, swap and each zram device in use, a line each: the head of ``status`` and of
    ``top``."""
    out: list[str] = []
    mem = report["memory"]
    out.append(
        f"memory     total {human_bytes(mem['total_bytes'])}, available "
        f"{human_bytes(mem['available_bytes'])} ({mem['available_pct']:.1f}%)"
        + (" [estimated: no MemAvailable]" if mem["available_estimated"] else "")
    )
    if mem["swap_total_bytes"]:
        out.append(
            f"swap       total {human_bytes(mem['swap_total_bytes'])}, free "
            f"{human_bytes(mem['swap_free_bytes'])} ({mem['swap_free_pct']:.1f}%)"
        )
    else:
        out.append("swap       none")
    for z in mem["zram"]:
        if z["disksize_bytes"]:
            out.append(
                f"zram       {z['name']}: {human_bytes(z['orig_data_bytes'])} stored in "
                f"{human_bytes(z['mem_used_total_bytes'])} of RAM"
            )
    return out


def render_status(report: Report, top: int = 10, wide: bool = False) -> str:
    out = memory_lines(report)
    mem = report["memory"]
    oc = report["overcommit"]
    out.append(
        f"overcommit vm.overcommit_memory={oc['overcommit_memory']} "
        f"vm.panic_on_oom={oc['panic_on_oom']} committed {human_bytes(mem['committed_as_bytes'])} "
        f"of limit {human_bytes(mem['commit_limit_bytes'])}"
    )
    out.extend(f"WARNING    {w}" for w in oc["warnings"])

    layout = report["cgroup_layout"]
    out.append(
        f"cgroups    {layout['mode']}: cgroup2 at {layout['v2_mount'] or '-'}, v1 memory at "
        f"{layout['v1_memory_mount'] or '-'}; memory accounted by {layout['memory_controller'] or 'nothing'}"
    )

    psi = report["psi"]["memory"]
    if psi is None:
        out.append("PSI        unavailable")
    else:
        for kind in ("some", "full"):
            line = psi[kind]
            if line is None:
                continue
            live = psi.get("live")
            live_txt = ""
            if live is not None:
                value = live["some_pct"] if kind == "some" else live["full_pct"]
                live_txt = f"  live {_pct(value)} over {live['window_us'] / 1e6:.1f}s"
            out.append(
                f"PSI memory {kind:4} avg10 {line['avg10']:6.2f}  avg60 {line['avg60']:6.2f}  "
                f"avg300 {line['avg300']:6.2f}  total {line['total_us']} us{live_txt}"
            )

    vm = report["vmstat"]
    if vm is not None:
        out.append(
            f"reclaim    pgscan {vm['pgscan']}  pgsteal {vm['pgsteal']}  "
            f"refaults {vm['workingset_refault']}  kernel oom_kill {vm['oom_kill']}"
        )

    groups = report["cgroups"]
    limited = [g for g in groups if g["usage_pct"] is not None]
    limited.sort(key=lambda g: -g["usage_pct"])
    width = max([50] + [len(g["path"]) for g in groups]) if wide else 50
    if limited:
        out.append("")
        out.append("closest to their limit:")
        out.append(f"  {'cgroup':{width}} {'current':>10} {'limit':>10} {'headroom':>10}  events")
        for g in limited[:top]:
            events = " ".join(f"{k}={v}" for k, v in g["events"].items() if v)
            out.append(
                f"  {middle(g['path'], width):{width}} {human_bytes(g['current_bytes']):>10} "
                f"{human_bytes(g['max_bytes']):>10} {human_bytes(g['headroom_bytes']):>10}  {events}"
            )
    pressured = [g for g in groups if g["pressure"] is not None]
    pressured.sort(key=lambda g: (-g["pressure"]["some"]["avg10"], g["path"]))
    if pressured:
        out.append("")
        out.append("most memory pressure:")
        out.append(f"  {'cgroup':{width}} {'some avg10':>10} {'full avg10':>10}")
        for g in pressured[:top]:
            full = g["pressure"]["full"]
            out.append(
                f"  {middle(g['path'], width):{width}} {g['pressure']['some']['avg10']:>10.2f} "
                f"{(full['avg10'] if full else 0.0):>10.2f}"
            )
    out.extend(_render_kernel_kills(report["kernel_oom_kills"], width))
    if report["unavailable"]:
        out.append("")
        out.extend(f"unavailable: {u['feature']}: {u['reason']}" for u in report["unavailable"])
    return "\n".join(out) + "\n"
