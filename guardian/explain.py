"""``guardian rank``: a Ranking as a dict (``--json``), as a table, and explained in sentences."""

from __future__ import annotations

from typing import Any, Optional

from guardian.candidates import Candidate
from guardian.errors import GuardianError
from guardian.host import Host
from guardian.isolation import PluginFailure
from guardian.ranking import Ranked, Ranking
from guardian.sources.processes import read_oom_score
from guardian.status import human_bytes

Report = dict[str, Any]


def _kernel_oom_score(host: Host, pid: int) -> Optional[int]:
    try:
        return read_oom_score(host, pid)
    except (GuardianError, OSError, ValueError):
        return None


def _who(candidate: Candidate) -> str:
    if candidate.process is not None:
        return f"pid {candidate.process.pid} ({candidate.process.comm})"
    return f"cgroup {candidate.cgroup} ({len(candidate.members)} processes)"


def candidate_entry(host: Host, r: Ranked) -> dict[str, Any]:
    c = r.candidate
    entry: dict[str, Any] = {"kind": c.kind}
    if c.process is not None:
        p = c.process
        entry.update(
            pid=p.pid,
            comm=p.comm,
            cgroup=c.cgroup,
            uid=p.uid,
            rss_bytes=p.rss_bytes,
            swap_bytes=p.swap_bytes,
            oom_score_adj=p.oom_score_adj,
            kernel_oom_score=_kernel_oom_score(host, p.pid),
        )
    else:
        entry.update(
            cgroup=c.cgroup,
            pids=[m.pid for m in c.members],
            rss_bytes=c.rss_bytes,
            swap_bytes=sum(m.swap_bytes for m in c.members),
        )
    entry["kill_group"] = c.kill_group
    entry["scores"] = dict(r.scores)
    entry["total"] = r.total
    return entry


def explain(ranking: Ranking) -> list[str]:
    """Sentences: why the first is first, then why each excluded candidate is excluded."""
    lines: list[str] = []
    ctx = ranking.context
    lines.append(
        f"scale: totalpages {ctx.totalpages} ({ctx.totalpages_source}); "
        f"scorers and weights: {', '.join(f'{k} x{v:g}' for k, v in ranking.weights.items())}"
    )
    for failure in ranking.failures:
        lines.append(failure.describe())
    top = ranking.top
    if top is None:
        lines.append("no candidate: nothing in scope may be killed")
    else:
        parts = " + ".join(
            f"{name} {ranking.weights.get(name, 0):g} x {value:g}" for name, value in top.scores.items()
        )
        lines.append(f"{_who(top.candidate)} is first with total {top.total:g} = {parts or 'no scores'}")
        if top.candidate.kill_group and top.candidate.process is not None:
            group = top.candidate.kill_group
            lines.append(f"  killing it kills all of {group} (memory.oom.group=1, as the kernel would)")
        if len(ranking.ranked) > 1:
            second = ranking.ranked[1]
            diffs = []
            for name in ranking.weights:
                delta = ranking.weights[name] * (top.scores.get(name, 0.0) - second.scores.get(name, 0.0))
                if delta:
                    diffs.append((delta, name))
            diffs.sort(reverse=True)
            if diffs:
                why = ", ".join(f"{name} {delta:+g}" for delta, name in diffs)
                lines.append(f"  ahead of {_who(second.candidate)} (total {second.total:g}) by: {why}")
            else:
                lines.append(
                    f"  tied with {_who(second.candidate)}; the newer process goes first, as in the kernel"
                )
    by_reason: dict[tuple[str, str], list[Candidate]] = {}
    for exclusion in ranking.excluded:
        by_reason.setdefault((exclusion.reason, exclusion.by), []).append(exclusion.candidate)
    for (reason, by), who in by_reason.items():
        if len(who) <= 3:
            lines.extend(f"excluded {_who(c)}: {reason} [{by}]" for c in who)
        else:  # 60 kernel threads are one sentence, not sixty
            names = ", ".join(_who(c) for c in who[:3])
            lines.append(f"excluded {len(who)} candidates ({names}, ...): {reason} [{by}]")
    return lines


def build_rank_report(
    host: Host, ranking: Ranking, plugin_errors: list[str], top: Optional[int] = None
) -> Report:
    ctx = ranking.context
    ranked = ranking.ranked if top is None else ranking.ranked[:top]
    return {
        "mode": ctx.mode,
        "scope": ctx.scope or "/",
        "totalpages": ctx.totalpages,
        "totalpages_source": ctx.totalpages_source,
        "weights": dict(ranking.weights),
        "candidates": [candidate_entry(host, r) for r in ranked],
        "excluded": [
            {
                "kind": e.candidate.kind,
                "pid": e.candidate.process.pid if e.candidate.process else None,
                "comm": e.candidate.process.comm if e.candidate.process else None,
                "cgroup": e.candidate.cgroup,
                "reason": e.reason,
                "by": e.by,
            }
            for e in ranking.excluded
        ],
        "failures": [{"plugin": f.plugin, "hook": f.hook, "reason": f.reason} for f in ranking.failures],
        "plugin_errors": list(plugin_errors),
        "elapsed_us": ranking.elapsed_us,
    }


def render_rank(report: Report, explanation: Optional[list[str]] = None) -> str:
    out: list[str] = []
    names = list(report["weights"])
    head = f"{'pid':>7} {'comm':15} {'cgroup':40} {'rss':>10} {'adj':>5}"
    if report["mode"] == "cgroup":
        head = f"{'cgroup':52} {'procs':>5} {'rss':>10}"
    out.append(head + "".join(f" {n[:14]:>14}" for n in names) + f" {'total':>10}")
    for c in report["candidates"]:
        if c["kind"] == "process":
            row = (
                f"{c['pid']:>7} {c['comm'][:15]:15} {(c['cgroup'] or '-')[-40:]:40} "
                f"{human_bytes(c['rss_bytes']):>10} {c['oom_score_adj']:>5}"
            )
        else:
            row = f"{c['cgroup'][-52:]:52} {len(c['pids']):>5} {human_bytes(c['rss_bytes']):>10}"
        for n in names:
            value = c["scores"].get(n)
            row += f" {'-' if value is None else f'{value:.1f}':>14}"
        out.append(row + f" {c['total']:>10.1f}")
    if not report["candidates"]:
        out.append("(no candidates)")
    for f in report["failures"]:
        out.append(PluginFailure(f["plugin"], f["hook"], f["reason"]).describe())
    for e in report["plugin_errors"]:
        out.append(f"plugin error: {e}")
    if explanation:
        out.append("")
        out.extend(explanation)
    return "\n".join(out) + "\n"
