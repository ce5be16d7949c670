"""Shadow mode (issue 5) runs bids, clearing, signing, verification and the kernel but
dispatches nothing: the grid must follow the no-dispatch counterfactual exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gridswarm_env.env import GridSwarmEnv
from gridswarm_env.fleet import KIND_BATTERY
from policies.base import sample_masked

N_POWER = 21


def _run(raw: GridSwarmEnv, seed: int, how: str, max_steps: int | None = None) -> dict[str, Any]:
    """Step with ``how`` in {"zero", "random", "extreme"}; keep frequency and infos."""
    raw.reset(seed=seed)
    rng = np.random.default_rng(100 + seed)
    n = raw.n_agents
    freq, would, delivered = [], [], []
    soc0 = raw.fleet.soc.copy()
    while raw.agents and (max_steps is None or len(would) < max_steps):
        mask = raw.action_masks()[:, :N_POWER]
        if how == "zero":
            power = np.full(n, N_POWER // 2)
        elif how == "random":
            power = sample_masked(mask, rng)
        else:   # the extreme allowed level, alternating direction
            power = (N_POWER - 1 - np.argmax(mask[:, ::-1], axis=1)) if len(would) % 3 \
                else np.argmax(mask, axis=1)
        raw.step_arrays(power, rng.integers(0, 11, n))
        freq.append(raw.freq_trace_hz.copy())
        would.append(raw.last_info["would_dispatch_mw"])
        delivered.append(raw.last_info["delivered_mw"])
    return {"freq": np.concatenate(freq), "would": np.array(would),
            "delivered": np.array(delivered), "metrics": raw.episode_metrics(),
            "soc0": soc0, "soc1": raw.fleet.soc.copy()}


@pytest.mark.parametrize(("scenario", "max_steps"), [("emergency", None),
                                                      ("solar_surplus", 120)])
def test_shadow_frequency_is_the_no_dispatch_counterfactual(make_env, scenario: str,
                                                            max_steps: int | None) -> None:
    counterfactual = _run(make_env(scenario, 100), 4, "zero", max_steps)
    assert counterfactual["metrics"]["contracts_signed"] == 0     # nobody offered anything
    for how in ("random", "extreme"):
        raw = make_env(scenario, 100, shadow=True)
        shadow = _run(raw, 4, how, max_steps)
        assert np.array_equal(shadow["freq"], counterfactual["freq"])
        m = shadow["metrics"]
        assert m["shadow"] is True
        assert m["contracts_signed"] > 0 and m["contracts_verified"] > 0
        assert m["contracts_rejected"] == 0
        assert np.any(shadow["would"] != 0.0)
        assert np.all(shadow["delivered"] == 0.0)
        assert m["shadow_dispatch_energy_mwh"] > 0.0
        assert m["balancing_payments"] == 0.0
        assert m["executed_violations"] == 0
        for key in ("frequency_nadir_hz", "frequency_zenith_hz", "max_rocof_hz_per_s",
                    "seconds_outside_band", "unserved_energy_mwh"):
            assert m[key] == counterfactual["metrics"][key], key
        bat = raw.fleet.kind == KIND_BATTERY
        np.testing.assert_array_equal(shadow["soc1"][bat], shadow["soc0"][bat])  # baseline 0


def test_shadow_differs_from_live_dispatch(make_env) -> None:
    """Guard for the test above: the same bids dispatched live do move the frequency."""
    live = _run(make_env("emergency", 100), 4, "random")
    shadow = _run(make_env("emergency", 100, shadow=True), 4, "random")
    assert not np.array_equal(live["freq"], shadow["freq"])
    assert live["metrics"]["frequency_nadir_hz"] > shadow["metrics"]["frequency_nadir_hz"]
    assert np.any(live["delivered"] != 0.0)


def test_shadow_would_dispatch_ramps_on_from_its_own_path_under_a_ramp_limit(make_env) -> None:
    """Under a ramp limit the would-be dispatch of shadow mode ramps on from the would-be
    path's last sub-step, as live dispatch does from the executed one: while the contracts
    agree (the same heuristic bids, the same cleared MW), ``would_dispatch_mw`` equals the
    live run's dispatch. (Before: the would-be power restarted from 0 MW every step, since
    nothing is executed in shadow mode: 4.2 MW would-be against 53.2 MW live at step 50,
    ``price_spike``, 0.2 MW/s battery ramp.)"""
    from policies import make_policy
    from policies.rollout import run_episode
    limits = {"battery": {"ramp_mw_per_s": 0.2}}
    runs = {}
    for shadow in (False, True):
        raw = make_env("price_spike", 100, limits=limits, shadow=shadow)
        trace = run_episode(raw, make_policy("heuristic"), seed=0, max_steps=60).trace
        runs[shadow] = np.array(trace["accepted_mw"]), np.array(trace["would_dispatch_mw"])
    np.testing.assert_array_equal(runs[True][0], runs[False][0])   # the same contracts
    assert runs[False][1][-1] > 40.0                                # ramped up live
    np.testing.assert_allclose(runs[True][1], runs[False][1], rtol=1e-9, atol=1e-9)
