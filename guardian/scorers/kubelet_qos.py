"""``kubelet_qos``: the kubelet's memory-pressure order (pkg/kubelet/eviction/helpers.go:
rankMemoryPressure), computed from what a node shows without the API server.

1. Pods whose usage exceeds their memory request first. A BestEffort pod has no request, so
   any usage exceeds it; a Guaranteed pod's request equals its limit, so it never does.
2. (spec.priority: not visible on the node; skipped.)
3. Then by usage above request, largest first.

The QoS class comes from the pod's cgroup path, for both cgroup drivers:

    systemd:  /kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/...
              /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/...
              /kubepods.slice/kubepods-pod<uid>.slice/...                     (Guaranteed)
    cgroupfs: /kubepods/besteffort/pod<uid>/...  /kubepods/burstable/pod<uid>/...  /kubepods/pod<uid>/...

and, where the path says nothing, from the containers' oom_score_adj as the kubelet sets it
(pkg/kubelet/qos/policy.go): -997 Guaranteed (or node-critical), 1000 BestEffort, 3..999
Burstable. A container's memory request is ``memory.min`` where the kubelet writes it (the
MemoryQoS feature); otherwise it is recovered by inverting ``adj = 1000 - 1000*request/capacity``:
``request = ceil((1000 - adj) * capacity / 1000)``, exact to one band of capacity/1000 bytes
(kernel.md 5.5). Sandbox (pause) containers, adj -998, request nothing. capacity is the node's
MemTotal. Usage is the pod's working set, ``memory.current - inactive_file`` (cAdvisor).

Score = tier * 10000 + (usage - request) in per-mille of capacity, with tier 2 for pods over
their request, 1 for Burstable pods within it, 0 for Guaranteed pods. Every process of a pod
carries its pod's score, except the sandbox (pause) process: killing it frees nothing. Processes
outside kubepods get no score (the kubelet never evicts them; the kernel protects the node's daemons
with adj -999).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar, Optional

from guardian.api import Candidate, RankContext, Scorer, Unavailable, hookimpl, memory_cgroup

GUARANTEED_ADJ = -997
BESTEFFORT_ADJ = 1000
SANDBOX_ADJ = -998

_SYSTEMD_POD = re.compile(r"^(.*?/kubepods(?:-(besteffort|burstable))?-pod([0-9a-f_]+)\.slice)(?:/|$)")
_CGROUPFS_POD = re.compile(r"^(.*?/kubepods(?:/(besteffort|burstable))?/pod([0-9a-f-]+))(?:/|$)")


@dataclass(frozen=True)
class PodRef:
    """A pod found from its cgroup path: where it is, its UID and the QoS class the path names."""

    path: str  # the pod's cgroup
    uid: str
    qos_from_path: Optional[str]  # "besteffort", "burstable", "guaranteed"


def _user_controlled(prefix: str) -> bool:
    """Inside a user's own systemd manager (``user@UID.service``), where the user names every
    cgroup: a "pod" there is whatever the user chose to call one (and a Guaranteed pod ranks
    last). Pods of a kubelet in a container (kind, k3s in docker: ``/system.slice/docker-ID.scope
    /kubepods/...``) sit below a system unit, which only root controls."""
    return any(part.startswith("user@") and part.endswith(".service") for part in prefix.split("/"))


def pod_of(cgroup: Optional[str]) -> Optional[PodRef]:
    """The pod a cgroup path belongs to, or None outside kubepods."""
    if not cgroup:
        return None
    for pattern, systemd in ((_SYSTEMD_POD, True), (_CGROUPFS_POD, False)):
        m = pattern.match(cgroup)
        if m and not _user_controlled(m.group(1)):
            qos = m.group(2) or "guaranteed"
            uid = m.group(3).replace("_", "-") if systemd else m.group(3)
            return PodRef(path=m.group(1), uid=uid, qos_from_path=qos)
    return None


def qos_from_adj(adj: int) -> Optional[str]:
    if adj == BESTEFFORT_ADJ:
        return "besteffort"
    if adj == GUARANTEED_ADJ:
        return "guaranteed"
    if 3 <= adj <= 999:
        return "burstable"
    return None


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def request_from_adj(adj: int, capacity_bytes: int) -> int:
    """Invert pkg/kubelet/qos/policy.go for a Burstable container.

    ``adj = 1000 - 1000*request // capacity`` puts the request in the band
    ``ceil((1000-adj)*C/1000) <= request < ceil((1001-adj)*C/1000)``; adj 999 also takes request
    0 (the clamp from 1000), so its band is ``[0, ceil(2*C/1000))``, and adj 3 takes every
    request from ``ceil(997*C/1000)`` up. The middle of the band is returned: within
    capacity/1000 of the truth for every adj but the clamped 3 (kernel.md 5.5).
    """
    low = 0 if adj >= 999 else _ceil_div((1000 - adj) * capacity_bytes, 1000)
    if adj <= 3:
        return low
    high = _ceil_div((1001 - adj) * capacity_bytes, 1000)
    return (low + high - 1) // 2


@dataclass(frozen=True)
class PodView:
    """A pod as ranked: its QoS class, its memory request (and where that came from) and its usage."""

    ref: PodRef
    qos: str
    request_bytes: int
    usage_bytes: int
    request_source: str  # "memory.min", "oom_score_adj", "none" (BestEffort), "limit"

    @property
    def exceeds(self) -> bool:
        return self.qos == "besteffort" or (self.qos == "burstable" and self.usage_bytes > self.request_bytes)


class KubeletQos(Scorer):
    name: ClassVar[str] = "kubelet_qos"
    kinds: ClassVar[frozenset[str]] = frozenset({"process", "cgroup"})
    unit: ClassVar[str] = "tier x 10000 + (usage - request) in per-mille of node memory"

    def __init__(self) -> None:
        self._pods: dict[str, PodView] = {}

    def prepare(self, context: RankContext, candidates: list[Candidate]) -> None:
        self._pods = pods_view(context)

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        ref = pod_of(candidate.cgroup)
        if ref is None:
            return None
        if all(p.oom_score_adj == SANDBOX_ADJ for p in candidate.processes):
            return None  # the pause container holds the pod's namespaces, not its memory
        view = self._pods.get(ref.path)
        if view is None:
            return None
        return pod_score(view, context.capacity_bytes)


def pod_score(view: PodView, capacity_bytes: int) -> float:
    tier = 2 if view.exceeds else (1 if view.qos == "burstable" else 0)
    over = 1000.0 * (view.usage_bytes - view.request_bytes) / max(capacity_bytes, 1)
    return tier * 10_000 + max(-5000.0, min(5000.0, over))


def pods_view(context: RankContext) -> dict[str, PodView]:
    """Every pod on the node, from the processes' cgroups and oom_score_adj."""
    sample = context.sample
    layout = sample.host.cgroup_layout()
    containers: dict[str, dict[str, list[int]]] = {}  # pod path -> container cgroup -> adjs
    refs: dict[str, PodRef] = {}
    for process in sample.processes:
        if process.is_kernel_thread or process.is_zombie:
            continue
        cgroup = memory_cgroup(process, layout)
        ref = pod_of(cgroup)
        if ref is None or cgroup is None:
            continue
        refs[ref.path] = ref
        containers.setdefault(ref.path, {}).setdefault(cgroup, []).append(process.oom_score_adj)

    views = {}
    for path, ref in refs.items():
        request = 0
        sources: set[str] = set()
        qos_votes: Counter[str] = Counter()
        for container, adjs in containers[path].items():
            adj = Counter(adjs).most_common(1)[0][0]  # the container's init, or the majority
            if adj == SANDBOX_ADJ:
                continue
            qos = qos_from_adj(adj)
            if qos:
                qos_votes[qos] += 1
            min_bytes = _memory_min(context, container)
            if min_bytes:
                request += min_bytes
                sources.add("memory.min")
            elif qos == "burstable":
                request += request_from_adj(adj, context.capacity_bytes)
                sources.add("oom_score_adj")
        qos = ref.qos_from_path or (qos_votes.most_common(1)[0][0] if qos_votes else "burstable")
        usage = working_set(context, path)
        if qos == "guaranteed":
            limit = _limit(context, path)
            request = limit if limit is not None else max(request, usage)
            sources = {"limit"}
        elif qos == "besteffort":
            request, sources = 0, {"none"}
        views[path] = PodView(ref, qos, request, usage, "+".join(sorted(sources)) or "none")
    return views


def working_set(context: RankContext, cgroup: str) -> int:
    group = context.sample.cgroup(cgroup)
    try:
        current = group.memory.current_bytes or 0
    except Unavailable:
        return 0
    try:
        stat = group.stat
        inactive = stat.get("inactive_file", stat.get("total_inactive_file", 0))
    except Unavailable:
        inactive = 0
    return max(0, current - inactive)


def _memory_min(context: RankContext, cgroup: str) -> int:
    try:
        return context.sample.cgroup(cgroup).memory.min_bytes or 0
    except Unavailable:
        return 0


def _limit(context: RankContext, cgroup: str) -> Optional[int]:
    try:
        return context.sample.cgroup(cgroup).memory.max_bytes
    except Unavailable:
        return None


@hookimpl
def guardian_scorers() -> list[Scorer]:
    return [KubeletQos()]
