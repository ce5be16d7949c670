"""``random``: uniform over the masked action set (a floor for every comparison)."""

from __future__ import annotations

import numpy as np

from policies.base import sample_masked, split_mask


class RandomPolicy:
    """Uniformly random feasible bids: power level uniform over the mask, price uniform."""

    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._n_power = 21

    def reset(self, env, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._n_power = env.config.market.n_power_levels

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        power_mask, price_mask = split_mask(mask, self._n_power)
        return np.stack([sample_masked(power_mask, self._rng),
                         sample_masked(price_mask, self._rng)], axis=1)
