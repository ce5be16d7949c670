"""Boundaries of the configuration checks (hand-made mutation audit of
:mod:`gridswarm_env.config`): each bad value raises a ValueError naming the field and
what is allowed, and the value just inside the bound is accepted."""

from __future__ import annotations

import pytest

from gridswarm_env.config import (
    MAX_CRYPTO_THREADS,
    MAX_DT_S,
    EnvConfig,
    MarketConfig,
    RewardConfig,
)
from gridswarm_env.grid import GridParams


def test_gate_closure_must_come_before_the_end_of_the_step() -> None:
    """``market.gate_s < dt_s``: a gate at the very end of the step (0.25 s of 0.25 s)
    leaves no time to announce the next round."""
    with pytest.raises(ValueError, match=r"market\.gate_s \(0\.25\) must be shorter than "
                                         r"dt_s \(0\.25\)"):
        EnvConfig(dt_s=0.25)
    assert EnvConfig(dt_s=0.3).dt_s == 0.3
    assert EnvConfig(dt_s=0.25, market=MarketConfig(gate_s=0.2)).dt_s == 0.25


@pytest.mark.parametrize("tiny", [1e-12, 1e-15])
def test_a_step_or_window_shorter_than_one_sub_step_is_refused(tiny: float) -> None:
    """"A whole multiple (1 or more) of physics_dt_s": a positive value rounding to zero
    sub-steps is refused, not accepted as 0 sub-steps."""
    with pytest.raises(ValueError, match=r"EnvConfig\.dt_s = .*whole multiple of "
                                         r"grid\.physics_dt_s = 0\.05 \(1 or more times"):
        EnvConfig(dt_s=tiny)
    with pytest.raises(ValueError, match=r"EnvConfig\.rocof_window_s = .*whole multiple of "
                                         r"grid\.physics_dt_s = 0\.05 \(1 or more times"):
        EnvConfig(rocof_window_s=tiny)


def test_crypto_threads_bound_is_inclusive() -> None:
    assert EnvConfig(crypto_threads=MAX_CRYPTO_THREADS).crypto_threads == MAX_CRYPTO_THREADS
    with pytest.raises(ValueError, match=rf"EnvConfig\.crypto_threads = "
                                         rf"{MAX_CRYPTO_THREADS + 1}: at most 256"):
        EnvConfig(crypto_threads=MAX_CRYPTO_THREADS + 1)


def test_agent_step_bound_is_one_hour_exactly() -> None:
    """``dt_s`` at most 3600 s, whatever the physics sub-step (here one sub-step per
    step, so only this bound applies)."""
    ok = EnvConfig(dt_s=MAX_DT_S, grid=GridParams(physics_dt_s=MAX_DT_S))
    assert ok.dt_s == 3600.0
    with pytest.raises(ValueError, match=r"EnvConfig\.dt_s = 3600\.5: at most 3600 s"):
        EnvConfig(dt_s=3600.5, grid=GridParams(physics_dt_s=3600.5))


def test_reward_band_must_be_positive() -> None:
    """The reward divides the mean deviation by ``band_hz``: 0 is refused."""
    with pytest.raises(ValueError, match=r"RewardConfig\.band_hz = 0\.0: must be > 0"):
        RewardConfig(band_hz=0.0)
    assert RewardConfig(band_hz=0.01).band_hz == 0.01


def test_gate_closure_must_leave_time_for_bids() -> None:
    """``gate_s > 0``: at 0 s no bid could reach the operator before the gate closes."""
    with pytest.raises(ValueError, match=r"MarketConfig\.gate_s = 0\.0: must be > 0"):
        MarketConfig(gate_s=0.0)
    assert MarketConfig(gate_s=0.05).gate_s == 0.05
