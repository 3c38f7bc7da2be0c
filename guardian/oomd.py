"""systemd-oomd beside guardian: a warning where both would kill for the same cgroup.

systemd-oomd can run beside guardian only where the units it manages (``ManagedOOMSwap=kill``,
``ManagedOOMMemoryPressure=kill``) and guardian's rules cover different cgroups; where they
overlap, one episode can cost two kills, one from each, chosen by different orders. guardian
does not refuse to start (the overlap may be intended, e.g. while moving from one to the other),
it says so once at start, naming the cgroup, the unit setting and guardian's rule.

A cgroup is covered by both when systemd-oomd may kill below a managed cgroup M and guardian may
kill there too: guardian's machine rule (enabled) ranks every process of the machine; a cgroup
rule acts inside each cgroup it matches, so it overlaps M when one of its matches is M, below M,
or above M. ``overlaps`` is pure; ``oomd_warnings`` reads only when systemd-oomd runs (one read
of its cgroup's ``cgroup.procs`` otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence

from guardian.config import Policy
from guardian.host import Host
from guardian.sources.units import Managed, read_managed
from guardian.text import shown


def _related(a: str, b: str) -> bool:
    """``a`` and ``b`` are the same cgroup, or one is below the other."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def overlaps(managed: Sequence[Managed], policy: Policy, watched: Sequence[str]) -> list[str]:
    """One sentence per managed cgroup that a rule of ``policy`` also acts on; ``watched`` are
    the cgroups guardian's cgroup rules match now (``Engine.watched``)."""
    out = []
    for m in managed:
        rules = []
        if policy.machine.enabled:
            rules.append("the machine rule")
        for rule in policy.cgroups:
            hit = next((w for w in watched if rule.matches(w) and _related(w, m.cgroup)), None)
            if hit is not None:
                rules.append(f'{rule.label} (match = "{shown(rule.match)}", here {shown(hit)})')
        if rules:
            settings = ", ".join(f"{s}=kill" for s in m.settings)
            out.append(
                f"systemd-oomd is running and kills in {shown(m.cgroup)} ({shown(m.unit)}: {settings}), "
                f"where guardian acts too by {', '.join(rules)}: both may kill for the same episode; "
                "leave that cgroup to one of them (a rule's match, [machine] enabled, or the unit's "
                "ManagedOOM settings)"
            )
    return out


def oomd_warnings(host: Host, policy: Policy, watched: Sequence[str]) -> list[str]:
    """``overlaps`` on this machine; nothing to read beyond one file when systemd-oomd is not
    running (most machines)."""
    if not host.oomd_running():
        return []
    return overlaps(read_managed(host.unit_dirs(), host.v2_cgroups()), policy, watched)
