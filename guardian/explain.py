"""``guardian rank``: a Ranking as a dict (``--json``), as a table, and explained in sentences.

Every string that a process, a user or a plugin chose (comm, cgroup paths, reasons, failures)
goes through shown(), and every number is finite or None (a plugin's score may be ``inf``, and
a weight times a huge score overflows): the dict is valid JSON as it is, and each item prints as
one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

from guardian.candidates import Candidate
from guardian.errors import GuardianError
from guardian.host import Host
from guardian.isolation import PluginFailure
from guardian.ranking import Ranked, Ranking, kernel_pages
from guardian.sources.processes import read_oom_score
from guardian.text import counted, human_bytes, middle, shown

Report = dict[str, Any]


def _kernel_oom_score(host: Host, pid: int) -> Optional[int]:
    try:
        return read_oom_score(host, pid)
    except (GuardianError, OSError, ValueError):
        return None


def finite(value: float) -> Optional[float]:
    """``value``, or None for nan and the infinities (JSON has no spelling for them)."""
    return value if math.isfinite(value) else None


def number(value: Optional[float], spec: str = "g") -> str:
    """A score for a sentence or a table: ``-`` where it is not a finite number."""
    if value is None or not math.isfinite(value):
        return "-"
    return format(value, spec)


def terms(weights: Mapping[str, Optional[float]], scores: Mapping[str, Optional[float]]) -> str:
    """How a weighted total is made, scorer by scorer: ``cause 1 x 1.98 + rules 1 x 0``."""
    return " + ".join(
        f"{name} {number(weights.get(name, 0))} x {number(value)}" for name, value in scores.items()
    )


def _opt(text: Optional[str]) -> Optional[str]:
    return None if text is None else shown(text)


def _who(candidate: Candidate) -> str:
    if candidate.process is not None:
        return f"pid {candidate.process.pid} ({shown(candidate.process.comm)})"
    return (
        f"cgroup {shown(candidate.cgroup or '/')} ({counted(len(candidate.members), 'process', 'processes')})"
    )


def candidate_entry(host: Host, r: Ranked) -> dict[str, Any]:
    c = r.candidate
    entry: dict[str, Any] = {"kind": c.kind}
    if c.process is not None:
        p = c.process
        entry.update(
            pid=p.pid,
            comm=shown(p.comm),
            cgroup=_opt(c.cgroup),
            uid=p.uid,
            rss_bytes=p.rss_bytes,
            swap_bytes=p.swap_bytes,
            oom_score_adj=p.oom_score_adj,
            kernel_oom_score=_kernel_oom_score(host, p.pid),
        )
    else:
        entry.update(
            cgroup=_opt(c.cgroup),
            pids=[m.pid for m in c.members],
            rss_bytes=c.rss_bytes,
            swap_bytes=sum(m.swap_bytes for m in c.members),
        )
    entry["kill_group"] = _opt(c.kill_group)
    entry["scores"] = {shown(name): finite(value) for name, value in r.scores.items()}
    entry["why"] = {shown(name): note for name, note in r.notes.items()}
    entry["total"] = finite(r.total)
    return entry


def explain(ranking: Ranking) -> list[str]:
    """Sentences: why the first is first, then why each excluded candidate is excluded."""
    lines: list[str] = []
    ctx = ranking.context
    lines.append(
        f"scale: totalpages {ctx.totalpages} ({shown(ctx.totalpages_source)}); "
        f"scorers and weights: {', '.join(f'{k} x{number(v)}' for k, v in ranking.weights.items())}"
    )
    asked = ", ".join(ranking.exclude_hooks) or "none (no plugin implements guardian_exclude)"
    lines.append(f"plugins asked to exclude candidates (guardian_exclude): {asked}")
    for failure in ranking.failures:
        lines.append(failure.describe())
    if ranking.fallback:
        lines.append(ranking.fallback)
    top = ranking.top
    if top is None:
        lines.append("no candidate: nothing in scope may be killed")
    else:
        parts = terms(ranking.weights, top.scores)
        lines.append(
            f"{_who(top.candidate)} is first with total {number(top.total)} = {parts or 'no scores'}"
        )
        lines.extend(f"  {name}: {note}" for name, note in top.notes.items())
        if top.candidate.kill_group and top.candidate.process is not None:
            group = shown(top.candidate.kill_group)
            lines.append(f"  killing it kills all of {group} (memory.oom.group=1, as the kernel would)")
        if len(ranking.ranked) > 1:
            second = ranking.ranked[1]
            diffs = []
            for name in ranking.weights:
                delta = ranking.weights[name] * (top.scores.get(name, 0.0) - second.scores.get(name, 0.0))
                if delta:
                    diffs.append((delta, name))
            diffs.sort(reverse=True, key=lambda d: (d[0] if math.isfinite(d[0]) else math.inf, d[1]))
            if diffs:
                why = ", ".join(f"{name} {number(delta, '+g')}" for delta, name in diffs)
                lines.append(f"  ahead of {_who(second.candidate)} (total {number(second.total)}) by: {why}")
                lines.extend(f"    {name}: {note}" for name, note in second.notes.items())
            else:
                mine, theirs = kernel_pages(top.candidate, ctx), kernel_pages(second.candidate, ctx)
                why = (
                    f"the kernel's own badness in pages decides ({mine} vs {theirs} pages), as "
                    "oom_badness() compares pages, not oom_score points"
                    if mine != theirs
                    else "the newer process goes first, as in the kernel"
                )
                lines.append(f"  tied with {_who(second.candidate)} on total; {why}")
    by_reason: dict[tuple[str, str], list[Candidate]] = {}
    for exclusion in ranking.excluded:
        by_reason.setdefault((exclusion.reason, exclusion.by), []).append(exclusion.candidate)
    for (reason, by), who in by_reason.items():
        if len(who) <= 3:
            lines.extend(f"excluded {_who(c)}: {reason} [{by}]" for c in who)
        else:  # 60 kernel threads are one sentence, not sixty
            names = ", ".join(_who(c) for c in who[:3])
            lines.append(f"excluded {len(who)} candidates ({names}, ...): {reason} [{by}]")
    return [shown(line) for line in lines]


def build_rank_report(
    host: Host, ranking: Ranking, plugin_errors: list[str], top: Optional[int] = None
) -> Report:
    ctx = ranking.context
    ranked = ranking.ranked if top is None else ranking.ranked[:top]
    return {
        "mode": ctx.mode,
        "scope": shown(ctx.scope or "/"),
        "totalpages": ctx.totalpages,
        "totalpages_source": shown(ctx.totalpages_source),
        "weights": {shown(name): finite(weight) for name, weight in ranking.weights.items()},
        "candidates": [candidate_entry(host, r) for r in ranked],
        "excluded": [
            {
                "kind": e.candidate.kind,
                "pid": e.candidate.process.pid if e.candidate.process else None,
                "comm": shown(e.candidate.process.comm) if e.candidate.process else None,
                "cgroup": _opt(e.candidate.cgroup),
                "reason": shown(e.reason),
                "by": shown(e.by),
            }
            for e in ranking.excluded
        ],
        "failures": [
            {"plugin": shown(f.plugin), "hook": shown(f.hook), "reason": shown(f.reason)}
            for f in ranking.failures
        ],
        "plugin_errors": [shown(error) for error in plugin_errors],
        "elapsed_us": ranking.elapsed_us,
    }


def render_rank(report: Report, explanation: Optional[list[str]] = None, wide: bool = False) -> str:
    """The table: long cgroup paths and scorer names lose their middle (marked), unless ``wide``."""
    out: list[str] = []
    names = list(report["weights"])
    paths = [c["cgroup"] or "-" for c in report["candidates"]]
    cgroup_w = 52 if report["mode"] == "cgroup" else 40
    if wide:
        cgroup_w = max([cgroup_w, *map(len, paths)])
    score_w = {n: max(10, len(n)) if wide else 14 for n in names}
    head = f"{'pid':>7} {'comm':15} {'cgroup':{cgroup_w}} {'rss':>10} {'adj':>5}"
    if report["mode"] == "cgroup":
        head = f"{'cgroup':{cgroup_w}} {'procs':>5} {'rss':>10}"
    out.append(head + "".join(f" {middle(n, score_w[n]):>{score_w[n]}}" for n in names) + f" {'total':>10}")
    for c, path in zip(report["candidates"], paths):
        if c["kind"] == "process":
            row = (
                f"{c['pid']:>7} {c['comm'][:15]:15} {middle(path, cgroup_w):{cgroup_w}} "
                f"{human_bytes(c['rss_bytes']):>10} {c['oom_score_adj']:>5}"
            )
        else:
            row = f"{middle(path, cgroup_w):{cgroup_w}} {len(c['pids']):>5} {human_bytes(c['rss_bytes']):>10}"
        for n in names:
            row += f" {number(c['scores'].get(n), '.1f'):>{score_w[n]}}"
        out.append(row + f" {number(c['total'], '.1f'):>10}")
    if not report["candidates"]:
        out.append("(no candidates)")
    for f in report["failures"]:
        out.append(PluginFailure(f["plugin"], f["hook"], f["reason"]).describe())
    if explanation:
        out.append("")
        out.extend(explanation)
    return "\n".join(out) + "\n"
