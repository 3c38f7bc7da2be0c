"""packaging/kubernetes/: the DaemonSet and the image's entry command, checked offline.

No cluster and no container runtime here. What is checked: the manifests against the
Kubernetes API's own schemas (kubernetes-validate ships them), the privileges the DaemonSet asks
for, the ConfigMap's policy through guardian's parser and on the Kubernetes fixture node, and
the image's entry command (its ENTRYPOINT, CMD and ENV, read from the Containerfile) run against
that node, also as a pod sees it: from inside a private cgroup namespace, with the host's cgroup
tree mounted over its own.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import fixture_root

from guardian import __version__
from guardian.cli import EXIT_OK, main
from guardian.config import Policy, parse_policy

KUBE = Path(__file__).parent.parent / "packaging" / "kubernetes"
DEFAULT_POLICY = Path(__file__).parent.parent / "guardian" / "default_policy.toml"
K8S = fixture_root("k8s-node")
TRUTH = json.loads((K8S / "TRUTH.json").read_text())
# the oldest API the schemas here go back to, and the newest
VERSIONS = ("1.25.0", kubernetes_validate.latest_version())


def manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBE / "daemonset.yaml").read_text()) if doc]


def one(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in manifests() if doc["kind"] == kind]
    return found


def pod_spec() -> dict[str, Any]:
    return one("DaemonSet")["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    return only


def policy_text() -> str:
    return one("ConfigMap")["data"]["guardian.toml"]


def node_policy() -> Policy:
    return parse_policy(policy_text(), "daemonset.yaml: ConfigMap guardian-policy: guardian.toml")


def instructions() -> dict[str, str]:
    """The Containerfile's last instruction of each kind, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (KUBE / "Containerfile").read_text())
    found = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found[word.upper()] = rest.strip()
    return found


def image_env() -> dict[str, str]:
    """ENV as the Containerfile sets it (``ENV K=V K2=V2``, values without spaces)."""
    return dict(item.split("=", 1) for item in instructions()["ENV"].split())


def entry_argv(policy: Path) -> list[str]:
    """The container's command: ENTRYPOINT + CMD in their exec form, the ConfigMap's mount
    point replaced by ``policy``; ``guardian`` is this checkout's."""
    entrypoint = json.loads(instructions()["ENTRYPOINT"])
    cmd = json.loads(instructions()["CMD"])
    assert entrypoint == ["guardian"]
    assert cmd[cmd.index("--policy") + 1] == mount_path("policy") + "/guardian.toml"
    cmd[cmd.index("--policy") + 1] = str(policy)
    return [sys.executable, "-m", "guardian.cli", *cmd]


def mount_path(volume: str) -> str:
    (path,) = [m["mountPath"] for m in container()["volumeMounts"] if m["name"] == volume]
    return path


# --- the manifests ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_against_the_api_schemas(version: str) -> None:
    kinds = []
    for doc in manifests():
        # strict: a misspelt or misplaced field (hostPid, capabilities under the pod) fails
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.append(doc["kind"])
    assert kinds == ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "template", "spec", "hostPid"), True),
        (("spec", "template", "spec", "containers", 0, "securityContext", "capabilities", "add"), "KILL"),
        (("spec", "template", "spec", "containers", 0, "resources", "limit"), {"memory": "256Mi"}),
    ],
)
def test_the_validator_catches_a_mistake(path: tuple[Any, ...], value: Any) -> None:
    """The check above can fail: the same DaemonSet with one field misspelt or mistyped."""
    daemonset = one("DaemonSet")
    target = daemonset
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, VERSIONS[-1], strict=True)


def test_privileges_are_exactly_those_needed() -> None:
    spec = pod_spec()
    assert spec["hostPID"] is True
    assert not spec.get("hostNetwork") and not spec.get("hostIPC")
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]  # every node, whatever its taints
    assert spec["automountServiceAccountToken"] is False  # guardian never calls the API
    security = container()["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {
        "drop": ["ALL"],
        "add": ["KILL", "SYS_RESOURCE", "SYS_PTRACE", "IPC_LOCK"],
    }
    # the systemd unit's set, less CAP_DAC_OVERRIDE (the kubelet's pod cgroups belong to root,
    # and no delegated manager creates cgroups below them) and CAP_SYSLOG (the kernel log: a
    # container's device controller does not let it open /dev/kmsg, so the pod sees the
    # kernel's OOM kills in the watched groups' oom_kill counters alone)
    unit = (KUBE.parent / "guardian.service").read_text()
    (bounding,) = re.findall(r"^CapabilityBoundingSet=(.*)$", unit, flags=re.M)
    in_unit = {name.removeprefix("CAP_") for name in bounding.split()}
    assert set(security["capabilities"]["add"]) == in_unit - {"DAC_OVERRIDE", "SYSLOG"}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "securityContext" not in spec or "capabilities" not in spec["securityContext"]


def test_host_mounts_are_the_cgroup_tree_read_only_and_the_pods_writable() -> None:
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    host_paths = {name: v["hostPath"]["path"] for name, v in volumes.items() if "hostPath" in v}
    assert host_paths == {"cgroup": "/sys/fs/cgroup", "kubepods": "/sys/fs/cgroup/kubepods.slice"}
    for name, path in host_paths.items():
        assert mounts[name]["mountPath"] == path  # the host's paths, where guardian looks
    assert mounts["cgroup"]["readOnly"] is True
    assert mounts["kubepods"]["readOnly"] is False  # cgroup.kill, memory.pressure triggers
    assert mounts["policy"]["readOnly"] is True
    assert volumes["policy"]["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]
    # no /proc from the host: with hostPID the container's own /proc lists every process
    assert not any(p == "/proc" or p.startswith("/proc/") for p in host_paths.values())


def test_resources_leave_room_above_what_guardian_uses() -> None:
    resources = container()["resources"]
    assert "cpu" not in resources["limits"]  # throttling would slow it when the node is short
    assert resources["limits"]["memory"] == "256Mi" and resources["requests"]["memory"] == "64Mi"


def test_image_is_this_version_and_every_object_in_one_namespace() -> None:
    assert container()["image"] == f"guardian-oom:{__version__}"
    namespace = one("Namespace")["metadata"]["name"]
    for doc in manifests():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["kind"]
    assert pod_spec()["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    labels = one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_metrics_port_is_offered_only_as_a_comment() -> None:
    """The policy does not turn metrics on, so no port is declared; the lines to add are there."""
    assert "ports" not in container()
    assert "[metrics]" not in [line.strip() for line in policy_text().splitlines()]
    text = (KUBE / "daemonset.yaml").read_text()
    assert "#     containerPort: 9464" in text and '#   prometheus.io/port: "9464"' in text


# --- the node policy ---------------------------------------------------------------------------


def test_node_policy_parses_and_says_what_a_node_needs() -> None:
    policy = node_policy()
    assert policy.scorers["kubelet_qos"] == 1.0
    assert max(policy.scorers, key=lambda name: policy.scorers[name]) == "kubelet_qos"
    matches = [rule.match for rule in policy.cgroups]
    assert matches == ["kubepods.slice", "kubepods.slice/**/*.scope"]
    assert [rule.action for rule in policy.cgroups] == ["process", "group"]
    # memory.events is hierarchical: an events condition on kubepods.slice would answer every
    # container's own OOM at its own limit with a kill somewhere else among the pods
    assert [rule.events for rule in policy.cgroups] == [None, None]
    assert policy.dry_run is False


def test_node_policy_rules_match_the_fixture_pods() -> None:
    pod_rule, container_rule = node_policy().cgroups
    assert pod_rule.matches("/kubepods.slice")
    for pod in TRUTH["pods"]:
        for each in pod["containers"]:
            assert container_rule.matches(each["cgroup"]), each["cgroup"]
        assert not container_rule.matches(pod["cgroup"])
    assert not container_rule.matches("/system.slice/kubelet.service")


def test_node_policy_is_valid_on_the_fixture_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "guardian.toml"
    path.write_text(policy_text())
    assert main(["check", "--policy", str(path), "--root", str(K8S)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "valid:" in out and "scorers kubelet_qos x1" in out
    assert "matches no cgroup" not in out


def rank_json(root: Path, policy: Path) -> dict[str, Any]:
    done = subprocess.run(
        [
            *entry_argv(policy)[:3],
            "rank",
            "--json",
            "--interval",
            "0",
            "--root",
            str(root),
            "--policy",
            str(policy),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == EXIT_OK, done.stderr.decode()
    return json.loads(done.stdout)


def pod_of_pid(pid: int) -> str:
    for pod in TRUTH["pods"]:
        if any(pid in c["pids"] for c in pod["containers"]):
            return pod["name"]
    return ""


def test_node_policy_ranks_in_the_kubelets_order_and_spares_the_node(tmp_path: Path) -> None:
    policy = tmp_path / "guardian.toml"
    policy.write_text(policy_text())
    report = rank_json(K8S, policy)
    pods = []
    for candidate in report["candidates"]:
        name = pod_of_pid(candidate["pid"])
        if name and name not in pods:
            pods.append(name)
    qos = {pod["name"]: pod["qos"] for pod in TRUTH["pods"]}
    # the pods over their memory request (both BestEffort ones, and the Burstable api-server
    # whose usage is above its request) before the rest; Guaranteed last
    assert set(pods[:3]) == {"api-server-6f7b9", "batch-report-7d9f8", "redis-cache-0"}
    assert [qos[name] for name in pods[-2:]] == ["Guaranteed", "Guaranteed"]
    assert pod_of_pid(report["candidates"][0]["pid"]) in pods[:3]
    # the kubelet, the runtime and kube-proxy: excluded by the policy's [[protect]] rule
    excluded = {e["pid"]: e for e in report["excluded"]}
    for daemon in TRUTH["nodeDaemons"]:
        assert excluded[daemon["pid"]]["by"] == "policy", daemon["name"]
        assert "protect[0]" in excluded[daemon["pid"]]["reason"]
    ranked = {c["pid"] for c in report["candidates"]}
    assert not ranked & {d["pid"] for d in TRUTH["nodeDaemons"]}


# --- the container's entry command ------------------------------------------------------------


def as_a_pod_sees_it(src: Path, dst: Path, depth: int = 3) -> Path:
    """``src`` as guardian sees it from a pod ``depth`` levels below the cgroup root, in the
    private cgroup namespace that a runtime gives a non-privileged container on cgroup v2, with
    the host's /sys/fs/cgroup mounted read-only over the runtime's own and the pods' subtree
    read-write (the DaemonSet's volumes). The kernel prints the mounts' roots and every
    process's cgroup relative to the namespace: a ``..`` for each level above it."""
    shutil.copytree(src, dst, symlinks=True)
    up = "/.." * depth
    mountinfo = dst / "proc" / "self" / "mountinfo"
    lines = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if fields[4] == "/sys/fs/cgroup" and "cgroup2" in fields:
            lines.append(line)  # the runtime's own mount: the namespace's root, hidden below
            lines.append(f"90 {fields[0]} {fields[2]} {up} /sys/fs/cgroup ro,relatime - cgroup2 cgroup2 rw")
            lines.append(
                f"91 90 {fields[2]} {up}/kubepods.slice /sys/fs/cgroup/kubepods.slice rw,relatime - cgroup2 cgroup2 rw"
            )
        else:
            lines.append(line)
    mountinfo.write_text("\n".join(lines) + "\n")
    for cgroup in (dst / "proc").glob("[0-9]*/cgroup"):
        text = cgroup.read_text()
        cgroup.write_text(re.sub(r"^0::/", f"0::{up}/", text, flags=re.M))
    return dst


def test_a_pod_sees_the_same_node(tmp_path: Path) -> None:
    policy = tmp_path / "guardian.toml"
    policy.write_text(policy_text())
    inside = as_a_pod_sees_it(K8S, tmp_path / "pod")
    assert (inside / "proc/870/cgroup").read_text() == "0::/../../../system.slice/kubelet.service\n"
    host_view, pod_view = rank_json(K8S, policy), rank_json(inside, policy)
    for key in ("candidates", "excluded"):
        assert [(c["pid"], c["cgroup"], c.get("total")) for c in pod_view[key]] == [
            (c["pid"], c["cgroup"], c.get("total")) for c in host_view[key]
        ]
    assert pod_view["candidates"]  # not two empty lists


def run_entry_command(
    root: Path, policy: Path, run_s: float = 2.0
) -> tuple[int, bytes, list[dict[str, Any]]]:
    """The image's command with the image's environment and nothing of systemd's (no
    NOTIFY_SOCKET, no journald under the root), ``--root`` and ``--dry-run`` added: until it
    says it started, then ``run_s`` seconds of its loop, then SIGTERM as the kubelet stops a
    pod. Its exit code, stdout and the JSON lines of stderr."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **image_env()}
    argv = [*entry_argv(policy), "--root", str(root), "--dry-run"]
    daemon = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert daemon.stderr is not None
    try:
        selector = selectors.DefaultSelector()
        selector.register(daemon.stderr, selectors.EVENT_READ)
        seen = b""
        deadline = time.monotonic() + 60
        while b'"MESSAGE": "started: ' not in seen:
            assert time.monotonic() < deadline, seen.decode()
            assert daemon.poll() is None, seen.decode()
            if selector.select(timeout=1):
                seen += os.read(daemon.stderr.fileno(), 65536)
        selector.close()
        time.sleep(run_s)
        daemon.send_signal(signal.SIGTERM)
        stdout, rest = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    return daemon.returncode, stdout, [json.loads(line) for line in (seen + rest).decode().splitlines()]


@pytest.mark.parametrize("view", ["host", "pod"])
def test_entry_command_runs_and_logs_json_lines(tmp_path: Path, view: str) -> None:
    policy = tmp_path / "guardian.toml"
    policy.write_text(policy_text())
    root = K8S if view == "host" else as_a_pod_sees_it(K8S, tmp_path / "pod")
    code, stdout, events = run_entry_command(root, policy)
    assert code == EXIT_OK, events
    assert stdout == b""  # every line is an event, on the stream the runtime logs
    assert all({"TIMESTAMP", "MESSAGE", "MESSAGE_ID", "PRIORITY"} <= event.keys() for event in events)
    started, stopped = events[0], events[-1]
    assert started["MESSAGE"].startswith(f"started: policy {policy}: ")
    assert "scorers kubelet_qos x1" in started["MESSAGE"] and "DRY RUN" in started["MESSAGE"]
    assert stopped["MESSAGE"] == "stopped" and stopped["GUARDIAN_KILLS"] == 0
    assert stopped["GUARDIAN_LOOKS"] >= 2  # it went round its loop, not just started
    # nothing went wrong on the way: no failed tick, no plugin error, no warning but the one a
    # pod always gets, that the kernel log cannot be read (README "Kubernetes")
    warnings = [e["MESSAGE"] for e in events if int(e["PRIORITY"]) <= 4]
    assert [w for w in warnings if not w.startswith("the kernel log cannot be read")] == []
    assert len(warnings) <= 1


def test_image_environment_has_no_systemd_in_it() -> None:
    # the DaemonSet runs the image's own command and environment, which the tests above ran
    assert not {"command", "args", "env", "envFrom"} & container().keys()
    env = image_env()
    assert env["GUARDIAN_LOG_FORMAT"] == "json"
    assert not any(name.startswith(("NOTIFY_", "WATCHDOG_", "JOURNAL_")) for name in env)
    assert instructions()["FROM"].startswith("docker.io/library/debian:bookworm-slim")


# --- the example in the shipped policy --------------------------------------------------------


def test_the_shipped_kubernetes_example_enables_kubelet_qos() -> None:
    """The commented example in etc/guardian.toml, uncommented, is a node policy of its own."""
    lines = DEFAULT_POLICY.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# A Kubernetes node:"))
    start = next(i for i in range(start, len(lines)) if lines[i] == "# [[cgroup]]")
    end = next(i for i in range(start, len(lines)) if lines[i] == "#")
    example = parse_policy("\n".join(line[2:] for line in lines[start:end]) + "\n", "example")
    assert example.scorers["kubelet_qos"] == 1.0
    assert [rule.match for rule in example.cgroups] == ["kubepods.slice/**/*.scope"]
    for rules in (example.protect, node_policy().protect):
        unit = rules[0].patterns["unit"]
        for daemon in ("kubelet", "containerd", "crio", "kube-proxy"):
            assert unit.search(f"{daemon}.service"), daemon
        assert not unit.search("kubelet.service.d") and not unit.search("cri-containerd-0a1b.scope")
