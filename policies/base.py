"""The bidding-policy protocol, shared by scripted, random, oracle and learned agents.

A policy acts for *all* agents at once (vectorized): it receives the observation
array ``(n_agents, OBS_DIM)`` and the concatenated action masks
``(n_agents, n_power_levels + n_price_levels)`` and returns integer actions
``(n_agents, 2)`` = [power level, price level] per agent.

Scripted and learned policies may read only what agents know: the observations,
the masks and the environment's *static* public description (``env.config``,
``env.scenario``, ``env.price_levels_per_mwh``, ``env.kernel.level_fraction``, agent names
and kinds). The oracle is the documented exception (it sees the future).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from gridswarm_env.env import GridSwarmEnv


@runtime_checkable
class Policy(Protocol):
    """A vectorized bidding policy."""

    name: str

    def reset(self, env: GridSwarmEnv, seed: int | None = None) -> None:
        """Called after ``env.reset``; ``env`` is the unwrapped environment."""

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Return ``(n_agents, 2)`` int64 actions for ``obs`` (n, OBS_DIM) and ``mask``."""


def split_mask(mask: np.ndarray, n_power_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the concatenated mask into (power-level mask, price-level mask)."""
    return mask[:, :n_power_levels].astype(bool), mask[:, n_power_levels:].astype(bool)


def sample_masked(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random allowed index per row of a boolean mask (vectorized)."""
    weights = mask.astype(float) * rng.random(mask.shape)
    return np.argmax(weights, axis=1).astype(np.int64)


def nearest_allowed(target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the allowed index nearest to ``target`` (ties to the lower index)."""
    idx = np.arange(mask.shape[1])[None, :]
    dist = np.where(mask, np.abs(idx - target[:, None]), np.iinfo(np.int64).max)
    return np.argmin(dist, axis=1).astype(np.int64)
