"""A policy playing an environment step by step, for tests that inspect every step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from policies import make_policy


def play(raw: Any, policy: str = "heuristic", seed: int = 0, *,
         until_s: float | None = None) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Reset ``raw`` (the unwrapped env) and ``policy`` with ``seed``; yield the step's
    ``(rewards, info)`` after every step, until the episode ends or, with ``until_s``,
    until the next step would end after ``until_s``."""
    raw.reset(seed=seed)
    pol = make_policy(policy)
    pol.reset(raw, seed=seed)
    while raw.agents and (until_s is None or raw.t_s + raw.config.dt_s <= until_s):
        act = pol.act(raw.observations_array(), raw.action_masks())
        _obs, rewards, _trunc, info = raw.step_arrays(act[:, 0], act[:, 1])
        yield rewards, info
