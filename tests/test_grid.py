"""Tests of gridswarm_env.grid: closed forms, calibration, exactness of the ZOH scheme."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from gridswarm_env.grid import GridModel, GridParams, rocof_hz_per_s, step_response

LOSS_PU = -0.10  # generator trip of 0.10 p.u. = a net-injection step of −0.10 p.u.


@pytest.fixture
def params() -> GridParams:
    return GridParams()


def test_closed_forms_with_defaults(params: GridParams) -> None:
    # RoCoF = ΔP·f0/(2H) = −0.1·60/8 = −0.75 Hz/s; Δf_ss = ΔP·R/(DR+Km) = −0.1·0.05/1.0
    assert params.initial_rocof_hz_per_s(LOSS_PU) == pytest.approx(-0.75)
    assert params.steady_state_deviation_pu(LOSS_PU) == pytest.approx(-0.005)
    assert params.frequency_response_pu == pytest.approx(1.0 + 0.95 / 0.05)


def test_initial_rocof_from_derivative_and_first_substeps(params: GridParams) -> None:
    model = GridModel(params, 1.0)
    rhs = model.derivative(np.zeros(3), LOSS_PU)
    assert rhs[0] * params.nominal_freq_hz == pytest.approx(-0.75, rel=1e-12)
    assert rhs[1] == 0.0 and rhs[2] == 0.0
    trace = np.concatenate(([model.freq_hz], model.advance(np.full(model.n_substeps, LOSS_PU))))
    r = rocof_hz_per_s(trace, params.physics_dt_s)
    # r[0], r[1] are mean slopes over the first two sub-steps (midpoints 0.025 s and
    # 0.075 s); linear extrapolation to t = 0+ recovers the initial RoCoF.
    initial = 1.5 * r[0] - 0.5 * r[1]
    assert initial == pytest.approx(params.initial_rocof_hz_per_s(LOSS_PU), rel=0.02)
    # RoCoF only eases afterwards (governor and damping act against the fall).
    assert r[0] < 0 and np.all(np.diff(r[:10]) > 0)


def test_steady_state_matches_closed_form(params: GridParams) -> None:
    _, freq_hz = step_response(params, LOSS_PU, 120.0)
    expected_hz = params.nominal_freq_hz * (1 + params.steady_state_deviation_pu(LOSS_PU))
    assert expected_hz == pytest.approx(59.70)
    assert freq_hz[-1] - 60.0 == pytest.approx(expected_hz - 60.0, rel=0.02)


def test_nadir_calibration(params: GridParams) -> None:
    # DESIGN §3: unassisted 0.10 p.u. loss -> nadir near 59.35 Hz about 2.4 s after the
    # event. A 1 ms reference (same exact scheme) puts it at 59.3501 Hz, t = 2.369 s.
    time_s, freq_hz = step_response(params, LOSS_PU, 20.0)
    k = int(np.argmin(freq_hz))
    assert freq_hz[k] == pytest.approx(59.35, abs=0.01)
    assert time_s[k] == pytest.approx(2.4, abs=0.1)
    assert freq_hz[k] < 59.5  # below the 59.5 Hz shedding stage
    assert freq_hz[k] > 59.3  # but above ERCOT's first UFLS stage
    fine = dataclasses.replace(params, physics_dt_s=0.001)
    t_fine, f_fine = step_response(fine, LOSS_PU, 5.0)
    kf = int(np.argmin(f_fine))
    assert f_fine[kf] == pytest.approx(59.3501, abs=1e-3)
    assert t_fine[kf] == pytest.approx(2.369, abs=0.005)
    assert f_fine[kf] <= freq_hz[k]  # the coarse samples cannot go below the true nadir


def test_zero_input_from_rest_stays_nominal(params: GridParams) -> None:
    model = GridModel(params, 1.0)
    for _ in range(50):
        freq_hz = model.advance(np.zeros(model.n_substeps))
        assert np.all(freq_hz == 60.0)
    assert np.all(model.state == 0.0)
    assert model.advance_variable(0.0, 0.0123) == 60.0


def test_linearity(params: GridParams) -> None:
    rng = np.random.default_rng(1)
    u = rng.normal(0.0, 0.02, size=(10, 20))
    a, b = GridModel(params, 1.0), GridModel(params, 1.0)
    for row in u:
        dev_a = a.advance(row) - 60.0
        dev_b = b.advance(2.0 * row) - 60.0
        np.testing.assert_allclose(dev_b, 2.0 * dev_a, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(b.state, 2.0 * a.state, rtol=1e-9, atol=1e-15)


def _reference_solve(model: GridModel, x0: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
    """Δf at the end of each sub-step from an adaptive RK solve, piece by piece."""
    x = x0.copy()
    out = []
    for uk in u:
        sol = solve_ivp(lambda _t, s, uk=uk: model.derivative(s, uk), (0.0, dt), x,
                        method="DOP853", rtol=1e-11, atol=1e-14)
        x = sol.y[:, -1]
        out.append(x[0])
    return np.array(out)


def test_zoh_exact_against_solve_ivp() -> None:
    params = GridParams(agc_gain_per_s=0.05)
    model = GridModel(params, 1.0)
    model.reset(0.001)
    x0 = model.state.copy()
    u = np.random.default_rng(7).normal(0.0, 0.05, size=40)
    exact = np.concatenate([model.advance(u[:20]), model.advance(u[20:])])
    ref = _reference_solve(model, x0, u, params.physics_dt_s)
    np.testing.assert_allclose(exact, 60.0 * (1 + ref), rtol=0, atol=1e-9)


def test_discretisation_is_computed_once_per_process_and_shared_read_only() -> None:
    # the matrix exponential is cached (SciPy's expm wakes BLAS threads that then spin);
    # models share the read-only result and it equals a fresh expm bit for bit
    from scipy.linalg import expm

    from gridswarm_env.grid import _zoh

    params = GridParams(inertia_h_s=3.5)
    first, second = GridModel(params, 1.0), GridModel(params, 1.0)
    assert first._phi is second._phi and first._gamma is second._gamma
    a, b = params.continuous_matrices()
    m = np.zeros((4, 4))
    m[:3, :3], m[:3, 3] = a, b
    e = expm(m * params.physics_dt_s)
    assert np.array_equal(first._phi, e[:3, :3]) and np.array_equal(first._gamma, e[:3, 3])
    with pytest.raises(ValueError):
        first._phi[0, 0] = 0.0
    assert _zoh(a, b, 0.01) is not _zoh(a, b, 0.02)   # keyed by the duration too
    assert _zoh(a, b * 2.0, 0.01)[1] == pytest.approx(2.0 * _zoh(a, b, 0.01)[1])


def test_advance_equals_repeated_substeps(params: GridParams) -> None:
    u = np.random.default_rng(3).normal(0.0, 0.05, size=(5, 20))
    block, single, variable = (GridModel(params, 1.0) for _ in range(3))
    for row in u:
        f_block = block.advance(row)
        f_single = np.array([single.advance_substep(x) for x in row])
        f_var = np.array([variable.advance_variable(x, params.physics_dt_s) for x in row])
        np.testing.assert_allclose(f_block, f_single, rtol=0, atol=1e-12)
        np.testing.assert_allclose(f_block, f_var, rtol=0, atol=1e-12)
    np.testing.assert_allclose(block.state, single.state, rtol=0, atol=1e-14)


def test_split_substep_is_exact(params: GridParams) -> None:
    # Splitting a sub-step at an event (same input) changes nothing.
    whole, split = GridModel(params, 1.0), GridModel(params, 1.0)
    whole.reset(-0.002)
    split.reset(-0.002)
    whole.advance_substep(0.03)
    split.advance_variable(0.03, 0.013)
    split.advance_variable(0.03, params.physics_dt_s - 0.013)
    np.testing.assert_allclose(split.state, whole.state, rtol=0, atol=1e-14)


def test_scalar_input_is_held_over_the_step(params: GridParams) -> None:
    a, b = GridModel(params, 0.5), GridModel(params, 0.5)
    assert a.n_substeps == 10
    np.testing.assert_array_equal(a.advance(LOSS_PU), b.advance(np.full(10, LOSS_PU)))


def test_agc_restores_nominal_frequency() -> None:
    params = GridParams(agc_gain_per_s=1.0)
    _, freq_hz = step_response(params, LOSS_PU, 300.0)
    assert abs(freq_hz[-1] - 60.0) < 1e-3
    assert freq_hz.min() < 59.5  # AGC is slow: it does not prevent the primary nadir


def test_agc_time_constant_estimate() -> None:
    # Documented estimate for a small gain: slow-mode time constant ≈ (D + Km/R)/K_agc.
    params = GridParams(agc_gain_per_s=0.1)
    slowest = np.max(np.linalg.eigvals(params.continuous_matrices()[0]).real)
    assert -1.0 / slowest == pytest.approx(params.frequency_response_pu / 0.1, rel=0.05)


def test_reset_and_frequency_property(params: GridParams) -> None:
    model = GridModel(params, 1.0)
    model.reset(-0.01)
    assert model.freq_hz == pytest.approx(59.4)
    assert model.delta_f_pu == -0.01
    np.testing.assert_array_equal(model.state, [-0.01, 0.0, 0.0])
    freq_hz = model.advance(np.zeros(20))
    assert np.all(np.diff(freq_hz) > 0)  # recovers towards 60 Hz


def test_rocof_windows() -> None:
    trace = 60.0 - 0.5 * np.arange(11) * 0.1  # −0.5 Hz/s ramp sampled at 0.1 s
    np.testing.assert_allclose(rocof_hz_per_s(trace, 0.1), np.full(10, -0.5))
    windowed = rocof_hz_per_s(trace, 0.1, window_s=0.5)
    assert windowed.shape == (6,)
    np.testing.assert_allclose(windowed, -0.5)
    with pytest.raises(ValueError, match="window"):
        rocof_hz_per_s(trace[:3], 0.1, window_s=0.5)
    with pytest.raises(ValueError, match="dt_s"):
        rocof_hz_per_s(trace, 0.0)
    # review: a window between two whole numbers of samples was rounded (0.12 s at 0.05 s
    # sampling read as 0.1 s), where EnvConfig.rocof_window_s refuses it
    with pytest.raises(ValueError, match=r"window_s = 0\.12: must be a whole multiple of "
                                         r"dt_s = 0\.05 \(1 or more times; not rounded\)"):
        rocof_hz_per_s(np.full(10, 60.0), 0.05, window_s=0.12)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("system_base_mw", 0.0),
        ("nominal_freq_hz", -60.0),
        ("inertia_h_s", float("nan")),
        ("damping_d_pu", -1.0),
        ("droop_r_pu", 0.0),
        ("mech_gain_km", float("inf")),
        ("reheat_fraction_fh", 1.5),
        ("reheat_fraction_fh", -0.1),
        ("reheat_time_constant_tr_s", 0.0),
        ("agc_gain_per_s", -0.01),
        ("physics_dt_s", 0.0),
        ("inertia_h_s", True),
    ],
)
def test_bad_params_rejected(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field) as info:
        GridParams(**{field: value})
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("dt_s", [0.0, -1.0, 0.07, 1.01, 0.025, float("nan")])
def test_bad_agent_step_rejected(params: GridParams, dt_s: float) -> None:
    with pytest.raises(ValueError, match="dt_s"):
        GridModel(params, dt_s)


def test_bad_inputs_rejected(params: GridParams) -> None:
    model = GridModel(params, 1.0)
    with pytest.raises(ValueError, match="shape"):
        model.advance(np.zeros(19))
    with pytest.raises(ValueError, match="finite"):
        model.advance(np.full(20, np.nan))
    with pytest.raises(ValueError, match="duration_s"):
        model.advance_variable(0.0, -0.01)
    with pytest.raises(ValueError, match="delta_f_pu"):
        model.reset(-1.0)
    assert GridModel(params, 1.0 + 1e-12).n_substeps == 20  # within tolerance


def test_agent_step_tolerance_is_the_configs() -> None:
    """Review: EnvConfig accepted dt_s within a relative 1e-9 of a whole number of
    sub-steps but GridModel demanded 1e-9 s, so EnvConfig(dt_s=4.0000000015,
    grid=GridParams(physics_dt_s=2.0)) passed validation and then failed to build an
    environment ("dt_s=4.0000000015 is not allowed")."""
    from gridswarm_env.config import EnvConfig
    from gridswarm_env.env import GridSwarmEnv

    coarse = GridParams(physics_dt_s=2.0)
    cfg = EnvConfig(dt_s=4.0000000015, grid=coarse)
    assert GridModel(coarse, cfg.dt_s).n_substeps == 2
    GridSwarmEnv("emergency", n_agents=5, trust="hmac", config=cfg)
    with pytest.raises(ValueError, match=r"GridModel\.dt_s = 4\.1: must be a whole multiple "
                                         r"of physics_dt_s = 2\.0"):
        GridModel(coarse, 4.1)


@pytest.mark.parametrize(("physics_dt_s", "count"), [(1e-300, "1e+300"), (1e-6, "1,000,000")])
def test_too_many_substeps_refused_as_env_config_refuses_them(physics_dt_s: float,
                                                              count: str) -> None:
    """Review: ``GridModel`` used directly had no sub-step bound: physics_dt_s = 1e-300
    failed in numpy ("Maximum allowed dimension exceeded"), 1e-6 tried to allocate 7 TiB
    (MemoryError after seconds). Now EnvConfig's bound and words, naming GridModel.dt_s."""
    with pytest.raises(ValueError, match=rf"^GridModel\.dt_s = 1\.0: {re.escape(count)} physics sub-steps "
                                         r"of .* s per step; at most 2,400 \(.*raise "
                                         r"physics_dt_s for longer steps\)$"):
        GridModel(GridParams(physics_dt_s=physics_dt_s), 1.0)
    assert GridModel(GridParams(physics_dt_s=1.0 / 2400), 1.0).n_substeps == 2400


# --- boundaries a mutation audit found unpinned
@pytest.mark.parametrize("duration_s, n_substeps", [(0.3, 6), (0.7, 14), (2.1, 42), (1.0, 20)])
def test_step_response_covers_a_horizon_that_is_a_whole_number_of_substeps(
        duration_s: float, n_substeps: int) -> None:
    """``duration_s`` rounded down to whole 50 ms sub-steps: 0.3 s is 6 sub-steps although
    ``0.3 / 0.05`` is 5.999999999999999 in floating point (a plain floor gave 5, and the
    trace stopped one sub-step short of the requested horizon)."""
    params = GridParams()
    assert params.physics_dt_s == 0.05
    t, f = step_response(params, -0.1, duration_s)
    assert t.shape == f.shape == (n_substeps + 1,)
    assert t[-1] == pytest.approx(duration_s, rel=1e-12)
    # the first sub-step's slope is the closed-form initial RoCoF to first order
    assert (f[1] - f[0]) / params.physics_dt_s == pytest.approx(
        params.initial_rocof_hz_per_s(-0.1), rel=0.05)


# one long agent step (60 s = 1 200 sub-steps) with an irregular input, printed as the
# bytes of the frequency trace and the end state (the process's BLAS threads set outside)
_LONG_STEP = """
import hashlib
import numpy as np
from gridswarm_env.grid import GridModel, GridParams
model = GridModel(GridParams({fields}), 60.0)
u = np.random.default_rng(0).normal(0.0, 0.01, model.n_substeps)
f = model.advance(u)
print(hashlib.sha256(f.tobytes() + model.state.tobytes()).hexdigest())
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                    reason="OpenBLAS runs one thread on one CPU: the test could not fail")
@pytest.mark.parametrize("fields", ["", "governor_valve_time_constant_tg_s=0.2, "
                                        "turbine_hp_time_constant_tch_s=0.3"],
                         ids=["lag-free", "lags"])
def test_long_step_is_the_same_bits_for_any_blas_thread_count(fields: str) -> None:
    # OpenBLAS splits a matrix-vector product of ~460 000+ elements over its threads by
    # rows, and a split off a multiple of 4 rows sums some rows another way: a step of
    # 1 200 sub-steps (a (1 203, 1 200) product) gave other bits with 2 threads than
    # with 1 (the machine's cores, OPENBLAS_NUM_THREADS or OMP_NUM_THREADS)
    root = str(Path(__file__).resolve().parents[1])
    digests = set()
    for threads in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": root, "OPENBLAS_NUM_THREADS": threads,
               "OMP_NUM_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", _LONG_STEP.format(fields=fields)],
                              env=env, cwd=root,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        digests.add(done.stdout.strip())
    assert len(digests) == 1


def test_long_step_equals_one_product_summed_on_one_thread(params: GridParams) -> None:
    # the blocked product (steps of 256+ sub-steps) gives the single-threaded product's
    # bits: each row is summed as one call would sum it
    model = GridModel(params, 15.0)   # 300 sub-steps
    u = np.random.default_rng(1).normal(0.0, 0.01, model.n_substeps)
    rows = model._forced.shape[0]
    expected = model._free.dot(model.state)
    for start in range(0, rows, 8):   # (8, 300) products: far below any threading
        expected[start:start + 8] += model._forced[start:start + 8].dot(u)
    f = model.advance(u)
    n = model.n_substeps
    assert np.array_equal(model.state, expected[n:])
    assert np.array_equal(f, (expected[:n] + 1.0) * params.nominal_freq_hz)


# ---------------------------------------------------------------- governor deadband
DEADBAND_HZ = 0.036   # NERC's recommended maximum (BAL-001-TRE-1: steam and hydro)


def test_zero_deadband_is_the_linear_model_bit_for_bit() -> None:
    # the default (0 Hz) and an explicit 0.0 run the stacked linear model: the digest of
    # three agent steps from an off-nominal start, computed with the code before the
    # deadband existed, and the stacked product itself, bit for bit
    import hashlib

    assert GridParams(governor_deadband_hz=0.0) == GridParams()
    model = GridModel(GridParams(governor_deadband_hz=0.0), 1.0)
    assert model._free is not None and model._deadband is None
    model.reset(0.0004)
    u = np.random.default_rng(5).normal(0.0, 0.02, (3, 20))
    digest = hashlib.sha256()
    for row in u:
        expected_state = model._free[20:].dot(model.state) + model._forced[20:].dot(row)
        digest.update(model.advance(row).tobytes())
        assert np.array_equal(model.state, expected_state)
    digest.update(model.state.tobytes())
    assert digest.hexdigest() == (
        "656b9aba9633e493f0ce57bb9ac0737fe639e87b4699814657d114e0d153cbab")


def test_deadband_wider_than_the_excursion_leaves_the_governor_at_rest() -> None:
    # a 0.3 Hz excursion inside a 0.5 Hz band: the governor state stays exactly 0 and
    # the frequency is the model without governors, 2H dΔf/dt = ΔP − D·Δf:
    # Δf(t) = ΔP/D·(1 − e^(−D·t/2H)) (the linear model would settle at ΔP·R/(DR + Km))
    params = GridParams(governor_deadband_hz=0.5)
    delta_p = -0.005                                    # ΔP/D = −0.005 p.u. = −0.3 Hz
    model = GridModel(params, 1.0)
    t = params.physics_dt_s * np.arange(1, 21)
    for step in range(60):
        freq = model.advance(delta_p)
        assert model.state[1] == 0.0 and model.state[2] == 0.0
        tk = step + t
        expected = delta_p / params.damping_d_pu * (
            1.0 - np.exp(-params.damping_d_pu * tk / (2.0 * params.inertia_h_s)))
        np.testing.assert_allclose(freq / 60.0 - 1.0, expected, rtol=0, atol=1e-14)
    assert abs(model.delta_f_pu * 60.0) < 0.5           # never reached the band's edge
    assert params.steady_state_deviation_pu(delta_p) == delta_p / params.damping_d_pu


@pytest.mark.parametrize("delta_p", [LOSS_PU, 0.04])
def test_deadband_steady_state_loses_the_band_to_the_response(delta_p: float) -> None:
    # beyond the band, AGC off: 0 = ΔP − D·Δf − (Km/R)·(Δf − s·d), s = sign(Δf), so
    # Δf_ss = (ΔP + s·(Km/R)·d)/(D + Km/R): the loss deepens by (Km/R)·d/(D + Km/R)
    params = GridParams(governor_deadband_hz=DEADBAND_HZ)
    d, k, damping = DEADBAND_HZ / 60.0, params.governor_gain_pu, params.damping_d_pu
    s = math.copysign(1.0, delta_p)
    expected = (delta_p + s * k * d) / (damping + k)
    assert params.steady_state_deviation_pu(delta_p) == pytest.approx(expected, rel=1e-15)
    _, freq = step_response(params, delta_p, 400.0)
    assert freq[-1] / 60.0 - 1.0 == pytest.approx(expected, abs=1e-12)
    linear = GridParams().steady_state_deviation_pu(delta_p)
    assert abs(expected - linear) == pytest.approx(k * d / (damping + k), rel=1e-12)
    assert abs(freq[-1] / 60.0 - 1.0 - linear) > 1e-4


def _exact_deadband_trip(params: GridParams, delta_p: float, horizon_s: float):
    """Δf(t) of the exact piecewise-affine model after a step from rest, by an adaptive
    solve split at the band's edge (one crossing: the loss settles beyond the band)."""
    model = GridModel(dataclasses.replace(params, physics_dt_s=0.05), 0.05)
    d = params.governor_deadband_hz / params.nominal_freq_hz

    def edge(_t, x):
        return abs(x[0]) - d
    edge.terminal = True
    opts = {"method": "DOP853", "rtol": 1e-13, "atol": 1e-16, "dense_output": True}
    inside = solve_ivp(lambda _t, x: model.derivative(x, delta_p), (0.0, horizon_s),
                       np.zeros(3), events=edge, **opts)
    t_cross = float(inside.t_events[0][0])
    x_cross = inside.y[:, -1].copy()
    x_cross[0] = math.copysign(d, delta_p)
    outside = solve_ivp(lambda _t, x: model.derivative(x, delta_p), (t_cross, horizon_s),
                        x_cross, **opts)

    def delta_f(t: np.ndarray) -> np.ndarray:
        return np.where(t <= t_cross, inside.sol(np.minimum(t, t_cross))[0],
                        outside.sol(np.maximum(t, t_cross))[0])
    return delta_f, t_cross


def test_deadband_regime_choice_converges_with_the_substep() -> None:
    # each sub-step is exact in the regime Δf has at its start; the trip crosses the
    # band's edge at 48.1 ms, so a sub-step sees the crossing late by up to its length:
    # 51.9 ms at 100 ms sub-steps, 11.9 ms at 20 ms, 1.9 ms at 50 and 10 ms, 0.86 ms at 1
    # ms. The error against the exact model shrinks with that delay squared.
    params = GridParams(governor_deadband_hz=DEADBAND_HZ)
    delta_f, t_cross = _exact_deadband_trip(params, LOSS_PU, 10.0)
    assert t_cross == pytest.approx(0.0481, abs=1e-4)
    errors, nadirs = {}, {}
    for pdt in (0.1, 0.02, 0.01, 0.001):
        t, freq = step_response(dataclasses.replace(params, physics_dt_s=pdt), LOSS_PU, 10.0)
        errors[pdt] = float(np.abs(freq - 60.0 * (1.0 + delta_f(t))).max())
        nadirs[pdt] = float(freq.min())
    assert 1e-4 < errors[0.1] < 1e-3                    # measured 7.1e-4 Hz
    assert 1e-5 < errors[0.02] < 1e-4                   # 3.7e-5 Hz
    assert errors[0.01] < 2e-6 and errors[0.001] < 5e-7   # 9.1e-7, 1.9e-7 Hz
    assert nadirs[0.01] == pytest.approx(nadirs[0.001], abs=1e-6)
    fine = np.linspace(2.0, 3.0, 100001)
    assert float(60.0 * (1.0 + delta_f(fine)).min()) == pytest.approx(59.31799, abs=1e-5)
    # 32 mHz below the linear model's nadir (59.3501 Hz, test_nadir_calibration)
    assert nadirs[0.001] == pytest.approx(59.31799, abs=1e-5)


def test_deadband_substeps_agree_bit_for_bit_across_paths() -> None:
    # advance, advance_substep and advance_variable(physics_dt_s) run the same sub-step
    params = GridParams(governor_deadband_hz=DEADBAND_HZ, agc_gain_per_s=0.05)
    u = np.random.default_rng(3).normal(0.0, 0.002, size=(6, 20))
    u += 0.01 * np.array([1, 1, -1, -1, 1, 1])[:, None]   # out of the band, both ways
    block, single, variable = (GridModel(params, 1.0) for _ in range(3))
    seen = set()
    for row in u:
        f_block = block.advance(row)
        seen.update(np.sign(np.trunc((f_block - 60.0) / DEADBAND_HZ)).tolist())
        assert np.array_equal(f_block, [single.advance_substep(x) for x in row])
        assert np.array_equal(f_block, [variable.advance_variable(x, params.physics_dt_s)
                                        for x in row])
    assert np.array_equal(block.state, single.state)
    assert np.array_equal(block.state, variable.state)
    assert seen == {-1.0, 0.0, 1.0}   # inside the band, above it and below it


def test_deadband_derivative_is_the_piecewise_model() -> None:
    params = GridParams(governor_deadband_hz=DEADBAND_HZ)
    model, linear = GridModel(params, 1.0), GridModel(GridParams(), 1.0)
    d = DEADBAND_HZ / 60.0
    a0 = np.array([0.5 * d, 0.01, 0.0])                 # inside: no governor term
    rhs = model.derivative(a0, 0.02)
    assert rhs[1] == pytest.approx(-0.01 / params.reheat_time_constant_tr_s, rel=1e-12)
    assert rhs[0] == pytest.approx((0.02 - 0.5 * d + 0.7 * 0.01) / 8.0, rel=1e-12)
    beyond = np.array([-3.0 * d, 0.01, 0.0])           # outside: the governor sees Δf + d
    shifted = beyond + np.array([d, 0.0, 0.0])
    # ... while damping still sees Δf itself
    expected = linear.derivative(shifted, 0.02) + np.array([params.damping_d_pu * d / 8.0,
                                                            0.0, 0.0])
    np.testing.assert_allclose(model.derivative(beyond, 0.02), expected, rtol=1e-12)


@pytest.mark.parametrize("value", [-0.001, float("nan"), float("inf"), 0.51, True, "0.036"])
def test_bad_deadband_refused_with_the_allowed_range(value) -> None:
    with pytest.raises(ValueError, match=r"governor_deadband_hz=.* must be a finite number "
                                         r"in \[0, 0\.5\] Hz") as info:
        GridParams(governor_deadband_hz=value)
    assert repr(value) in str(info.value)
    assert GridParams(governor_deadband_hz=0.5).governor_deadband_pu == pytest.approx(0.5 / 60)


@pytest.mark.parametrize("params", [
    GridParams(), GridParams(governor_deadband_hz=0.036), GridParams(agc_gain_per_s=0.1),
    GridParams(governor_valve_time_constant_tg_s=0.2, turbine_hp_time_constant_tch_s=0.3),
    GridParams(turbine_hp_time_constant_tch_s=0.3, governor_deadband_hz=0.036),
    GridParams(governor_valve_time_constant_tg_s=0.2, agc_gain_per_s=0.1)],
    ids=["linear", "deadband", "agc", "lags", "hp-lag-deadband", "valve-lag-agc"])
@pytest.mark.parametrize("u_pu", [-0.004, -0.0003, 0.0, 0.002])
def test_the_steady_state_of_an_injection_is_an_equilibrium(params: GridParams,
                                                             u_pu: float) -> None:
    # the operating point an episode starts from: every derivative zero, so a model reset
    # there and fed the same injection stays there
    model = GridModel(params, 1.0)
    model.reset_steady(u_pu)
    x0 = model.state.copy()
    np.testing.assert_allclose(model.derivative(x0, u_pu), 0.0, rtol=0, atol=1e-15)
    freq = model.advance(np.full(model.n_substeps, u_pu))
    np.testing.assert_allclose(freq, model.params.nominal_freq_hz * (1 + x0[0]), rtol=0,
                               atol=1e-12)
    np.testing.assert_allclose(model.state, x0, rtol=0, atol=1e-14)
    if params.agc_gain_per_s > 0:   # AGC has restored the frequency
        assert x0[0] == 0.0 and x0[2] == -u_pu
    else:
        assert x0[0] == params.steady_state_deviation_pu(u_pu) and x0[2] == 0.0


def test_a_steady_state_needs_a_finite_injection() -> None:
    # (no floor otherwise: the linear model's equilibrium, as an episode would reach it, so
    # an absurd load noise does not make reset() fail on some seeds only)
    assert GridParams().steady_state(-30.0)[0] == pytest.approx(-1.5)
    with pytest.raises(ValueError, match="u_pu=nan is not allowed: must be a finite number"):
        GridParams().steady_state(math.nan)


# ------------------------------------------------- governor valve and HP-turbine lags
TG_S, TCH_S = 0.2, 0.3   # Kundur (1994) §9.2/§11.1: the typical valve and steam-chest lags


def _lagged(tg: float = TG_S, tch: float = TCH_S, **fields) -> GridParams:
    return GridParams(governor_valve_time_constant_tg_s=tg, turbine_hp_time_constant_tch_s=tch,
                      **fields)


def _lagged_ode(tg: float, tch: float, u, *, agc: float = 0.0):
    """The right-hand side of Anderson & Mirheydar's model with the two lags restored,
    written out as in docs/limitations.md (independent of GridParams' matrices): state
    ``[Δf, v, p_hp, p_reheat, z]``; a lag of 0 passes its input straight through (its
    state is then unused and kept at 0). ``u(t)``: the net injection, p.u."""
    h, d, r, km, fh, tr = 4.0, 1.0, 0.05, 0.95, 0.3, 8.0   # GridParams' defaults

    def rhs(t, x):
        df, v, hp, rh, z = x
        valve = v if tg > 0 else -(km / r) * df
        power = hp if tch > 0 else valve
        return [(fh * power + (1 - fh) * rh + z + u(t) - d * df) / (2 * h),
                (-(km / r) * df - v) / tg if tg > 0 else 0.0,
                (valve - hp) / tch if tch > 0 else 0.0,
                (power - rh) / tr, -agc * df]
    return rhs


def test_zero_lags_are_the_lag_free_model() -> None:
    # 0 = off, the default: the same three states and matrices, so every shipped
    # trajectory is unchanged (test_zero_deadband_is_the_linear_model_bit_for_bit's digest
    # and tests/test_golden.py)
    explicit = _lagged(0.0, 0.0)
    assert explicit == GridParams() and explicit.n_states == 3
    assert explicit.state_names == ("delta_f_pu", "reheat_y_pu", "agc_z_pu")
    assert GridModel(explicit, 1.0).state.shape == (3,)
    assert _lagged().state_names[3:] == ("valve_pu", "hp_power_pu")
    assert _lagged(tch=0.0).n_states == _lagged(tg=0.0).n_states == 4


@pytest.mark.parametrize(("tg", "tch", "nadir_hz"), [(TG_S, TCH_S, 59.21172),
                                                      (TG_S, 0.0, 59.30794),
                                                      (0.0, TCH_S, 59.27962)])
def test_lagged_trip_matches_an_independent_solve_of_the_lagged_ode(tg: float, tch: float,
                                                                    nadir_hz: float) -> None:
    # the unassisted 0.10 p.u. trip: every 50 ms sample is the exact solution (ZOH of a
    # constant input), so it equals a tight adaptive solve of the hand-written ODE; the
    # nadir (1 ms samples) is the ODE's continuous minimum. The valve and steam-chest lags
    # delay the governors' answer: 59.2117 Hz instead of the lag-free 59.3501 Hz, below
    # ERCOT's first shedding stage (59.3 Hz) and earlier (2.01 s instead of 2.37 s)
    sol = solve_ivp(_lagged_ode(tg, tch, lambda _t: LOSS_PU), (0.0, 20.0), np.zeros(5),
                    method="DOP853", rtol=1e-12, atol=1e-15, dense_output=True)
    t, freq = step_response(_lagged(tg, tch), LOSS_PU, 20.0)
    np.testing.assert_allclose(freq, 60.0 * (1.0 + sol.sol(t)[0]), rtol=0, atol=1e-9)
    t_fine, f_fine = step_response(_lagged(tg, tch, physics_dt_s=0.001), LOSS_PU, 5.0)
    dense = np.linspace(1.5, 3.0, 150001)
    reference_hz = float(60.0 * (1.0 + sol.sol(dense)[0].min()))
    assert f_fine.min() == pytest.approx(reference_hz, abs=1e-6)
    assert reference_hz == pytest.approx(nadir_hz, abs=1e-5)
    _, linear = step_response(GridParams(physics_dt_s=0.001), LOSS_PU, 5.0)
    assert f_fine.min() < linear.min() - 0.04
    if (tg, tch) == (TG_S, TCH_S):
        assert f_fine.min() < 59.3 and t_fine[np.argmin(f_fine)] == pytest.approx(2.007)


def test_lagged_zoh_is_exact_against_the_ode_under_a_varying_input_with_agc() -> None:
    params = _lagged(agc_gain_per_s=0.05)
    model = GridModel(params, 1.0)
    u = np.random.default_rng(11).normal(0.0, 0.05, size=40)
    freq = np.concatenate([model.advance(u[:20]), model.advance(u[20:])])
    pdt = params.physics_dt_s
    ode = _lagged_ode(TG_S, TCH_S, lambda t: u[min(int(t / pdt), 39)], agc=0.05)
    x, ref = np.zeros(5), []
    for k in range(40):   # piece by piece: the input jumps at each sub-step's end
        x = solve_ivp(ode, (k * pdt, (k + 1) * pdt), x, method="DOP853", rtol=1e-12,
                      atol=1e-15).y[:, -1]
        ref.append(x[0])
    np.testing.assert_allclose(freq, 60.0 * (1.0 + np.array(ref)), rtol=0, atol=1e-9)
    # the state's order: Δf, reheat y, AGC z, valve, HP power
    np.testing.assert_allclose(model.state, x[[0, 3, 4, 1, 2]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("params", [_lagged(), _lagged(tch=0.0),
                                    _lagged(governor_deadband_hz=DEADBAND_HZ)],
                         ids=["both", "valve", "deadband"])
def test_lags_keep_the_initial_rocof(params: GridParams) -> None:
    # df/dt(0+) = ΔP·f0/(2H): nothing but the inertia answers at t = 0+, lags or not
    model = GridModel(params, 1.0)
    rhs = model.derivative(np.zeros(params.n_states), LOSS_PU)
    assert rhs[0] * 60.0 == pytest.approx(params.initial_rocof_hz_per_s(LOSS_PU), rel=1e-12)
    assert rhs[0] * 60.0 == pytest.approx(-0.75, rel=1e-12)
    assert np.all(rhs[1:] == 0.0)
    trace = np.concatenate(([model.freq_hz], model.advance(LOSS_PU)))
    r = rocof_hz_per_s(trace, params.physics_dt_s)
    assert 1.5 * r[0] - 0.5 * r[1] == pytest.approx(-0.75, rel=0.005)
    # the slower governors ease the first 50 ms slope less than the lag-free ones do
    lag_free = np.diff(step_response(GridParams(), LOSS_PU, 0.05)[1])[0]
    assert r[0] * params.physics_dt_s < lag_free


@pytest.mark.parametrize("deadband_hz", [0.0, DEADBAND_HZ])
@pytest.mark.parametrize("delta_p", [LOSS_PU, 0.04])
def test_lags_keep_the_primary_steady_state(deadband_hz: float, delta_p: float) -> None:
    # the lags pass their input on unchanged once settled: Δf_ss = ΔP·R/(D·R + Km), and
    # with a deadband (ΔP + s·(Km/R)·d)/(D + Km/R), as without lags
    params = _lagged(governor_deadband_hz=deadband_hz)
    expected = params.steady_state_deviation_pu(delta_p)
    assert expected == GridParams(governor_deadband_hz=deadband_hz).steady_state_deviation_pu(
        delta_p)
    if deadband_hz == 0.0:
        assert expected == pytest.approx(delta_p * 0.05 / (1.0 * 0.05 + 0.95), rel=1e-15)
    else:
        k = params.governor_gain_pu
        d = deadband_hz / 60.0
        assert expected == pytest.approx((delta_p + math.copysign(k * d, delta_p)) / (1.0 + k),
                                         rel=1e-15)
    _, freq = step_response(params, delta_p, 400.0)
    assert freq[-1] / 60.0 - 1.0 == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("deadband_hz", [0.0, DEADBAND_HZ])
def test_lags_toward_zero_converge_to_the_lag_free_model(deadband_hz: float) -> None:
    # the error shrinks in proportion to the lags (~0.52 Hz per second of lag over the
    # trip's 20 s, both lags equal), down to 5e-7 Hz at 1 µs
    _, lag_free = step_response(GridParams(governor_deadband_hz=deadband_hz), LOSS_PU, 20.0)
    errors = {}
    for lag in (1e-3, 1e-4, 1e-6):
        _, freq = step_response(_lagged(lag, lag, governor_deadband_hz=deadband_hz),
                                LOSS_PU, 20.0)
        errors[lag] = float(np.abs(freq - lag_free).max())
        assert 0.4 * lag < errors[lag] < 0.6 * lag
    assert errors[1e-6] < 1e-6


@pytest.mark.parametrize("params", [_lagged(agc_gain_per_s=0.05),
                                    _lagged(tg=0.0, agc_gain_per_s=0.05),
                                    _lagged(governor_deadband_hz=DEADBAND_HZ,
                                            agc_gain_per_s=0.05)],
                         ids=["both", "hp-only", "deadband"])
def test_lagged_paths_agree(params: GridParams) -> None:
    # advance (stacked tables, or the deadband's sub-step loop), advance_substep and
    # advance_variable(physics_dt_s) run the same sub-step; a split sub-step is exact
    u = np.random.default_rng(3).normal(0.0, 0.002, size=(6, 20))
    u += 0.01 * np.array([1, 1, -1, -1, 1, 1])[:, None]   # beyond a band, both ways
    block, single, variable = (GridModel(params, 1.0) for _ in range(3))
    exact = params.governor_deadband_hz > 0.0   # plain floats: the same bits
    for row in u:
        f_block = block.advance(row)
        f_single = np.array([single.advance_substep(x) for x in row])
        f_var = np.array([variable.advance_variable(x, params.physics_dt_s) for x in row])
        np.testing.assert_allclose(f_block, f_single, rtol=0, atol=0.0 if exact else 1e-12)
        np.testing.assert_allclose(f_block, f_var, rtol=0, atol=0.0 if exact else 1e-12)
    assert block.state.shape == (params.n_states,)
    np.testing.assert_allclose(block.state, single.state, rtol=0, atol=0.0 if exact else 1e-14)
    whole, split = GridModel(params, 1.0), GridModel(params, 1.0)
    whole.advance_substep(-0.03)
    split.advance_variable(-0.03, 0.013)
    split.advance_variable(-0.03, params.physics_dt_s - 0.013)
    if not exact:   # (a band's regime is chosen per piece: not exact across its edge)
        np.testing.assert_allclose(split.state, whole.state, rtol=0, atol=1e-14)
    # and the model stays linear (no band) and at rest without an input
    rest = GridModel(params, 1.0)
    assert np.all(rest.advance(0.0) == 60.0) and np.all(rest.state == 0.0)


def test_lagged_long_step_is_the_blocked_product() -> None:
    params = _lagged()
    model = GridModel(params, 15.0)   # 300 sub-steps: the blocked product
    assert model._forced_blocks is not None and model._free.shape == (305, 5)
    u = np.random.default_rng(1).normal(0.0, 0.01, model.n_substeps)
    # one (305, 300) product: ~92 000 elements, never split over threads
    expected = model._free.dot(model.state) + model._forced.dot(u)
    f = model.advance(u)
    assert np.array_equal(model.state, expected[300:])
    assert np.array_equal(f, (expected[:300] + 1.0) * 60.0)
    short = GridModel(params, 1.0)
    for k in range(15):
        np.testing.assert_allclose(short.advance(u[20 * k:20 * (k + 1)]), f[20 * k:20 * (k + 1)],
                                   rtol=0, atol=1e-12)


def test_lagged_deadband_derivative_is_the_piecewise_model() -> None:
    # the governor's input reaches the valve alone: inside the band the valve relaxes
    # to 0, beyond it it chases −(Km/R)·(Δf − s·d)
    params = _lagged(governor_deadband_hz=DEADBAND_HZ)
    model = GridModel(params, 1.0)
    d, k = DEADBAND_HZ / 60.0, params.governor_gain_pu
    x = np.array([0.5 * d, 0.01, 0.002, 0.03, 0.02])
    rhs = model.derivative(x, 0.0)
    assert rhs[3] == pytest.approx(-0.03 / TG_S, rel=1e-12)
    assert rhs[4] == pytest.approx((0.03 - 0.02) / TCH_S, rel=1e-12)
    assert rhs[1] == pytest.approx((0.02 - 0.01) / 8.0, rel=1e-12)
    assert rhs[0] == pytest.approx((0.3 * 0.02 + 0.7 * 0.01 + 0.002 - 0.5 * d) / 8.0,
                                   rel=1e-12)
    x[0] = -3.0 * d
    assert model.derivative(x, 0.0)[3] == pytest.approx((-k * (-2.0 * d) - 0.03) / TG_S,
                                                        rel=1e-12)


@pytest.mark.parametrize("field", ["governor_valve_time_constant_tg_s",
                                   "turbine_hp_time_constant_tch_s"])
@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), True, "0.2", None])
def test_bad_lags_refused_with_the_allowed_range(field: str, value) -> None:
    with pytest.raises(ValueError, match=rf"^{field}=.* is not allowed: must be a finite "
                                         r"number >= 0 s \(0 = no lag, the default; typical "
                                         r"0\.[23] s, Kundur 1994\)") as info:
        GridParams(**{field: value})
    assert repr(value) in str(info.value)


def test_a_lag_too_short_for_the_float_range_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"^GridParams\.governor_valve_time_constant_tg_s="
                                         r"1e-300 is not allowed: it makes the frequency "
                                         r"model non-finite .*allowed \(the other fields as "
                                         r"given\): governor_valve_time_constant_tg_s >= "
                                         r"1e-\d+ or 0 \(no lag\)$"):
        GridParams(governor_valve_time_constant_tg_s=1e-300)
    assert _lagged(1e-9, 1e-9).n_states == 5   # fast, but finite


# --------------------------------------- the tripped unit's inertia and governor leave
UNIT_SHARE = 0.1   # emergency's 100 MW unit on the 1000 MW base: H 4 -> 3.6 s, Km 0.95 -> 0.855


def _switched_ode(t_trip: float, share: float, *, tg: float = 0.0, tch: float = 0.0,
                  deadband_pu: float = 0.0, loss: float = LOSS_PU):
    """The right-hand side of the switched system, written out from the equations
    (independent of GridParams' matrices): the defaults until ``t_trip``, then a loss of
    ``loss`` p.u. and ``H``, ``Km`` scaled by ``1 − share``; state ``[Δf, v, p_hp, p_reheat]``
    (a lag of 0 passes its input through, its state unused), governor input ``db(Δf)``."""
    h0, d, r, km0, fh, tr = 4.0, 1.0, 0.05, 0.95, 0.3, 8.0

    def rhs(t, x):
        after = t >= t_trip
        h, km = (h0 * (1 - share), km0 * (1 - share)) if after else (h0, km0)
        df, v, hp, rh = x
        g = math.copysign(max(abs(df) - deadband_pu, 0.0), df)
        valve = v if tg > 0 else -(km / r) * g
        power = hp if tch > 0 else valve
        return [(fh * power + (1 - fh) * rh + (loss if after else 0.0) - d * df) / (2 * h),
                (-(km / r) * g - v) / tg if tg > 0 else 0.0,
                (valve - hp) / tch if tch > 0 else 0.0,
                (power - rh) / tr]
    return rhs


def _run_switched(params: GridParams, t_trip: float, share: float, horizon_s: float,
                  dt_s: float = 1.0, loss: float = LOSS_PU, pre: float = 0.0) -> np.ndarray:
    """Frequency (Hz) at each sub-step's end over ``horizon_s`` from rest (or from the
    steady state of an injection ``pre`` p.u. held throughout): the trip of ``loss`` p.u.
    at ``t_trip`` as the environment feeds it (its mean over each sub-step) and the
    switch to :meth:`GridParams.after_unit_trip` there, as the environment does."""
    pdt = params.physics_dt_s
    before = GridModel(params, dt_s)
    after = GridModel(params.after_unit_trip(share), dt_s)
    n = before.n_substeps
    total = int(round(horizon_s / dt_s)) * n
    t0, t1 = np.arange(total) * pdt, np.arange(1, total + 1) * pdt
    u = pre + loss * np.where(t0 >= t_trip, 1.0, np.clip((t1 - t_trip) / (t1 - t0), 0.0, 1.0))
    j = int(np.flatnonzero(u != pre)[0])
    if pre == 0.0:
        before.reset()
    else:
        before.reset_steady(pre)
    model, out = before, []
    for k in range(total // n):
        if k == j // n:
            out.append(model.advance_switching(after, u[k * n:(k + 1) * n], j % n,
                                               max(t_trip - j * pdt, 0.0), loss))
            model = after
        else:
            out.append(model.advance_unchecked(u[k * n:(k + 1) * n]))
    return np.concatenate(out)


def test_after_unit_trip_scales_inertia_and_governor_gain_alone() -> None:
    after = GridParams(governor_deadband_hz=0.036).after_unit_trip(UNIT_SHARE)
    assert after.inertia_h_s == pytest.approx(3.6, rel=1e-15)
    assert after.mech_gain_km == pytest.approx(0.855, rel=1e-15)
    assert dataclasses.replace(after, inertia_h_s=4.0, mech_gain_km=0.95) == GridParams(
        governor_deadband_hz=0.036)
    assert GridParams().after_unit_trip(0.0) == GridParams()


def test_initial_rocof_after_the_trip_is_the_remaining_inertias() -> None:
    # df/dt(0+) = ΔP·f0/(2·H_post): the tripped unit's rotor no longer slows the fall;
    # on 1 ms sub-steps the governor's first millisecond moves it by ~4e-4 relative
    params = GridParams(physics_dt_s=0.001)
    freq = _run_switched(params, 0.5, UNIT_SHARE, 1.0, dt_s=0.1)
    first = (freq[500] - freq[499]) / 0.001   # the sub-step from the trip at 0.5 s
    post = params.after_unit_trip(UNIT_SHARE).initial_rocof_hz_per_s(LOSS_PU)
    assert post == pytest.approx(-0.1 * 60.0 / (2.0 * 3.6), rel=1e-15)   # -0.8333 Hz/s
    assert first == pytest.approx(post, rel=1e-3)
    assert abs(first - params.initial_rocof_hz_per_s(LOSS_PU)) > 0.08   # not H = 4 s's -0.75
    assert freq[499] == 60.0   # nothing moves before the trip


@pytest.mark.parametrize("deadband_hz", [0.0, 0.036])
def test_steady_state_after_the_trip_is_the_remaining_governors(deadband_hz: float) -> None:
    # Δf_ss = ΔP·R/(D·R + Km_post) (with a band, the band's width lost to the response)
    params = GridParams(governor_deadband_hz=deadband_hz)
    after = params.after_unit_trip(UNIT_SHARE)
    expected = LOSS_PU * 0.05 / (1.0 * 0.05 + 0.855) if deadband_hz == 0.0 else (
        (LOSS_PU - (0.855 / 0.05) * 0.036 / 60.0) / (1.0 + 0.855 / 0.05))
    assert after.steady_state_deviation_pu(LOSS_PU) == pytest.approx(expected, rel=1e-14)
    freq = _run_switched(params, 3.0, UNIT_SHARE, 300.0)
    assert freq[-1] == pytest.approx(60.0 * (1.0 + expected), abs=1e-9)   # 59.668 Hz
    assert abs(freq[-1] - 60.0 * (1.0 + params.steady_state_deviation_pu(LOSS_PU))) > 0.03


@pytest.mark.parametrize("t_trip", [1.0, 1.013, 1.049])   # on a sub-step's start, inside it
@pytest.mark.parametrize("tg, tch", [(0.0, 0.0), (TG_S, TCH_S)])
@pytest.mark.parametrize("deadband_hz", [0.0, 0.036])
def test_switched_trip_matches_an_independent_solve_of_the_switched_ode(
        t_trip: float, tg: float, tch: float, deadband_hz: float) -> None:
    # the 0.10 p.u. trip that takes 10 % of H and Km: nadir 59.2857 Hz 2.36 s after it
    # lag-free, 59.1350 Hz with both lags (59.2540 / 59.1042 Hz with a 36 mHz band)
    params = _lagged(tg, tch, governor_deadband_hz=deadband_hz)
    freq = _run_switched(params, t_trip, UNIT_SHARE, 12.0)
    rhs = _switched_ode(t_trip, UNIT_SHARE, tg=tg, tch=tch, deadband_pu=deadband_hz / 60.0)
    early = solve_ivp(rhs, (0.0, t_trip), np.zeros(4), method="DOP853", rtol=1e-12, atol=1e-14)
    late = solve_ivp(rhs, (t_trip, 12.0), early.y[:, -1], method="DOP853", rtol=1e-12,
                     atol=1e-14, dense_output=True, max_step=0.01)
    t = np.arange(1, freq.size + 1) * params.physics_dt_s
    after = t >= t_trip
    reference = 60.0 * (1.0 + late.sol(t[after])[0])
    # exact (ZOH on each side of the switch, the input split at it) without a band; with
    # one, the documented regime choice at the sub-step after a band crossing
    tol = 1e-10 if deadband_hz == 0.0 else 1e-3
    np.testing.assert_allclose(freq[after], reference, rtol=0.0, atol=tol)
    assert freq[after].min() == pytest.approx(reference.min(), abs=tol / 2)
    assert np.all(freq[~after] == 60.0)
    # taking the unit's share deepens the nadir (59.35 -> 59.29 Hz lag-free)
    kept = step_response(params, LOSS_PU, 12.0)[1].min()
    assert reference.min() < kept - 0.04


PRE_TRIP_HZ = -0.030   # a steady pre-trip deviation: the governors hold 9.5 MW, 0.95 MW of it the unit's


@pytest.mark.parametrize("tg, tch", [(0.0, 0.0), (TG_S, TCH_S)])
def test_the_tripped_units_governor_output_leaves_with_it(tg: float, tch: float) -> None:
    # at the switch the governor and turbine states (reheat y, valve v, HP p_hp) are
    # (1 − s) of what they were: the tripped unit's share of the governors' held answer
    # leaves with it; Δf and the AGC's system-level z stay
    params = _lagged(tg, tch, agc_gain_per_s=0.02)
    u_pre = (PRE_TRIP_HZ / 60.0) * (1.0 + params.governor_gain_pu)
    before, after = GridModel(params, 1.0), GridModel(params.after_unit_trip(UNIT_SHARE), 1.0)
    x0 = np.array([PRE_TRIP_HZ / 60.0, 0.004, -0.003] + [0.006, 0.005][:params.n_states - 3])
    before.state = x0.copy()
    reference = GridModel(params.after_unit_trip(UNIT_SHARE), 1.0)
    reference.state = x0 * np.array([1.0, 1.0 - UNIT_SHARE, 1.0]
                                    + [1.0 - UNIT_SHARE] * (params.n_states - 3))
    u = np.full(20, u_pre + LOSS_PU)
    freq = before.advance_switching(after, u, 0, 0.0, LOSS_PU)   # the whole step after it
    np.testing.assert_allclose(freq, reference.advance(u), rtol=0.0, atol=1e-12)
    np.testing.assert_allclose(after.state, reference.state, rtol=0.0, atol=1e-15)


@pytest.mark.parametrize("t_trip", [1.0, 1.013])
@pytest.mark.parametrize("tg, tch", [(0.0, 0.0), (TG_S, TCH_S)])
def test_switched_trip_from_a_steady_deviation_matches_an_independent_solve(
        t_trip: float, tg: float, tch: float) -> None:
    # from the steady state of a −30 mHz deviation (the governors at 9.5 MW above
    # schedule), a 0.10 p.u. trip of a 0.1 share: the solve scales the governor states by
    # 1 − s at the trip; keeping them (the remaining units taking on the tripped unit's
    # 0.95 MW) raises the nadir by ~4 mHz: 59.2489 against 59.2528 Hz lag-free, 59.0968
    # against 59.1022 Hz with both lags
    params = _lagged(tg, tch)
    pre = (PRE_TRIP_HZ / 60.0) * (1.0 + params.governor_gain_pu)   # −0.01 p.u.
    freq = _run_switched(params, t_trip, UNIT_SHARE, 12.0, pre=pre)
    pdt = params.physics_dt_s
    rhs = _switched_ode(t_trip, UNIT_SHARE, tg=tg, tch=tch, loss=LOSS_PU)
    steady = PRE_TRIP_HZ / 60.0
    gov = 0.95 / 0.05 * -steady
    x_trip = np.array([steady, gov if tg > 0 else 0.0, gov if tch > 0 else 0.0, gov])
    scaled = x_trip * np.array([1.0] + [1.0 - UNIT_SHARE] * 3)

    def shifted(t, x):   # the pre-trip imbalance held throughout
        dx = rhs(t, x)
        dx[0] += pre / (2.0 * 4.0 * (1.0 - UNIT_SHARE))
        return dx
    late = solve_ivp(shifted, (t_trip, 12.0), scaled, method="DOP853", rtol=1e-12,
                     atol=1e-14, dense_output=True, max_step=0.01)
    t = np.arange(1, freq.size + 1) * pdt
    after_trip = t >= t_trip
    reference = 60.0 * (1.0 + late.sol(t[after_trip])[0])
    np.testing.assert_allclose(freq[after_trip], reference, rtol=0.0, atol=1e-10)
    np.testing.assert_allclose(freq[~after_trip], 60.0 + PRE_TRIP_HZ, rtol=0.0, atol=1e-10)
    kept = solve_ivp(shifted, (t_trip, 12.0), x_trip, method="DOP853", rtol=1e-12,
                     atol=1e-14, dense_output=True, max_step=0.01)
    assert 60.0 * (1.0 + kept.sol(t[after_trip])[0].min()) > reference.min() + 0.003


def test_advance_switching_with_no_share_and_no_jump_is_the_unswitched_step(
        params: GridParams) -> None:
    # a switch to the same system at a sub-step's start changes nothing but the rounding
    model, same = GridModel(params, 1.0), GridModel(params, 1.0)
    reference = GridModel(params, 1.0)
    u = np.linspace(-0.1, 0.05, model.n_substeps)
    np.testing.assert_allclose(model.advance_switching(same, u, 7, 0.0),
                               reference.advance(u), rtol=0.0, atol=1e-12)
    np.testing.assert_allclose(same.state, reference.state, rtol=0.0, atol=1e-14)


@pytest.mark.parametrize("share, match", [
    (-0.1, r"^contingency_unit_share=-0\.1 is not allowed: must be a finite number in "
           r"\[0, 1\)"),
    (1.0, r"^contingency_unit_share=1\.0 is not allowed: must be in \[0, 1\)"),
    (float("nan"), r"^contingency_unit_share=nan is not allowed"),
    ("0.1", r"^contingency_unit_share='0\.1' is not allowed"),
])
def test_bad_unit_share_refused_with_the_allowed_range(share, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GridParams().after_unit_trip(share)


def test_a_remaining_system_too_fast_for_the_float_range_is_refused_naming_the_share() -> None:
    with pytest.raises(ValueError, match=r"^contingency_unit_share=0\.99 is not allowed with "
                                         r"these grid parameters: the system left after the "
                                         r"trip \(inertia_h_s=1\.0.*e-41, mech_gain_km=0\.0095"
                                         r".*\) is refused: .*; use a smaller share$"):
        GridParams(inertia_h_s=1e-39).after_unit_trip(0.99)


@pytest.mark.parametrize("kwargs, match", [
    ({"substep": 20}, r"^substep=20 is not allowed: must be in \[0, 20\)"),
    ({"offset_s": 0.05}, r"^offset_s=0\.05 is not allowed: must be below physics_dt_s"),
    ({"offset_s": -0.01}, r"^offset_s=-0\.01 is not allowed"),
    ({"jump_pu": math.inf}, r"^jump_pu=inf is not allowed"),
])
def test_bad_switch_refused(params: GridParams, kwargs: dict, match: str) -> None:
    model = GridModel(params, 1.0)
    args = {"after": GridModel(params.after_unit_trip(0.1), 1.0), "u_pu": np.zeros(20),
            "substep": 0, "offset_s": 0.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        model.advance_switching(**args)
    with pytest.raises(ValueError, match=r"must be a GridModel with the same agent step"):
        model.advance_switching(GridModel(_lagged(), 1.0), np.zeros(20), 0, 0.0)
