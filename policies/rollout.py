"""Run one episode of a policy in an environment and keep a compact per-step trace.

Used by ``evaluate.py``, ``demo.py`` and the tests, so every tool measures the same way;
:data:`EVAL_SEEDS` is the one definition of the seeds reserved for measuring (training
never plays them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridswarm_env.env import GridSwarmEnv
from policies.base import Policy

#: Episode seeds reserved for measuring policies: training never plays one. The rule:
#: a training episode's seed is drawn from [0, 2**31 - 1) and drawn again while it falls
#: in this range (:func:`train.adapter.training_episode_seed`), so every seed here is
#: held out by construction, not only in practice. ``evaluate.py``'s seeds (``--seed``
#: … ``--seed + --episodes - 1``; by default 0-4), the ``--eval-every`` seeds
#: (:data:`train.config.EVAL_SEED_BASE` + k, 10 000 + k) and the learning benchmark's
#: held-out seeds (0 + k) lie in it; ``evaluate.py`` notes seeds beyond it.
EVAL_SEEDS = range(100_000)

TRACE_KEYS = ("t_s", "freq_hz", "freq_min_hz", "freq_max_hz", "requirement_mw", "request_mw",
              "delivered_mw", "would_dispatch_mw", "clearing_price_per_mwh", "accepted_mw",
              "consensus", "negotiations", "blocked", "executed_violations", "product")


@dataclass
class EpisodeResult:
    """KPIs of one episode and its per-step trace (lists keyed by :data:`TRACE_KEYS`)."""

    metrics: dict[str, Any]
    trace: dict[str, list] = field(default_factory=dict)
    freq_substeps_hz: np.ndarray | None = None   # every physics sub-step (for plots)


def _check_policy(policy: Any) -> None:
    """:raises TypeError: ``policy`` is a class, or lacks a callable ``reset`` or ``act``
    (``run_episode(env, None)`` failed as AttributeError "'NoneType' object has no
    attribute 'reset'")."""
    if isinstance(policy, type) or not all(callable(getattr(policy, method, None))
                                           for method in ("reset", "act")):
        got = (f"the class {policy.__name__} (pass an instance: {policy.__name__}())"
               if isinstance(policy, type) else f"a {type(policy).__name__}")
        raise TypeError(f"run_episode(policy=...): {got}; expected a policy with "
                        "reset(env, seed) and act(obs, mask) (policies.base.Policy), e.g. "
                        "policies.make_policy('heuristic')")


def run_episode(env: GridSwarmEnv, policy: Policy, seed: int | None = None, *,
                max_steps: int | None = None, keep_substeps: bool = False,
                on_step: Callable[[GridSwarmEnv, dict[str, Any]], None] | None = None,
                reset_env: bool = True) -> EpisodeResult:
    """Reset ``env`` with ``seed``, let ``policy`` act until the episode ends.

    Uses the environment's array fast path (same physics as the dict API).

    :param max_steps: stop early after this many steps (the KPIs cover what ran).
    :param keep_substeps: keep the frequency at every physics sub-step.
    :param on_step: called after each step with the env and its step info.
    :param reset_env: ``False`` when the caller has just reset ``env`` with ``seed``
        and not stepped it (the policy is still reset with ``seed``): the episode is
        the same, without a second reset (and a second ``episode_start`` audit entry).
    :raises TypeError: ``env`` is no gridswarm environment or ``policy`` no policy (an
        object with ``reset`` and ``act``), before the environment is reset.
    """
    _check_policy(policy)
    raw = getattr(env, "unwrapped", None)
    if not callable(getattr(raw, "step_arrays", None)):
        raise TypeError(f"run_episode(env=...): a {type(env).__name__}; expected a gridswarm "
                        "environment (gridswarm_env.parallel_env(...), wrapped or not)")
    if reset_env:
        raw.reset(seed=seed)
    elif raw.step_index != 0 or not raw.agents:
        raise ValueError("reset_env=False needs an environment reset and not yet stepped")
    policy.reset(raw, seed=seed)
    obs = raw.observations_array()
    trace: dict[str, list] = {k: [] for k in TRACE_KEYS}
    subs: list[np.ndarray] = []
    steps = 0
    while raw.agents and (max_steps is None or steps < max_steps):
        actions = np.asarray(policy.act(obs, raw.action_masks()))
        if actions.shape != (raw.n_agents, 2):   # a third column was ignored, a list or
            # a 1-D array failed as "list indices must be integers or slices, not tuple"
            raise ValueError(
                f"policy {getattr(policy, 'name', type(policy).__name__)!r}: act() returned "
                f"shape {actions.shape}; expected shape ({raw.n_agents}, 2), one row of "
                "integer levels [power level, price level] per agent (policies.base.Policy)")
        obs, _rewards, _trunc, info = raw.step_arrays(actions[:, 0], actions[:, 1])
        for k in TRACE_KEYS:
            trace[k].append(info[k])
        if keep_substeps:
            subs.append(raw.freq_trace_hz.copy())
        if on_step is not None:
            on_step(raw, info)
        steps += 1
    return EpisodeResult(metrics=raw.episode_metrics(), trace=trace,
                         freq_substeps_hz=np.concatenate(subs) if subs else None)
