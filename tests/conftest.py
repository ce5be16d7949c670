"""Shared fixtures of the environment tests: an env factory and a checked episode runner.

The runner steps the raw environment through its array fast path with a chosen
power-level strategy (several of them ignore the action masks on purpose) and,
after every step, checks *independently* of the kernel's interval arithmetic:

* blocked attempts: the number of chosen power levels that the mask observed
  before the step did not allow equals the increase of ``blocked_attempts``
  (and ``info["blocked"]``);
* ``executed_violations`` stays 0;
* physics of what was executed, from the fleet's stored energy before and after
  the step and the declared limits only:

  - stored energy in [0, E_cap]; outside [soc_min, soc_max]·E_cap only if the step
    did not move it further out;
  - battery balancing power (= net injection, baseline 0) within
    [−max_charge_mw, max_discharge_mw];
  - EVs never inject (ΔE >= 0) and charge at most ``max_charge_mw``·η_c·h; an EV
    unplugged before the step has exactly one allowed power level (0 MW), stores
    nothing and executes 0 MW;
  - solar only curtails: p in [−available, 0];
  - with a finite ramp limit, p_k lies in [min(p_{k−1}, 0) − r, max(p_{k−1}, 0) + r] with
    r = ramp_mw_per_s·dt_s (moves away from the baseline are limited; returning is free).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import configuration as hypothesis_configuration

import gridswarm_env
from gridswarm_env.env import GridSwarmEnv
from gridswarm_env.fleet import KIND_BATTERY, KIND_EV, KIND_SOLAR
from policies.base import sample_masked

# Hypothesis keeps its example database (failing examples, replayed first next time) in
# the temporary directory, not in a .hypothesis/ directory of the working tree: the tests
# write nothing into the repository
hypothesis_configuration.set_hypothesis_home_dir(
    os.path.join(tempfile.gettempdir(), "gridswarm-hypothesis"))

TOL_MW = 1e-7
TOL_MWH = 1e-9

PowerStrategy = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


@pytest.fixture(autouse=True)
def _temporary_files_inside_pytests_directory(tmp_path_factory, monkeypatch):
    """Point the temporary directory (``tempfile``'s and, for subprocesses, ``TMPDIR``) at
    one folder of this pytest run's base directory, which pytest prunes: an output the
    code under test rescues there (``policies.cli_checks.rescue_path``) or a folder a
    library makes there is not left in the machine's ``/tmp`` by a test that fails
    before its own clean-up."""
    folder = tmp_path_factory.getbasetemp() / "tempdir"
    folder.mkdir(exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))


def _full_discharge(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.full(mask.shape[0], mask.shape[1] - 1)


def _full_charge(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.zeros(mask.shape[0], dtype=np.int64)


def _alternating(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return _full_discharge(mask, k, rng) if k % 2 == 0 else _full_charge(mask, k, rng)


def _uniform_unmasked(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, mask.shape[1], mask.shape[0])


def _outside_mask(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """A level the mask forbids wherever there is one (maximally blocked)."""
    return sample_masked(~mask | mask.all(axis=1, keepdims=True), rng)


def _masked_random(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return sample_masked(mask, rng)


POWER_STRATEGIES: dict[str, PowerStrategy] = {
    "full_discharge": _full_discharge,
    "full_charge": _full_charge,
    "alternating": _alternating,
    "uniform_unmasked": _uniform_unmasked,
    "outside_mask": _outside_mask,
    "masked_random": _masked_random,
}
ADVERSARIAL = ("full_discharge", "full_charge", "alternating", "uniform_unmasked",
               "outside_mask")
PRICE_MODES = ("random", "accept", "reject")


def _price_levels(mode: str, obs: np.ndarray, n_price: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``accept``: the price that clears first (cheapest offer in a shortage, highest
    absorber bid in a surplus); ``reject``: the opposite; ``random``: uniform."""
    n = obs.shape[0]
    if mode == "random":
        return rng.integers(0, n_price, n)
    shortage = obs[:, gridswarm_env.OBS_FIELDS.index("request_rel")] >= 0
    cheap_wins = shortage if mode == "accept" else ~shortage
    return np.where(cheap_wins, 0, n_price - 1).astype(np.int64)


@dataclass
class RunStats:
    """What a checked run did (totals over its steps)."""

    steps: int = 0
    agent_steps: int = 0
    blocked: int = 0
    negotiations: int = 0
    max_abs_p_mw: float = 0.0
    strategies: list[str] = field(default_factory=list)
    #: per agent, the largest move of its executed power away from the baseline in one
    #: step (``p − max(p_prev, 0)`` up, ``min(p_prev, 0) − p`` down, MW; what a ramp limit
    #: bounds, :func:`~gridswarm_env.kernel.ramp_interval`), measured from the powers alone
    max_move_mw: np.ndarray | None = None


@dataclass(frozen=True)
class _Before:
    """What the checks need from the state before a step (copies)."""

    energy_mwh: np.ndarray
    plugged: np.ndarray
    solar_available_mw: np.ndarray
    reserve_mw: np.ndarray
    power_mask: np.ndarray
    p_mw: np.ndarray
    p_end_mw: np.ndarray   # the last sub-step's power (moved only under a ramp limit)

    @classmethod
    def of(cls, raw: GridSwarmEnv, power_mask: np.ndarray) -> _Before:
        f = raw.fleet
        return cls(f.energy_mwh.copy(), f.plugged.copy(), f.solar_available_mw.copy(),
                   raw.reserve_standing_mw().copy(), power_mask.copy(), raw.last_p_mw.copy(),
                   raw.last_p_end_mw.copy())


def _check_executed_physics(raw: GridSwarmEnv, before: _Before) -> None:
    f, lim = raw.fleet, raw.kernel.arrays
    h = raw.config.dt_s / 3600.0
    kind, cap = f.kind, f.energy_capacity_mwh
    e0, e1, p = before.energy_mwh, f.energy_mwh, raw.last_p_mw
    storage = kind != KIND_SOLAR
    assert np.all(e1[storage] >= -TOL_MWH), "stored energy below 0"
    assert np.all(e1[storage] <= cap[storage] + TOL_MWH), "stored energy above capacity"
    further_low = (e1 < lim.soc_min * cap - TOL_MWH) & (e1 < e0 - TOL_MWH)
    further_high = (e1 > lim.soc_max * cap + TOL_MWH) & (e1 > e0 + TOL_MWH)
    bad = np.flatnonzero(storage & (further_low | further_high))
    assert bad.size == 0, f"SoC pushed outside its limits for {[raw.possible_agents[i] for i in bad]}"
    bat, ev, sol = kind == KIND_BATTERY, kind == KIND_EV, kind == KIND_SOLAR
    assert np.all(p[bat] <= lim.max_discharge_mw[bat] + TOL_MW)
    assert np.all(p[bat] >= -lim.max_charge_mw[bat] - TOL_MW)
    d = e1 - e0
    assert np.all(d[ev] >= -TOL_MWH), "an EV injected (V2G is not allowed)"
    assert np.all(d[ev] <= lim.max_charge_mw[ev] * f.eta_charge[ev] * h + TOL_MWH)
    off = ev & ~before.plugged
    assert np.all(d[off] == 0.0) and np.all(p[off] == 0.0), "an unplugged EV moved power"
    # (an EV that left while holding a reserve contract is the subject of its own test)
    off_free = off & (before.reserve_mw == 0)
    zero_level = np.zeros(before.power_mask.shape[1], dtype=bool)
    zero_level[before.power_mask.shape[1] // 2] = True
    assert np.all(before.power_mask[off_free] == zero_level), "unplugged EV allowed a level != 0"
    assert np.all(p[sol] <= TOL_MW)
    assert np.all(p[sol] >= -before.solar_available_mw[sol] - TOL_MW)
    if raw.kernel.has_ramp:
        # the power ramps inside the step: check every sub-step of the executed path
        # from the previous step's last sub-step, at ramp·physics_dt per sub-step
        path = raw.last_p_path_mw
        assert np.array_equal(path.mean(axis=1), p)
        prev = np.concatenate((before.p_end_mw[:, None], path[:, :-1]), axis=1)
        step = lim.ramp_mw_per_s[:, None] * raw.config.grid.physics_dt_s
        bad = ((path > np.maximum(prev, 0.0) + step + TOL_MW)
               | (path < np.minimum(prev, 0.0) - step - TOL_MW)).any(axis=1)
        jump = np.flatnonzero(bad)
        assert jump.size == 0, (
            f"ramp limit broken inside the step at t = {raw.t_s} s by "
            f"{[raw.possible_agents[i] for i in jump[:5]]}")
        return
    p_prev = before.p_mw
    ramp = lim.ramp_mw_per_s * raw.config.dt_s
    jump = np.flatnonzero((p > np.maximum(p_prev, 0.0) + ramp + TOL_MW)
                          | (p < np.minimum(p_prev, 0.0) - ramp - TOL_MW))
    assert jump.size == 0, (
        f"ramp limit broken at t = {raw.t_s} s by {[raw.possible_agents[i] for i in jump[:5]]}: "
        f"{p_prev[jump[:5]]} -> {p[jump[:5]]} MW")


def run_checked(raw: GridSwarmEnv, seed: int, power: str | list[str], price: str = "random",
                *, max_steps: int | None = None) -> RunStats:
    """Reset ``raw`` with ``seed`` and step it with independent checks after every step.

    :param power: a key of :data:`POWER_STRATEGIES`, or a list of keys used in turn
        (one per step, cycling).
    :param price: one of :data:`PRICE_MODES`.
    :param max_steps: stop early (None: run to truncation).
    """
    obs, _ = raw.reset(seed=seed)
    rng = np.random.default_rng(seed)
    schedule = [power] if isinstance(power, str) else list(power)
    n_power = raw.config.market.n_power_levels
    n_price = raw.config.market.n_price_levels
    rows = np.arange(raw.n_agents)
    stats = RunStats()
    obs = raw.observations_array()
    while raw.agents and (max_steps is None or stats.steps < max_steps):
        name = schedule[stats.steps % len(schedule)]
        mask = raw.action_masks()
        power_mask = mask[:, :n_power].copy()
        levels = np.asarray(POWER_STRATEGIES[name](power_mask, stats.steps, rng), dtype=np.int64)
        prices = _price_levels(price, obs, n_price, rng)
        expected_blocked = int(np.count_nonzero(~power_mask[rows, levels]))
        blocked_before = raw.metrics.blocked_attempts
        before = _Before.of(raw, power_mask)
        obs, _rewards, _trunc, info = raw.step_arrays(levels, prices)
        assert raw.metrics.blocked_attempts - blocked_before == expected_blocked
        assert info["blocked"] == expected_blocked
        assert info["executed_violations"] == 0, f"executed violation at step {stats.steps}"
        _check_executed_physics(raw, before)
        stats.steps += 1
        stats.agent_steps += raw.n_agents
        stats.blocked += expected_blocked
        stats.negotiations += info["negotiations"]
        stats.max_abs_p_mw = max(stats.max_abs_p_mw, float(np.abs(raw.last_p_mw).max()))
        p, p_prev = raw.last_p_mw, before.p_mw
        move = np.maximum(p - np.maximum(p_prev, 0.0), np.minimum(p_prev, 0.0) - p)
        stats.max_move_mw = move if stats.max_move_mw is None else np.maximum(
            stats.max_move_mw, move)
        stats.strategies.append(name)
    m = raw.episode_metrics()
    assert m["blocked_attempts"] == stats.blocked
    assert m["executed_violations"] == 0
    return stats


@pytest.fixture(scope="session")
def make_env() -> Callable[..., GridSwarmEnv]:
    """Factory of raw envs: ``make_env(scenario, n_agents=100, trust="hmac", **kwargs)``."""

    def factory(scenario: str = "price_spike", n_agents: int = 100, trust: str = "hmac",
                **kwargs) -> GridSwarmEnv:
        return gridswarm_env.parallel_env(scenario=scenario, n_agents=n_agents, trust=trust,
                                          **kwargs).unwrapped

    return factory


@pytest.fixture(scope="session")
def checked_run() -> Callable[..., RunStats]:
    """:func:`run_checked` (an episode with independent per-step limit checks)."""
    return run_checked
