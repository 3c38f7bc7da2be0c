"""Ranking and status on the fixture roots: the Kubernetes node, the systemd host, memcg scope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import documented_keys, fixture_root, report_keys
from fixtures.builder import FakeRoot
from support.clock import FakeClock

from guardian.badness import process_oom_score
from guardian.cli import EXIT_OK, main
from guardian.config import Policy, parse_policy
from guardian.host import Host
from guardian.plugins import make_plugin_manager
from guardian.ranking import Ranking
from guardian.sample import Sample
from guardian.scorers.kubelet_qos import pod_of, pods_view, request_from_adj
from guardian.selection import PAGE_SIZE, Selector

K8S = fixture_root("k8s-node")
V2 = fixture_root("v2-systemd")
HYBRID = fixture_root("hybrid")
TRUTH = json.loads((K8S / "TRUTH.json").read_text())
README = Path(__file__).parent.parent / "README.md"


def rank(root: Path, policy: Policy, **kw: Any) -> Ranking:
    selector = Selector(policy, make_plugin_manager(None, entry_points=False))
    return selector.rank(Sample(Host(root), 0), **kw)


def pod(name: str) -> dict[str, Any]:
    return next(p for p in TRUTH["pods"] if p["name"] == name)


def pod_total(ranking: Ranking, name: str) -> float:
    """The best total of any process of a pod (its sandbox excluded)."""
    pids = {pid for c in pod(name)["containers"] for pid in c["pids"]}
    return max(r.total for r in ranking.ranked if r.candidate.process and r.candidate.process.pid in pids)


QOS = parse_policy("[scorers]\nkubelet_qos = 1.0\nkernel_badness = 1.0\n", "qos.toml")


class TestKubeletQos:
    def test_pod_paths_for_both_drivers(self) -> None:
        ref = pod_of(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12ab_34cd.slice/cri-containerd-ff.scope"
        )
        assert ref is not None and ref.qos_from_path == "burstable" and ref.uid == "12ab-34cd"
        assert ref.path.endswith("pod12ab_34cd.slice")
        guaranteed = pod_of("/kubepods.slice/kubepods-pod9f_00.slice/crio-aa.scope")
        assert guaranteed is not None and guaranteed.qos_from_path == "guaranteed"
        cgroupfs = pod_of("/kubepods/besteffort/pod1234-abcd/0123456789")
        assert cgroupfs is not None and cgroupfs.qos_from_path == "besteffort" and cgroupfs.uid == "1234-abcd"
        assert pod_of("/kubepods/pod77-88/c1") is not None
        assert pod_of("/system.slice/kubelet.service") is None

    def test_a_user_cannot_name_a_pod(self) -> None:
        """A user names every cgroup below their own systemd manager: a "Guaranteed pod" there
        would rank last. A kubelet in a container (kind, k3s in docker) is below a system unit."""
        user = "/user.slice/user-1000.slice/user@1000.service/app.slice"
        assert pod_of(f"{user}/kubepods-pod1234.slice/hog.scope") is None
        assert pod_of(f"{user}/x.scope/kubepods/pod12-34/c") is None
        nested = pod_of("/system.slice/docker-0a1b.scope/kubepods/burstable/pod12-34/c0")
        assert nested is not None and nested.qos_from_path == "burstable"

    def test_besteffort_pod_outranks_a_larger_guaranteed_pod(self) -> None:
        ranking = rank(K8S, QOS)
        postgres_rss = sum(
            r.candidate.rss_bytes
            for r in ranking.ranked
            if r.candidate.process and r.candidate.process.pid in pod("postgres-0")["pids"]
        )
        redis_rss = sum(
            r.candidate.rss_bytes
            for r in ranking.ranked
            if r.candidate.process and r.candidate.process.pid in pod("redis-cache-0")["pids"]
        )
        assert postgres_rss > redis_rss  # the fixture's premise
        assert pod_total(ranking, "redis-cache-0") > pod_total(ranking, "postgres-0")
        assert pod_total(ranking, "batch-report-7d9f8") > pod_total(ranking, "postgres-0")

    def test_burstable_over_request_outranks_one_under(self) -> None:
        ranking = rank(K8S, QOS)
        views = {v.ref.uid: v for v in pods_view(ranking.context).values()}
        api, web = views[pod("api-server-6f7b9")["uid"]], views[pod("web-frontend-5c8d6")["uid"]]
        assert api.exceeds and not web.exceeds
        assert pod_total(ranking, "api-server-6f7b9") > pod_total(ranking, "web-frontend-5c8d6")
        assert pod_total(ranking, "api-server-6f7b9") > pod_total(ranking, "ingest-worker-0")

    def test_recovered_requests_are_within_one_band(self) -> None:
        capacity = TRUTH["memoryCapacity"]
        ranking = rank(K8S, QOS)
        views = {v.ref.uid: v for v in pods_view(ranking.context).values()}
        assert any(p["qos"] == "Burstable" for p in TRUTH["pods"])
        for p in TRUTH["pods"]:
            view = views[p["uid"]]
            assert view.qos == p["qos"].lower()
            if p["qos"] == "Burstable":
                assert view.request_source == "oom_score_adj"
                assert (
                    abs(p["memoryRequestBytes"] - view.request_bytes)
                    <= len(p["containers"]) * capacity / 1000
                )
                for c in p["containers"]:
                    recovered = request_from_adj(c["oom_score_adj"], capacity)
                    assert abs(recovered - c["memoryRequestBytes"]) <= capacity / 1000, c["name"]

    def test_sandboxes_and_node_daemons_get_no_pod_score(self) -> None:
        ranking = rank(K8S, QOS)
        infra = [
            r
            for r in ranking.ranked
            if r.candidate.process and r.candidate.process.oom_score_adj in (-998, -999)
        ]
        assert {r.candidate.process.oom_score_adj for r in infra if r.candidate.process} == {-998, -999}
        for r in infra:
            assert "kubelet_qos" not in r.scores, r.candidate.name
        # while the pods' own processes do get one
        assert any("kubelet_qos" in r.scores for r in ranking.ranked)

    def test_first_victim_is_in_a_pod_over_its_request(self) -> None:
        ranking = rank(K8S, QOS)
        assert ranking.top is not None and ranking.top.candidate.process is not None
        pids_over = {
            pid
            for name in ("api-server-6f7b9", "batch-report-7d9f8", "redis-cache-0")
            for c in pod(name)["containers"]
            for pid in c["pids"]
        }
        assert ranking.top.candidate.process.pid in pids_over


class TestSystemdHost:
    def test_fixture_oom_scores_are_reproduced(self) -> None:
        ranking = rank(V2, Policy(scorers={"kernel_badness": 1.0}))
        assert ranking.context.totalpages_source == "global"
        assert len(ranking.ranked) >= 5
        for r in ranking.ranked:
            p = r.candidate.process
            assert p is not None
            kernel = int((V2 / f"proc/{p.pid}/oom_score").read_text())
            assert (
                r.scores["kernel_badness"]
                == kernel
                == process_oom_score(p, PAGE_SIZE, ranking.context.totalpages)
            )

    def test_exclusions_have_reasons(self) -> None:
        ranking = rank(V2, Policy())
        reasons = {e.candidate.process.comm: e.reason for e in ranking.excluded if e.candidate.process}
        assert "pid 1" in reasons["systemd"]
        assert "-1000" in reasons["systemd-udevd"]
        assert "zombie" in reasons["sh"]
        assert any("kernel thread" in r for r in reasons.values())

    def test_memcg_scope_uses_the_cgroup_limit(self) -> None:
        ranking = rank(V2, Policy(scorers={"kernel_badness": 1.0}), scope="/system.slice/nginx.service")
        assert ranking.context.totalpages_source == "memcg /system.slice/nginx.service"
        # memory.max plus min(memory.swap.max = max, SwapTotal): mem_cgroup_get_max()
        swap_pages = Sample(Host(V2), 0).meminfo.swap_total_bytes // PAGE_SIZE
        assert ranking.context.totalpages == 512 * 1024 * 1024 // PAGE_SIZE + swap_pages
        assert {r.candidate.process.comm for r in ranking.ranked if r.candidate.process} == {"nginx"}

    def test_a_memcg_scope_reads_only_its_own_processes(self) -> None:
        sample = Sample(Host(V2), 0)
        selector = Selector(
            Policy(scorers={"kernel_badness": 1.0}), make_plugin_manager(None, entry_points=False)
        )
        scoped = selector.rank(sample, scope="/system.slice/nginx.service")
        assert "processes" not in sample.reads  # /proc was not listed
        read = {key for key in sample.reads if key.startswith("processes_in:")}
        assert read == {"processes_in:/system.slice/nginx.service"}
        # the same ranking as from every process
        everything = Sample(Host(V2), 0)
        everything.processes  # noqa: B018 - read every process first: then processes_in uses them
        full = selector.rank(everything, scope="/system.slice/nginx.service")
        assert scoped.ranked, "nginx.service has processes to rank"
        assert [(r.candidate.key, r.total) for r in scoped.ranked] == [
            (r.candidate.key, r.total) for r in full.ranked
        ]
        assert [e.candidate.key for e in scoped.excluded] == [e.candidate.key for e in full.excluded]

    def test_oom_group_is_killed_whole(self) -> None:
        ranking = rank(V2, Policy(scorers={"kernel_badness": 1.0}))
        indexer = [r for r in ranking.ranked if r.candidate.cgroup == "/system.slice/indexer.service"]
        assert indexer and all(r.candidate.kill_group == "/system.slice/indexer.service" for r in indexer)
        groups = rank(V2, Policy(scorers={"kernel_badness": 1.0, "cgroup_largest": 1.0}), mode="cgroup")
        paths = [r.candidate.cgroup for r in groups.ranked]
        assert "/system.slice/indexer.service" in paths
        assert not any(p and p.startswith("/system.slice/indexer.service/") for p in paths)

    def test_group_holding_a_never_kill_process_is_not_a_group_candidate(self) -> None:
        groups = rank(V2, Policy(), mode="cgroup")
        excluded = {e.candidate.cgroup: e.reason for e in groups.excluded}
        assert "oom_score_adj is -1000" in excluded["/system.slice/systemd-udevd.service"]

    def test_prefer_and_avoid_rules(self) -> None:
        policy = parse_policy(
            "[scorers]\nkernel_badness = 1.0\nrules = 1.0\n"
            "[[prefer]]\ncomm = '^nginx$'\npoints = 2000\n"
            "[[avoid]]\ncomm = '^Web Content$'\npoints = 2000\n",
            "p.toml",
        )
        ranking = rank(V2, policy)
        assert ranking.top is not None and ranking.top.candidate.name == "nginx"
        assert ranking.top.scores["rules"] == 2000.0
        assert ranking.ranked[-1].candidate.name == "Web Content"


def test_hybrid_process_is_attributed_to_its_v1_memory_cgroup() -> None:
    sample = Sample(Host(HYBRID), 0)
    # the pids come from the v1 memory tree's cgroup.procs, not from all of /proc
    assert {p.pid for p in sample.processes_in("/guardian-test")} == {4100, 4101}
    assert "processes" not in sample.reads
    ranking = rank(HYBRID, Policy(), scope="/guardian-test")
    assert {r.candidate.process.pid for r in ranking.ranked if r.candidate.process} == {4100, 4101}
    assert ranking.context.totalpages_source == "memcg /guardian-test"
    assert ranking.context.totalpages == 256 * 1024 * 1024 // PAGE_SIZE


def test_status_lists_the_pods_cgroups(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["status", "--json", "--interval", "0", "--top", "1000", "--root", str(K8S)], clock=FakeClock())
        == EXIT_OK
    )
    report = json.loads(capsys.readouterr().out)
    listed = {e["path"] for e in report["cgroups"]}
    for p in TRUTH["pods"]:
        assert p["cgroup"] in listed
        for c in p["containers"]:
            assert c["cgroup"] in listed
    guaranteed = next(e for e in report["cgroups"] if e["path"] == pod("postgres-0")["cgroup"])
    assert guaranteed["max_bytes"] == pod("postgres-0")["memoryLimitBytes"]
    assert guaranteed["pressure"] is not None


def test_status_without_psi_reports_it_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    root = fixture_root("no-psi")
    assert main(["status", "--json", "--root", str(root)], clock=FakeClock()) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["psi"] == {"memory": None, "cpu": None, "io": None}
    assert any(
        u["feature"] == "PSI" and u["reason"].endswith("pressure/memory does not exist")
        for u in report["unavailable"]
    )
    assert report["memory"]["available_estimated"] is True


def test_readme_documents_every_rank_key(capsys: pytest.CaptureFixture[str]) -> None:
    for mode in ("process", "cgroup"):
        assert main(["rank", "--json", "--explain", "--mode", mode, "--root", str(V2)]) == EXIT_OK
        report = json.loads(capsys.readouterr().out)
        assert sorted(report_keys(report, maps=("scores", "weights", "why")) - documented_keys()) == []


def test_a_v1_memory_scope_reads_the_processes_its_own_tree_lists(tmp_path: Path) -> None:
    """The v1 memory controller's tree need not mirror cgroup2's: a v1 scope's processes are
    those its own cgroup.procs list (its subtree's too), each still judged by its v1 path; the
    ranking is the one made from every process, without reading every process."""
    root = FakeRoot(tmp_path)
    root.mounts("hybrid")
    root.meminfo(total_kb=8 << 20, available_kb=4 << 20)
    root.kthread(2, "kthreadd", ppid=0)
    root.process(
        1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope", cgroup_v1_memory="/init.scope"
    )
    # in cgroup2 all three are one service; in the v1 memory tree two are in /jobs (one below)
    for pid, comm, v1 in ((300, "worker", "/jobs"), (301, "batch", "/jobs/nightly"), (302, "web", "/web")):
        root.process(pid, comm, rss_anon_kb=65536, cgroup_v2="/system.slice/app.service", cgroup_v1_memory=v1)
    root.cgroup_v2("/system.slice/app.service")
    root.cgroup_v2("/init.scope")
    for group in ("/jobs", "/jobs/nightly", "/web", "/init.scope"):
        root.cgroup_v1_memory(group, limit=1 << 30)
    root.finish()
    selector = Selector(
        Policy(scorers={"kernel_badness": 1.0}), make_plugin_manager(None, entry_points=False)
    )
    sample = Sample(Host(tmp_path), 0)
    assert {p.pid for p in sample.processes_in("/jobs")} == {300, 301}
    scoped = selector.rank(sample, scope="/jobs")
    assert "processes" not in sample.reads
    everything = Sample(Host(tmp_path), 0)
    everything.processes  # noqa: B018 - every process read first: processes_in then uses them all
    full = selector.rank(everything, scope="/jobs")
    assert {r.candidate.process.pid for r in scoped.ranked if r.candidate.process} == {300, 301}
    assert [(r.candidate.key, r.total) for r in scoped.ranked] == [
        (r.candidate.key, r.total) for r in full.ranked
    ]
