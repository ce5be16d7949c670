"""Behaviour cloning: pre-train the shared MaskablePPO policy from a teacher policy.

A teacher (``heuristic`` or ``oracle``, :mod:`policies`) plays the environment
through the adapter; every agent-step gives one sample (observation, action mask,
teacher action, discounted return of the adapter's reward). The actor is fitted by
maximum likelihood of the teacher's actions under the masks and the critic by
regression on the returns::

    L = −mean log π(a_teacher | o, mask) + vf_coef · mean (V(o) − G)²
    G_t = Σ_k γ^k r_{t+k}    (within the episode; truncated at its end)

so PPO fine-tuning starts from the teacher's behaviour with a critic that already
knows its values (without the critic, the first PPO updates undo most of the
cloning). Sampling is deterministic for the adapter's seed and ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th

from policies import make_policy
from policies.base import nearest_allowed
from policies.learned import greedy_actions
from train.adapter import GridSwarmVecEnv


@dataclass
class Demonstrations:
    """Teacher samples, one row per agent-step.

    :param obs: ``(N, OBS_DIM)`` float32 observations.
    :param masks: ``(N, n_power + n_price)`` bool action masks.
    :param actions: ``(N, 2)`` int64 teacher actions.
    :param returns: ``(N,)`` float32 discounted returns of the adapter's reward.
    """

    obs: np.ndarray
    masks: np.ndarray
    actions: np.ndarray
    returns: np.ndarray

    def __len__(self) -> int:
        return int(self.obs.shape[0])


def collect_demonstrations(venv: GridSwarmVecEnv, teacher: str | Mapping[str, str],
                           n_agent_steps: int, gamma: float, *, student: Any = None,
                           **teacher_kwargs: Any) -> Demonstrations:
    """Let ``teacher`` act for every agent of ``venv`` for ~``n_agent_steps`` agent-steps.

    Collection stops at the first episode boundary after the budget is reached (so
    every return is complete), and resets ``venv`` first.

    With ``student`` (a MaskablePPO model), the samples are DAgger's (Ross, Gordon &
    Bagnell 2011): the student plays (deterministic) and the teacher labels every state
    it visits with the action it would have taken, so cloning them corrects the student
    in the states its own mistakes lead to, which the teacher's play never reaches; the
    returns are then those of the student's rewards.

    :param venv: the adapter (its pending SB3 seeds, if any, are used by the reset).
    :param teacher: a policy name or path for :func:`policies.make_policy`, or a
        mapping scenario name -> policy name (one teacher per scenario).
    :param n_agent_steps: sample budget (agent-steps).
    :param gamma: discount of the returns.
    :raises ValueError: for an unknown teacher, a scenario without one, or a budget < 1.
    """
    if n_agent_steps < 1:
        raise ValueError(f"n_agent_steps = {n_agent_steps!r}: must be >= 1")
    by_scenario = (dict(teacher) if isinstance(teacher, Mapping)
                   else dict.fromkeys(venv.scenarios, teacher))
    missing = [s for s in venv.scenarios if s not in by_scenario]
    if missing:
        raise ValueError(f"teacher mapping has no teacher for scenario(s) {missing}")
    # one teacher object per copy and scenario (oracles hold per-episode plans)
    cache: dict[tuple[int, str], Any] = {}

    def start(e: int) -> Any:
        raw = venv.active_envs[e]
        key = (e, raw.scenario.name)
        if key not in cache:
            cache[key] = make_policy(by_scenario[key[1]], **teacher_kwargs)
        cache[key].reset(raw, seed=None)
        return cache[key]

    obs = venv.reset()
    teachers = [start(e) for e in range(venv.n_envs)]
    rows: list[tuple[np.ndarray, ...]] = []
    n_power = int(venv.action_space.nvec[0])
    ep_rows: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [
        [] for _ in range(venv.n_envs)]
    collected = 0
    while True:
        masks = venv.action_masks()
        actions = np.empty((venv.num_envs, 2), dtype=np.int64)
        for e in range(venv.n_envs):
            sl = venv.slots(e)
            actions[sl] = teachers[e].act(obs[sl], masks[sl])
        # the teacher respects the kernel mask only through its own logic: record the
        # action the kernel would execute (nearest allowed level) so every target is valid
        actions[:, 0] = nearest_allowed(actions[:, 0], masks[:, :n_power])
        played = actions
        if student is not None:
            played = greedy_actions(student.policy, obs, masks)
        new_obs, rewards, dones, _infos = venv.step(played)
        finished_all = True
        for e in range(venv.n_envs):
            sl = venv.slots(e)
            ep_rows[e].append((obs[sl], masks[sl], actions[sl], rewards[sl]))
            if dones[sl][0]:
                rows.extend(_with_returns(ep_rows[e], gamma))
                collected += sum(len(r[0]) for r in ep_rows[e])
                ep_rows[e] = []
                teachers[e] = start(e)
            finished_all &= not ep_rows[e]
        obs = new_obs
        if collected >= n_agent_steps and (finished_all or collected >= 2 * n_agent_steps):
            break
    o, m, a, g = (np.concatenate(c) for c in zip(*rows, strict=True))
    return Demonstrations(obs=o.astype(np.float32), masks=m.astype(bool),
                          actions=a.astype(np.int64), returns=g.astype(np.float32))


def concatenate(parts: list[Demonstrations]) -> Demonstrations:
    """One set of samples from several (their rows in order)."""
    return Demonstrations(*(np.concatenate([getattr(p, f) for p in parts])
                            for f in ("obs", "masks", "actions", "returns")))


def _with_returns(steps: list, gamma: float) -> list[tuple[np.ndarray, ...]]:
    """Attach discounted returns (backwards over one finished episode of one copy)."""
    g = np.zeros_like(steps[-1][3], dtype=np.float64)
    out = []
    for o, m, a, r in reversed(steps):
        g = r + gamma * g
        out.append((o, m, a, g.copy()))
    out.reverse()
    return out


def behaviour_clone(model: Any, demos: Demonstrations, *, epochs: int = 10,
                    batch_size: int = 4096, learning_rate: float = 1e-3,
                    vf_coef: float = 0.5, seed: int = 0,
                    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                    ) -> dict[str, float]:
    """Fit ``model.policy`` (a MaskablePPO policy) to ``demos`` (see the module docstring).

    :param model: a ``MaskablePPO`` model; its policy is trained in place.
    :param demos: teacher samples from :func:`collect_demonstrations`.
    :param epochs: passes over the samples.
    :param batch_size: minibatch size.
    :param learning_rate: Adam step size (a separate optimizer; PPO's is untouched).
    :param vf_coef: weight of the critic's regression loss.
    :param seed: minibatch shuffling seed.
    :param on_epoch: called after each epoch with the number of epochs done and that
        epoch's ``{"bc_nll", "bc_value_mse"}`` (e.g. to record progress).
    :returns: final ``{"bc_nll", "bc_value_mse", "bc_accuracy_power", "bc_accuracy_price"}``.
    """
    policy = model.policy
    policy.set_training_mode(True)
    opt = th.optim.Adam(policy.parameters(), lr=learning_rate)
    rng = np.random.default_rng(seed)
    dev = policy.device
    obs = th.as_tensor(demos.obs, device=dev)
    acts = th.as_tensor(demos.actions, device=dev)
    rets = th.as_tensor(demos.returns, device=dev)
    masks = demos.masks
    n = len(demos)
    stats: dict[str, float] = {}
    for epoch in range(epochs):
        order = rng.permutation(n)
        nll_sum = mse_sum = 0.0
        for start in range(0, n, batch_size):
            b = order[start:start + batch_size]
            values, log_prob, _ = policy.evaluate_actions(obs[b], acts[b], action_masks=masks[b])
            nll = -log_prob.mean()
            mse = th.nn.functional.mse_loss(values.flatten(), rets[b])
            loss = nll + vf_coef * mse
            opt.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            nll_sum += nll.item() * len(b)
            mse_sum += mse.item() * len(b)
        stats = {"bc_nll": nll_sum / n, "bc_value_mse": mse_sum / n}
        if on_epoch is not None:
            on_epoch(epoch + 1, dict(stats))
    policy.set_training_mode(False)
    pred = greedy_actions(policy, demos.obs, masks)
    stats["bc_accuracy_power"] = float((pred[:, 0] == demos.actions[:, 0]).mean())
    stats["bc_accuracy_price"] = float((pred[:, 1] == demos.actions[:, 1]).mean())
    return stats
