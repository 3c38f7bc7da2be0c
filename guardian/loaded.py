"""A policy with its plugins and its selector, loaded all or nothing: what ``check`` validates,
what ``run`` starts with, and what a reload swaps in.

Whatever goes wrong while loading — a bad policy, a plugin that raises anything at all on
import, a scorer the policy names that no plugin offers — is a rejected policy (PolicyError,
exit 78 for ``check``), never a traceback: on reload the running policy stays in force.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from guardian.config import BUILT_IN, Policy, PolicyError, builtin_policy, load_policy
from guardian.host import Host
from guardian.plugins import Plugins, insecure_reason, make_plugin_manager
from guardian.selection import Selector
from guardian.text import counted, shown


@dataclass
class Loaded:
    """What a policy file gives a run: the policy, its plugins and the selector built from them."""

    policy: Policy
    plugins: Plugins
    selector: Selector


def load(host: Host, path: Optional[str], dry_run: bool = False) -> Loaded:
    """Policy + plugins + selector. Raises PolicyError and nothing else."""
    source = path or BUILT_IN
    try:
        policy = load_policy(path) if path else builtin_policy()
        if dry_run:
            policy = replace(policy, dry_run=True)
        for hook in policy.hooks:
            # guardian runs it as root: the rule of plugin files, for the same reason
            reason = insecure_reason(hook.command[0])
            if reason is not None:
                raise PolicyError(source, f"{hook.label}.command[0]", f"{shown(hook.command[0])}: {reason}")
        plugins = make_plugin_manager(
            policy.plugins.directory or host.plugin_dir(), policy.plugins.entry_points
        )
        return Loaded(policy, plugins, Selector(policy, plugins))
    except PolicyError:
        raise
    except (Exception, SystemExit) as exc:  # a plugin's import may raise anything, SystemExit too
        raise PolicyError(source, "", f"could not be loaded: {type(exc).__name__}: {exc}") from None


def summarize(policy: Policy) -> str:
    """One line: what the policy watches and how it chooses."""
    parts = []
    m = policy.machine
    if m.enabled:
        mem = f"MemAvailable {m.mem_available.term or '-'}/{m.mem_available.kill or '-'}"
        swap = f"SwapFree {m.swap_free.term or '-'}/{m.swap_free.kill or '-'}"
        parts.append(
            f"machine: {mem}, {swap}"
            + (f", PSI {m.psi.kind} {m.psi.stall_pct:g}%/{m.psi.duration_s:g}s" if m.psi else "")
        )
    if policy.cgroups:
        rules = counted(len(policy.cgroups), "cgroup rule")
        parts.append(f"{rules} ({', '.join(r.match for r in policy.cgroups)})")
    parts.append("scorers " + ", ".join(f"{k} x{v:g}" for k, v in policy.scorers.items()))
    if policy.dry_run:
        parts.append("DRY RUN")
    return "; ".join(parts)
