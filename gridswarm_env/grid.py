"""Grid frequency dynamics: aggregated swing equation with a governor/reheat turbine.

Description
-----------
The interconnection is one aggregated machine (a low-order *system frequency
response* model; P. M. Anderson and M. Mirheydar, "A low-order system frequency
response model", IEEE Trans. Power Syst. 5(3):720-729, 1990). Everything is in per
unit of ``GridParams.system_base_mw`` (powers) and of ``nominal_freq_hz`` (frequency)::

    2H · dΔf/dt = ΔP_mech + ΔP_agc + u − D·Δf
    ΔP_mech     = −(Km/R) · (1 + FH·TR·s) / (1 + TR·s) · Δf
    ΔP_agc      = z,            dz/dt = −K_agc · Δf          (optional; K_agc = 0 = off)
    f           = f0 · (1 + Δf)

``u`` is the net external injection in p.u.: DER balancing injection + scheduled
generation change − load change − lost generation (sign convention of the whole
project: **positive = injection into the grid**). The reheat-turbine transfer
function is realised with one state ``y`` (the non-reheat, lagging part)::

    TR · dy/dt = −(Km/R)·Δf − y
    ΔP_mech    = FH · (−(Km/R)·Δf) + (1 − FH) · y

so the model is linear time-invariant, ``dx/dt = A x + B u`` with
``x = [Δf_pu, y_reheat_pu, z_agc_pu]``. ``GridModel`` integrates it *exactly* for an
input held constant over each physics sub-step (zero-order hold, matrix exponential),
so the result does not depend on an integration tolerance.

Optional governor and turbine lags (``GridParams.governor_valve_time_constant_tg_s``
``T_G`` and ``turbine_hp_time_constant_tch_s`` ``T_CH``; 0 = off, the default, which
runs the three-state model above with the same matrices, bit for bit). Anderson &
Mirheydar drop both fast lags of the speed-governing system and steam turbine, keeping
the reheat lag ``TR`` alone; these restore them, the governor's valve (servo) lag and the
HP turbine's steam-chest (inlet) lag, with the typical ``T_G`` ≈ 0.2 s and ``T_CH`` ≈
0.3 s of P. Kundur, *Power System Stability and Control* (McGraw-Hill, 1994), §9.2
(steam turbines and their governing systems) and §11.1 (speed governing): the valve
lag is ``T1`` of IEEE's ``TGOV1`` and ``T3`` of ``IEEEG1``, the steam chest ``T4`` of
``IEEEG1``::

    T_G  · dv/dt    = −(Km/R)·Δf − v          (valve position; T_G = 0: v = −(Km/R)·Δf)
    T_CH · dp_hp/dt = v − p_hp                (HP turbine power; T_CH = 0: p_hp = v)
    TR   · dy/dt    = p_hp − y                (reheat/IP-LP stage)
    ΔP_mech         = FH · p_hp + (1 − FH) · y

Each lag that is on appends a state, ``x = [Δf, y, z, v, p_hp]`` with both (so ``x[1]``
and ``x[2]`` keep their meaning); the integration stays exact. With a deadband the
governor's input ``db(Δf)`` drives the first lag alone, so ``b_g`` below becomes
``(Km/R)/T_G`` on ``v`` (``(Km/R)/T_CH`` on ``p_hp`` with ``T_G`` = 0). The lags change
neither closed form below (the initial RoCoF is the inertia's, the steady state passes
through settled lags); they delay the governors' answer, so the nadir falls: the 0.10
p.u. trip from rest reaches 59.2117 Hz at 2.01 s with ``T_G`` = 0.2 s and ``T_CH`` =
0.3 s, instead of 59.3501 Hz at 2.37 s (59.3079 / 59.2796 Hz with ``T_G`` or ``T_CH``
alone; tests ``test_lagged_trip_matches_an_independent_solve_of_the_lagged_ode``).
The scenarios are calibrated on the lag-free model, hence the defaults.

Optional loss of the tripped unit's inertia and governor (the scenario's
``contingency_unit_share`` ``s``; 0 = off, the default). The aggregated machine keeps
its ``H`` and ``Km`` through a trip unless told otherwise, as if the tripped unit's rotor
and governor stayed on line. With ``s > 0`` the system from the trip instant on is
:meth:`GridParams.after_unit_trip`: ``H·(1 − s)`` and ``Km·(1 − s)`` (per unit on the same
base, ``H_sys = Σ H_i·S_i / S_base``: ``s`` = the unit's rating / ``system_base_mw`` for a
unit like the system's average), every other field, the lags and the deadband as before.
The governor and turbine states (``y``, ``v``, ``p_hp``: each unit's answer is its share of
``Km`` times the same response to ``Δf``) are scaled by ``1 − s`` at the trip instant: the
tripped unit's share of the governors' answer held before the trip leaves with it, as its
scheduled output leaves through ``u`` (``contingency_mw`` is lost from the schedule: the
governors' deviation from it is in the states, not in ``u``); ``Δf`` and the AGC's ``z``
(the system's secondary-control command, which the remaining units deliver) carry over.
The model is LTI (piecewise affine with a band) on each side of the trip, so
:meth:`GridModel.advance_switching` integrates the trip's agent step exactly: the
pre-trip model up to the trip, the post-trip one after, the trip's sub-step split at the
instant (its held mean input split into the step it is). The closed forms below hold
with the remaining ``H`` and ``Km``: ``df/dt(0+) = ΔP·f0 / (2H·(1 − s))``, ``Δf_ss = ΔP·R /
(D·R + Km·(1 − s))``. The 0.10 p.u. trip with ``s`` = 0.1 (``emergency``'s 100 MW unit):
initial RoCoF −0.833 Hz/s, nadir 59.2857 Hz 2.36 s after it, steady state 59.6685 Hz
(59.1350 Hz with both lags, 59.2540 Hz with a 36 mHz band; test
``test_switched_trip_matches_an_independent_solve_of_the_switched_ode``). From a steady
pre-trip deviation of −30 mHz the governors hold 9.5 MW above schedule, 0.95 MW of it the
tripped unit's: the nadir is 59.2489 Hz (59.0968 Hz with both lags), 3.9 mHz (5.4 mHz)
below the 59.2528 Hz (59.1022 Hz) of carrying those states over unscaled (test
``test_switched_trip_from_a_steady_deviation_matches_an_independent_solve``).

Optional governor deadband (``GridParams.governor_deadband_hz``, ``d`` in p.u. of
``f0``; 0 = off, the default, which runs the linear model above unchanged): the
governor answers ``db(Δf) = sign(Δf)·max(|Δf| − d, 0)`` instead of ``Δf`` (a no-step
deadband: its output is continuous at the band's edge) in both turbine terms above;
load damping and AGC still see ``Δf``. The model is then piecewise affine: inside the
band the governor's input is 0 (the open-loop matrices ``A₀``), outside it is
``Δf − s·d`` with ``s = sign(Δf)``, i.e. ``A x + B u + s·d·b_g`` with the governor's
input vector ``b_g = (Km/R)·[FH/(2H), 1/TR, 0]``. Each physics sub-step takes its regime
from ``Δf`` at its start and integrates that affine system exactly (zero-order hold of
the input ``[u, s·d]``); the only approximation is the regime of a sub-step in which
``Δf`` crosses the band's edge: the next sub-step takes the new one, so the error grows
with the square of the delay (the 0.10 p.u. trip from rest against an exact solution
split at the crossing, ``d`` = 0.036 Hz: at most 7.1e-4 Hz at 100 ms sub-steps, 3.7e-5
Hz at 20 ms, 9.1e-7 Hz at 50 and 10 ms (both see the crossing at 48 ms 2 ms late),
1.9e-7 Hz at 1 ms, a lucky alignment at 50 ms: ERCOT's ``d`` = 0.017 Hz, crossed at
23 ms, mid-sub-step, gives 1.6e-3 / 2.0e-4 / 7.9e-5 / 1.4e-5 Hz at 100 / 50 / 20 / 10 ms;
the nadir 59.3180 Hz, 32 mHz below the linear model's; test
``test_deadband_regime_choice_converges_with_the_substep``). The sub-steps then run one
after another (the regime depends on the state), in plain float arithmetic.

Closed forms (used as checks in the tests), for a step ``ΔP`` of net injection from
rest (a generator loss is ``ΔP < 0``):

* initial RoCoF: ``df/dt(0+) = ΔP · f0 / (2H)`` Hz/s (the governor has not moved yet);
* primary-response steady state (AGC off): ``Δf_ss = ΔP · R / (D·R + Km)`` p.u.; with
  a deadband ``d``, ``Δf_ss = ΔP/D`` while ``|ΔP| <= D·d`` (the governors never move),
  else ``(ΔP + s·(Km/R)·d) / (D + Km/R)`` with ``s = sign(ΔP)`` (the band's width is
  lost to the response).

With the defaults (H = 4 s, D = 1, R = 0.05, Km = 0.95, FH = 0.3, TR = 8 s, the
typical reheat-steam parameter set used by Anderson & Mirheydar, 1990) a 0.10 p.u. loss gives
an initial RoCoF of −0.75 Hz/s, a nadir of 59.35 Hz about 2.37 s after the event and a
steady state of 59.70 Hz (Δf_ss = −0.005 p.u.) — the ``emergency`` scenario's
calibration. Thresholds to report against: NERC 59.95/60.05 Hz band, ERCOT UFLS first
stage 59.3 Hz.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import operator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy.linalg import expm

from gridswarm_env.config import (
    REAL_TYPES_TEXT,
    check_substeps,
    check_whole_multiple,
    is_real,
    wrong_type_text,
)
from gridswarm_env.fleet import ONE

__all__ = [
    "GridModel",
    "GridParams",
    "rocof_hz_per_s",
    "step_response",
]

#: the smallest ``GridParams.system_base_mw``: 1 kW (MW of injection are divided by it)
MIN_SYSTEM_BASE_MW = 1e-3
#: the widest ``GridParams.governor_deadband_hz``: 0.5 Hz, the top of the range the EU
#: network code RfG (Regulation 2016/631, Art. 15(2)(d), Table 4) allows for a
#: frequency-sensitive-mode deadband (0–500 mHz); far wider than any unit's setting
MAX_GOVERNOR_DEADBAND_HZ = 0.5
#: Most durations ``GridModel.advance_variable`` keeps discretised matrices for.
_VARIABLE_CACHE_SIZE = 256
#: From this many sub-steps per agent step on, ``GridModel.advance`` multiplies its
#: response matrix in blocks of :data:`_BLOCK_ROWS` rows. OpenBLAS runs a matrix-vector
#: product of ~460 000 elements or more on several threads, splitting its rows among
#: them, and a split off a multiple of 4 rows sums some rows another way, so one product
#: would give other bits for another thread count (the machine's cores,
#: ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``). A block of 32 rows (at most ~77 000
#: elements) runs on one thread and sums every row as the single-threaded product does;
#: below this many sub-steps (~66 000 elements) one product is never split.
_BLOCK_FROM_SUBSTEPS = 256
_BLOCK_ROWS = 32


def _check_real(name: str, value: float, *, low: float = -math.inf, low_inclusive: bool = True,
                high: float = math.inf, allowed: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number within ``[low, high]``.

    :param name: field name, quoted in the error.
    :param value: value to check.
    :param low: lower bound.
    :param low_inclusive: whether ``low`` itself is allowed.
    :param high: upper bound (inclusive).
    :param allowed: human-readable description of the allowed range, quoted in the error.
    """
    if not is_real(value):
        raise ValueError(f"{name}={value!r} is not allowed: must be {allowed} "
                         f"({REAL_TYPES_TEXT}), {wrong_type_text(value)}")
    v = float(value)
    if not (math.isfinite(v) and (v > low or (low_inclusive and v == low)) and v <= high):
        raise ValueError(f"{name}={value!r} is not allowed: must be {allowed}")


@dataclass(frozen=True)
class GridParams:
    """Parameters of the aggregated system frequency response model.

    The dynamic defaults (H, D, R, Km, FH, TR) are the typical reheat-steam parameter
    set used by Anderson & Mirheydar (1990) for their example system (per unit, so
    base-free); the 1000 MW base at 60 Hz is this project's choice, so that the
    emergency scenario's 100 MW trip is a 0.10 p.u. disturbance.

    :param system_base_mw: system base power, MW (p.u. powers are relative to it; at least
        :data:`MIN_SYSTEM_BASE_MW`, 1 kW).
    :param nominal_freq_hz: nominal frequency ``f0``, Hz.
    :param inertia_h_s: aggregated inertia constant ``H``, s (on the system base).
    :param damping_d_pu: load damping ``D``, p.u. power per p.u. frequency.
    :param droop_r_pu: governor droop ``R``, p.u. frequency per p.u. power.
    :param mech_gain_km: mechanical power gain factor ``Km`` (share of the base
        under governor control, net of spinning-reserve limits).
    :param reheat_fraction_fh: high-pressure turbine fraction ``FH`` in [0, 1].
    :param reheat_time_constant_tr_s: reheat time constant ``TR``, s.
    :param agc_gain_per_s: integral AGC gain ``K_agc``, 1/s (0 = AGC off). AGC acts on
        ``Δf`` alone (no bias factor), so it restores frequency with a time constant
        of about ``(D + Km/R) / K_agc`` (≈ 200 s for 0.1/s with the defaults).
    :param physics_dt_s: physics sub-step, s (inputs are held constant over it).
    :param governor_deadband_hz: governor deadband ``d``, Hz, in ``[0,``
        :data:`MAX_GOVERNOR_DEADBAND_HZ` ``]`` (0 = none, the default: the linear model,
        bit for bit as before the option existed). The governors answer
        ``db(Δf) = sign(Δf)·max(|Δf| − d, 0)`` (a no-step deadband) instead of ``Δf``;
        load damping and AGC are unchanged. Typical settings: at most ±36 mHz (NERC,
        *Reliability Guideline: Primary Frequency Control*, 2019, and its 2015 Industry
        Advisory *Generator Governor Frequency Response*); ±17 mHz for the units with
        electronic or digital governors in ERCOT (Texas RE's regional standard
        BAL-001-TRE-1, *Primary Frequency Response in the ERCOT Region*). Each physics
        sub-step integrates exactly in the regime (inside or outside the band) that
        ``Δf`` has at its start (module docstring), one sub-step after another:
        ``GridModel.advance_unchecked`` takes ~8 µs per agent step of 20 sub-steps
        (2.6 µs without a band), within the noise of an environment step (~3 ms at 100
        agents).
    :param governor_valve_time_constant_tg_s: governor valve (servo) time constant
        ``T_G``, s, >= 0 (0 = no lag, the default; typically 0.2 s: Kundur 1994, §9.2 and
        §11.1; ``T1`` of IEEE TGOV1, ``T3`` of IEEEG1). Adds the valve position to the
        state (module docstring).
    :param turbine_hp_time_constant_tch_s: HP turbine (steam chest) time constant
        ``T_CH``, s, >= 0 (0 = no lag, the default; typically 0.3 s: Kundur 1994, §9.2;
        ``T4`` of IEEE IEEEG1). Adds the HP turbine's power to the state.
        With both lags 0 the model is the three-state one the scenarios are calibrated
        on; with 0.2 / 0.3 s the unassisted 0.10 p.u. trip's nadir is 59.21 Hz instead of
        59.35 Hz. The stacked linear path costs the same with them (~3 µs per agent step of
        20 sub-steps); with a deadband too the sub-step loop runs in plain Python over
        the five states, ~70 µs per agent step (8–11 µs with three).

    Besides each field's own range, the model built from them must be finite: ``A``,
    ``B`` and the zero-order hold ``e^(A·physics_dt_s)`` (its rates grow with D, Km/R,
    K_agc and 1/H, 1/TR; with the other defaults the limits lie far beyond any grid: a
    gain of 1e39–1e80 p.u. depending on the field, a time constant of order 1e-40 s,
    ``T_G`` or ``T_CH`` above 0 but below ~1e-39 s). A
    value that overflows them is refused with the
    field to blame and the power of ten that still works (checked once here, never per
    step; the result is the cached discretisation ``GridModel`` uses).
    """

    system_base_mw: float = 1000.0
    nominal_freq_hz: float = 60.0
    inertia_h_s: float = 4.0
    damping_d_pu: float = 1.0
    droop_r_pu: float = 0.05
    mech_gain_km: float = 0.95
    reheat_fraction_fh: float = 0.3
    reheat_time_constant_tr_s: float = 8.0
    agc_gain_per_s: float = 0.0
    physics_dt_s: float = 0.05
    governor_deadband_hz: float = 0.0
    governor_valve_time_constant_tg_s: float = 0.0
    turbine_hp_time_constant_tch_s: float = 0.0

    def __post_init__(self) -> None:
        positive = "a finite number > 0"
        # MW / system_base_mw is the p.u. injection: a base near 0 made it overflow
        _check_real("system_base_mw", self.system_base_mw, low=MIN_SYSTEM_BASE_MW,
                    allowed=f"a finite number >= {MIN_SYSTEM_BASE_MW:g} MW (1 kW, about one "
                            "household's load; a grid's base is MW to GW)")
        for name in ("nominal_freq_hz", "inertia_h_s", "droop_r_pu",
                     "mech_gain_km", "reheat_time_constant_tr_s", "physics_dt_s"):
            _check_real(name, getattr(self, name), low=0.0, low_inclusive=False, allowed=positive)
        non_negative = "a finite number >= 0"
        _check_real("damping_d_pu", self.damping_d_pu, low=0.0, allowed=non_negative)
        _check_real("agc_gain_per_s", self.agc_gain_per_s, low=0.0, allowed=non_negative)
        _check_real("reheat_fraction_fh", self.reheat_fraction_fh, low=0.0, high=1.0,
                    allowed="a finite number in [0, 1]")
        _check_real("governor_deadband_hz", self.governor_deadband_hz, low=0.0,
                    high=MAX_GOVERNOR_DEADBAND_HZ,
                    allowed=f"a finite number in [0, {MAX_GOVERNOR_DEADBAND_HZ:g}] Hz (0 = no "
                            "deadband; real governors use at most ±0.036 Hz, grid codes "
                            f"allow up to {MAX_GOVERNOR_DEADBAND_HZ:g} Hz)")
        for name, typical in (("governor_valve_time_constant_tg_s", 0.2),
                              ("turbine_hp_time_constant_tch_s", 0.3)):
            _check_real(name, getattr(self, name), low=0.0,
                        allowed=f"a finite number >= 0 s (0 = no lag, the default; typical "
                                f"{typical:g} s, Kundur 1994)")
        if not _model_is_finite(self):
            raise ValueError(_non_finite_model_message(self))
        if self.governor_deadband_hz > 0.0:
            with np.errstate(all="ignore"):
                finite = all(math.isfinite(v) for t in _deadband_tables(self, self.physics_dt_s)
                             for v in t)
            if not finite:   # the open-loop hold (no governor) overflowed
                raise ValueError(
                    f"GridParams.governor_deadband_hz={self.governor_deadband_hz!r} is not "
                    "allowed with these fields: the frequency model inside the band (without "
                    "the governors) is non-finite over physics_dt_s; move the other fields "
                    "toward their defaults")

    @property
    def governor_gain_pu(self) -> float:
        """Static governor gain ``Km / R`` (p.u. power per p.u. frequency)."""
        return self.mech_gain_km / self.droop_r_pu

    @property
    def frequency_response_pu(self) -> float:
        """Primary frequency response characteristic ``β = D + Km/R`` (p.u./p.u.)."""
        return self.damping_d_pu + self.governor_gain_pu

    @property
    def governor_deadband_pu(self) -> float:
        """Governor deadband ``d`` in p.u. of the nominal frequency."""
        return self.governor_deadband_hz / self.nominal_freq_hz

    @property
    def state_names(self) -> tuple[str, ...]:
        """The model's state, in order: ``Δf``, the reheat stage ``y``, AGC ``z``, then the
        valve position ``v`` when ``governor_valve_time_constant_tg_s > 0`` and the HP
        turbine's power ``p_hp`` when ``turbine_hp_time_constant_tch_s > 0`` (all p.u.;
        3 states without lags, as before the lags existed)."""
        names = ("delta_f_pu", "reheat_y_pu", "agc_z_pu")
        if self.governor_valve_time_constant_tg_s > 0.0:
            names += ("valve_pu",)
        if self.turbine_hp_time_constant_tch_s > 0.0:
            names += ("hp_power_pu",)
        return names

    @property
    def n_states(self) -> int:
        """Length of the state vector: 3, plus one per lag that is on."""
        return len(self.state_names)

    def steady_state_deviation_pu(self, delta_p_pu: float) -> float:
        """Primary-response steady-state frequency deviation for an injection step.

        ``Δf_ss = ΔP · R / (D·R + Km)`` p.u. (from ``0 = −(Km/R)Δf + ΔP − DΔf``). With a
        governor deadband ``d`` (p.u.): ``ΔP/D`` while ``|ΔP| <= D·d`` (the governors
        never move), else ``(ΔP + s·(Km/R)·d) / (D + Km/R)``, ``s = sign(ΔP)`` (from
        ``0 = −(Km/R)(Δf − s·d) + ΔP − DΔf``). It is the final value when AGC is off;
        with AGC on it is only the quasi steady state before AGC restores ``Δf = 0``.

        :param delta_p_pu: step of net injection, p.u. (a generation loss is negative).
        :return: ``Δf_ss`` in p.u. (multiply by ``nominal_freq_hz`` for Hz).
        """
        d = self.governor_deadband_pu
        if d == 0.0:
            return delta_p_pu * self.droop_r_pu / (self.damping_d_pu * self.droop_r_pu
                                                   + self.mech_gain_km)
        if abs(delta_p_pu) <= self.damping_d_pu * d:
            return delta_p_pu / self.damping_d_pu if self.damping_d_pu > 0 else 0.0
        s = math.copysign(1.0, delta_p_pu)
        k = self.governor_gain_pu
        return (delta_p_pu + s * k * d) / (self.damping_d_pu + k)

    def steady_state(self, u_pu: float) -> np.ndarray:
        """The model's equilibrium (p.u., :attr:`state_names`) under a constant net injection.

        The operating point the grid holds before an episode starts, when the load has
        differed from the schedule by ``−u_pu`` for long enough (the usual start of a
        dynamic study: every state settled at the initial power balance). AGC off:
        ``Δf = Δf_ss(u)`` (:meth:`steady_state_deviation_pu`, deadband included), the
        governor at its settled output ``y = −(Km/R)·db(Δf)`` (``db`` the identity without
        a deadband), ``z = 0``; AGC on: it has restored the frequency, ``Δf = y = 0`` and
        ``z = −u``. The valve and HP stages, when their lags are on, sit at the governor's
        output too (``v = p_hp = y``). ``A x + B u`` (plus the deadband's offset) is zero
        there.

        :param u_pu: net external injection, p.u. (finite; the model is linear and has no
            floor, so an injection beyond ``−(D + Km/R)`` p.u., absurd for a grid, has a
            steady state below 0 Hz, as an episode driven by it would reach; the
            environment starts from whatever its load noise gives, as it always ran on).
        :return: shape ``(n_states,)``.
        """
        _check_real("u_pu", u_pu, allowed="a finite number")
        u = float(u_pu)
        lags = self.n_states - 3
        if self.agc_gain_per_s > 0.0:
            return np.array([0.0, 0.0, -u] + [0.0] * lags)
        df = self.steady_state_deviation_pu(u)
        d = self.governor_deadband_pu
        seen = df if d == 0.0 else math.copysign(max(abs(df) - d, 0.0), df)
        governor = -self.governor_gain_pu * seen
        return np.array([df, governor, 0.0] + [governor] * lags)

    def after_unit_trip(self, unit_share: float) -> GridParams:
        """The system left when a unit carrying the share ``unit_share`` of the system's
        inertia and governor gain trips: ``H·(1 − s)`` and ``Km·(1 − s)``, every other field
        as given (per unit on the same base, ``H_sys = Σ H_i·S_i / S_base``: a unit of
        rating ``S_i`` with the system's average ``H`` and governor share takes ``s =
        S_i / S_base`` of each; load damping ``D`` stays, the load is still there; the
        droop ``R`` is per unit of each governor's own rating, so ``Km`` carries the loss).
        The governor and turbine states leave in the same share at the switch
        (:meth:`GridModel.advance_switching`).

        :param unit_share: ``s`` in [0, 1) (the scenario's ``contingency_unit_share``).
        :raises ValueError: ``s`` out of range, or a remaining system whose model is not
            finite (the message names the share and what is left).
        """
        _check_real("contingency_unit_share", unit_share, low=0.0, high=1.0,
                    allowed="a finite number in [0, 1) (the share of the system's inertia "
                            "and governor gain that trips with the unit)")
        s = float(unit_share)
        if s == 1.0:
            raise ValueError("contingency_unit_share=1.0 is not allowed: must be in [0, 1) "
                             "(the whole system cannot trip: no inertia would be left)")
        h, km = self.inertia_h_s * (1.0 - s), self.mech_gain_km * (1.0 - s)
        try:
            return dataclasses.replace(self, inertia_h_s=h, mech_gain_km=km)
        except ValueError as exc:
            raise ValueError(
                f"contingency_unit_share={unit_share!r} is not allowed with these grid "
                f"parameters: the system left after the trip (inertia_h_s={h!r}, "
                f"mech_gain_km={km!r}) is refused: {exc}; use a smaller share") from None

    def initial_rocof_hz_per_s(self, delta_p_pu: float) -> float:
        """Rate of change of frequency just after an injection step, from rest.

        ``df/dt(0+) = ΔP · f0 / (2H)`` Hz/s (signed: a loss, ``ΔP < 0``, gives a
        negative RoCoF).

        :param delta_p_pu: step of net injection, p.u.
        :return: initial RoCoF in Hz/s.
        """
        return delta_p_pu * self.nominal_freq_hz / (2.0 * self.inertia_h_s)

    def continuous_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """State-space matrices of ``dx/dt = A x + B u``, ``x`` as :attr:`state_names`
        (all p.u.): ``[Δf, y, z]`` without lags, the matrices as before the lags existed.

        With a governor deadband this is the model outside the band, less the band's
        offset (:meth:`governor_input_vector`); inside it the governor columns drop out.

        :return: ``(A, B)`` with shapes ``(n, n)`` and ``(n,)``, ``n = n_states``.
        """
        two_h = 2.0 * self.inertia_h_s
        k = self.governor_gain_pu
        fh = self.reheat_fraction_fh
        tr = self.reheat_time_constant_tr_s
        tg = self.governor_valve_time_constant_tg_s
        tch = self.turbine_hp_time_constant_tch_s
        if tg == 0.0 and tch == 0.0:
            a = np.array([
                [-(self.damping_d_pu + fh * k) / two_h, (1.0 - fh) / two_h, 1.0 / two_h],
                [-k / tr, -1.0 / tr, 0.0],
                [-self.agc_gain_per_s, 0.0, 0.0],
            ])
            b = np.array([1.0 / two_h, 0.0, 0.0])
            return a, b
        # the chain −(Km/R)·Δf → valve v (lag TG) → HP power p_hp (lag TCH) → reheat y
        # (lag TR); a lag that is off passes its input through (v = −(Km/R)·Δf, p_hp = v)
        n = self.n_states
        a = np.zeros((n, n))
        gate = 3                                       # the first lag's row
        source, gain = 0, -k                           # its input: −(Km/R)·Δf
        for lag in (tg, tch):
            if lag > 0.0:
                a[gate, gate] = -1.0 / lag
                a[gate, source] = gain / lag
                source, gain = gate, 1.0
                gate += 1
        hp = source                                    # p_hp = x[hp] (a lag is on)
        a[0, 0] = -self.damping_d_pu / two_h
        a[0, 1] = (1.0 - fh) / two_h
        a[0, 2] = 1.0 / two_h
        a[0, hp] = fh / two_h
        a[1, 1] = -1.0 / tr
        a[1, hp] = 1.0 / tr
        a[2, 0] = -self.agc_gain_per_s
        b = np.zeros(n)
        b[0] = 1.0 / two_h
        return a, b

    def governor_input_vector(self) -> np.ndarray:
        """``b_g``: ``dx/dt`` gains ``−b_g·g`` from the governor's input ``g`` (``g = Δf``
        without a deadband, so that ``A = A₀ − b_g·e₁ᵀ`` with the open-loop ``A₀``;
        ``g = Δf − s·d`` outside a band). Without lags ``b_g = (Km/R)·[FH/(2H), 1/TR, 0]``;
        with them ``g`` drives the first lag alone: ``(Km/R)/TG`` on the valve state (or
        ``(Km/R)/TCH`` on the HP state when only that lag is on).

        :return: shape ``(n_states,)``.
        """
        k = self.governor_gain_pu
        tg = self.governor_valve_time_constant_tg_s
        tch = self.turbine_hp_time_constant_tch_s
        if tg == 0.0 and tch == 0.0:
            return np.array([k * self.reheat_fraction_fh / (2.0 * self.inertia_h_s),
                             k / self.reheat_time_constant_tr_s, 0.0])
        b_g = np.zeros(self.n_states)
        b_g[3] = k / (tg if tg > 0.0 else tch)
        return b_g

    def open_loop_matrix(self) -> np.ndarray:
        """``A₀ = A + b_g·e₁ᵀ``: the model with the governor's input at 0 (inside a
        deadband), each entry written out (no rounding residue).

        :return: shape ``(n_states, n_states)``.
        """
        a = self.continuous_matrices()[0]
        if self.n_states == 3:
            a[0, 0] = -self.damping_d_pu / (2.0 * self.inertia_h_s)
            a[1, 0] = 0.0
        else:   # the governor's input reaches the first lag's row alone
            a[3, 0] = 0.0
        return a


#: the fields the model's rates grow with (+1: larger is faster; -1: smaller is faster)
_RATE_FIELDS = {"damping_d_pu": 1, "mech_gain_km": 1, "agc_gain_per_s": 1, "physics_dt_s": 1,
                "inertia_h_s": -1, "droop_r_pu": -1, "reheat_time_constant_tr_s": -1,
                "governor_valve_time_constant_tg_s": -1, "turbine_hp_time_constant_tch_s": -1}


def _model_is_finite(params: GridParams, *, cached: bool = True) -> bool:
    """True when ``A``, ``B`` and their zero-order hold over ``physics_dt_s`` (``Φ``,
    ``Γ``) are finite; ``cached=False`` computes ``Φ, Γ`` without filling the cache."""
    with np.errstate(all="ignore"):
        a, b = params.continuous_matrices()
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return False
        zoh = _zoh if cached else _zoh_uncached
        try:
            phi, gamma = zoh(a, b, params.physics_dt_s)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):   # expm gave up
            return False
    return bool(np.isfinite(phi).all() and np.isfinite(gamma).all())


def _with(params: GridParams, name: str, value: float) -> GridParams:
    """A copy of ``params`` with one field changed, not validated (for probing)."""
    probe = copy.copy(params)
    object.__setattr__(probe, name, value)
    return probe


def _non_finite_model_message(params: GridParams) -> str:
    """Why :func:`_model_is_finite` failed: the field(s) to blame and what is allowed.

    A field is to blame when its default alone makes the model finite again; the
    allowed range is the largest (or smallest) power of ten that does, the others as
    given. With no single field to blame, every rate field off its default is named.
    """
    defaults = {f.name: f.default for f in fields(GridParams)}
    what = ("the frequency model non-finite (the state matrices A, B or their zero-order "
            "hold e^(A·physics_dt_s) overflow)")
    for name, sign in _RATE_FIELDS.items():
        if not _model_is_finite(_with(params, name, defaults[name]), cached=False):
            continue
        exponent = round(math.log10(defaults[name])) if defaults[name] > 0 else 0
        while _model_is_finite(_with(params, name, 10.0 ** (exponent + sign)), cached=False):
            exponent += sign
        bound = f"<= {10.0 ** exponent:g}" if sign > 0 else f">= {10.0 ** exponent:g}"
        if defaults[name] == 0.0:   # a lag: 0 turns it off
            bound += " or 0 (no lag)"
        return (f"GridParams.{name}={getattr(params, name)!r} is not allowed: it makes {what}; "
                f"allowed (the other fields as given): {name} {bound}")
    changed = ", ".join(f"{n}={getattr(params, n)!r}" for n in _RATE_FIELDS
                        if getattr(params, n) != defaults[n])
    return (f"GridParams {changed} are not allowed together: they make {what}; move them "
            "toward their defaults")


def _zoh(a: np.ndarray, b: np.ndarray, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact zero-order-hold discretisation over ``duration_s``.

    ``expm([[A, B], [0, 0]]·T) = [[Φ, Γ], [0, 1]]`` with ``Φ = e^{AT}`` and
    ``Γ = ∫_0^T e^{Aτ} dτ · B`` (Van Loan's block-matrix identity).

    Results are cached per process by the exact bytes of ``A``, ``B`` and the duration
    (read-only arrays): SciPy's ``expm`` of this matrix runs matrix products in SciPy's
    OpenBLAS, which wakes its worker threads, and they spin for ~0.1 s on the other
    cores afterwards (measured: every environment built took ~100 ms of CPU from the
    next steps, e.g. from the crypto worker thread).

    :return: ``(Φ, Γ)`` with shapes (n, n) and (n,) for ``A`` of shape (n, n).
    """
    a = np.ascontiguousarray(a, dtype=float)
    b = np.ascontiguousarray(b, dtype=float)
    return _zoh_cached(a.tobytes(), b.tobytes(), a.shape[0], float(duration_s))


def _zoh_uncached(a: np.ndarray, b: np.ndarray, duration_s: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_zoh` without the cache (probes of the error path must not evict it)."""
    a = np.ascontiguousarray(a, dtype=float)
    b = np.ascontiguousarray(b, dtype=float)
    return _zoh_cached.__wrapped__(a.tobytes(), b.tobytes(), a.shape[0], float(duration_s))


def _deadband_tables(params: GridParams, duration_s: float) -> tuple[tuple[float, ...], ...]:
    """The three regimes' zero-order holds over ``duration_s`` with a governor deadband
    ``d`` (p.u.), as flat tuples of Python floats ``(Φ row-major ×n², Γ ×n, c ×n)``
    (``n = params.n_states``) for ``x' = Φ x + Γ u + c``: inside the band (open loop
    ``A₀ = A + b_g·e₁ᵀ``, ``c = 0``), above it and below it (``A``, ``c = ±d·Θ`` with
    ``Θ`` the hold of ``b_g``: the input ``[u, s·d]`` through ``[B, b_g]``).

    :return: ``(inside, above, below)``.
    """
    a, b = params.continuous_matrices()
    b_g = params.governor_input_vector()
    phi_o, gamma_o = _zoh(params.open_loop_matrix(), b, duration_s)
    phi_c, gamma_c = _zoh(a, b, duration_s)
    theta = _zoh(a, b_g, duration_s)[1]
    d = params.governor_deadband_pu
    inside = (*phi_o.ravel().tolist(), *gamma_o.tolist(), *([0.0] * a.shape[0]))
    above = (*phi_c.ravel().tolist(), *gamma_c.tolist(), *(d * theta).tolist())
    below = (*phi_c.ravel().tolist(), *gamma_c.tolist(), *(-d * theta).tolist())
    return inside, above, below


@functools.lru_cache(maxsize=64)
def _zoh_cached(a_bytes: bytes, b_bytes: bytes, n: int,
                duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    m = np.zeros((n + 1, n + 1))
    m[:n, :n] = np.frombuffer(a_bytes).reshape(n, n)
    m[:n, n] = np.frombuffer(b_bytes)
    e = expm(m * duration_s)
    phi, gamma = e[:n, :n].copy(), e[:n, n].copy()
    phi.flags.writeable = False
    gamma.flags.writeable = False
    return phi, gamma


class GridModel:
    """Exact zero-order-hold discretization of the linear model (matrix exponential,
    ``scipy.linalg.expm``, computed once per ``physics_dt_s``).

    One agent step of ``dt_s`` is ``n_substeps`` physics sub-steps. At construction
    the stacked response matrices of a whole agent step are precomputed::

        Δf_k   = C Φ^(k+1) x0 + Σ_{j<=k} C Φ^(k−j) Γ u_j        k = 0 … n−1
        x_end  = Φ^n x0       + Σ_j     Φ^(n−1−j) Γ u_j

    so ``advance`` is two small matrix-vector products and no SciPy call.

    :param params: grid parameters.
    :param dt_s: agent step, s; a whole multiple (1 or more) of ``params.physics_dt_s``,
        checked as ``EnvConfig`` checks it (:func:`~gridswarm_env.config.check_substeps`:
        within a relative 1e-9 of a whole number of sub-steps, not rounded, and at most
        :data:`~gridswarm_env.config.MAX_SUBSTEPS` of them: the tables below are O(n²)).
    """

    def __init__(self, params: GridParams, dt_s: float) -> None:
        if not isinstance(params, GridParams):
            raise ValueError(f"params={params!r} is not allowed: must be a GridParams")
        _check_real("dt_s", dt_s, low=0.0, low_inclusive=False, allowed="a finite number > 0")
        # the same test as EnvConfig's, so a configuration it accepts builds here
        n = check_substeps("GridModel", dt_s, "physics_dt_s", params.physics_dt_s)
        self.params = params
        self.dt_s = float(dt_s)
        self.n_substeps: int = int(n)
        self._f0_hz = params.nominal_freq_hz
        self._a, self._b = params.continuous_matrices()
        self._phi, self._gamma = _zoh(self._a, self._b, params.physics_dt_s)
        # advance_variable's holds by duration: (Φ, Γ), or a deadband's regime tables
        self._variable_cache: dict[float, Any] = {
            float(params.physics_dt_s): (self._phi, self._gamma)}
        ns = params.n_states   # 3, plus one per governor/turbine lag that is on
        # (ns,) [Δf_pu, y_reheat_pu, z_agc_pu(, valve_pu)(, hp_power_pu)]: state_names
        self.state: np.ndarray = np.zeros(ns)
        # governor deadband (p.u.): sub-steps run one after another (the regime depends
        # on the state), with each regime's hold as Python floats; no stacked tables
        self._deadband_pu = params.governor_deadband_pu
        self._deadband: tuple[tuple[float, ...], ...] | None = None
        if self._deadband_pu > 0.0:
            self._deadband = _deadband_tables(params, params.physics_dt_s)
            self._variable_cache = {float(params.physics_dt_s): self._deadband}
            self._free = self._forced = self._forced_blocks = None
            return

        # powers[k] = Φ^k, k = 0 … n
        powers = np.empty((n + 1, ns, ns))
        powers[0] = np.eye(ns)
        for k in range(1, n + 1):
            powers[k] = self._phi @ powers[k - 1]
        # impulse[k] = Φ^k Γ: state response k sub-steps after a unit input sub-step.
        impulse = powers[:n] @ self._gamma                              # (n, ns)
        free = np.empty((n + ns, ns))
        free[:n] = powers[1:, 0, :]                                     # C Φ^(k+1)
        free[n:] = powers[n]                                            # Φ^n
        forced = np.zeros((n + ns, n))
        lag = np.arange(n)[:, None] - np.arange(n)[None, :]             # k − j
        lower = lag >= 0
        forced[:n][lower] = impulse[lag[lower], 0]                      # C Φ^(k−j) Γ
        forced[n:] = impulse[::-1].T                                    # Φ^(n−1−j) Γ
        self._free = free
        self._forced = forced
        # (rows, view) blocks of ``forced`` for long steps: the same bits on any machine
        self._forced_blocks = (
            tuple((slice(i, i + _BLOCK_ROWS), forced[i:i + _BLOCK_ROWS])
                  for i in range(0, n + ns, _BLOCK_ROWS))
            if n >= _BLOCK_FROM_SUBSTEPS else None)

    def reset(self, delta_f_pu: float = 0.0) -> None:
        """Reset to a frequency deviation with the governor, turbine and AGC states at rest.

        :param delta_f_pu: initial ``Δf`` in p.u. (finite, > −1 so that f > 0).
        """
        _check_real("delta_f_pu", delta_f_pu, low=-1.0, low_inclusive=False,
                    allowed="a finite number > -1")
        self.state = np.zeros(self.params.n_states)
        self.state[0] = float(delta_f_pu)

    def reset_steady(self, u_pu: float) -> None:
        """Reset to the steady state of a constant net injection ``u_pu``, p.u.
        (:meth:`GridParams.steady_state`): advancing with that injection then leaves the
        state where it is, up to rounding."""
        self.state = self.params.steady_state(u_pu)

    @property
    def delta_f_pu(self) -> float:
        """Current frequency deviation, p.u."""
        return float(self.state[0])

    @property
    def freq_hz(self) -> float:
        """Current frequency ``f0·(1 + Δf)``, Hz."""
        return self._f0_hz * (1.0 + float(self.state[0]))

    def advance(self, u_pu: np.ndarray) -> np.ndarray:
        """Integrate one agent step with a piecewise-constant injection.

        :param u_pu: net external injection per sub-step, p.u., shape ``(n_substeps,)``
            (a scalar is held over the whole step); sub-step ``k`` covers
            ``[k·physics_dt_s, (k+1)·physics_dt_s)``.
        :return: frequency in Hz at the end of each sub-step, shape ``(n_substeps,)``.
        """
        u = np.asarray(u_pu, dtype=float)
        if u.ndim == 0:
            u = np.full(self.n_substeps, float(u))
        if u.shape != (self.n_substeps,):
            raise ValueError(f"u_pu has shape {u.shape}: must be ({self.n_substeps},) or a scalar")
        if not np.isfinite(u).all():
            raise ValueError("u_pu contains NaN or inf: must be finite")
        return self.advance_unchecked(u)

    def advance_unchecked(self, u_pu: np.ndarray) -> np.ndarray:
        """:meth:`advance` for a finite float64 array of shape ``(n_substeps,)`` that the
        caller guarantees (the environment's hot path); no argument checks. (``.dot``
        calls the same BLAS matrix-vector product as ``@``, with less overhead; a long
        step's in blocks of rows: :data:`_BLOCK_FROM_SUBSTEPS`.) With a governor
        deadband the sub-steps run one after another (:meth:`_run_deadband`)."""
        if self._deadband is not None:
            return self._run_deadband(u_pu.tolist(), self._deadband)
        out = self._free.dot(self.state)
        blocks = self._forced_blocks
        if blocks is None:
            out += self._forced.dot(u_pu)
        else:
            for rows, block in blocks:
                out[rows] += block.dot(u_pu)
        n = self.n_substeps
        self.state = out[n:]
        f = out[:n]
        f += ONE
        f *= self._f0_hz
        return f

    def _run_deadband(self, u_pu: list[float], tables: tuple[tuple[float, ...], ...]
                      ) -> np.ndarray:
        """Integrate sub-steps of the hold ``tables`` (:func:`_deadband_tables`) one after
        another, each in the regime ``Δf`` has at its start (inside the band when
        ``|Δf| <= d``); plain float arithmetic, the same for every caller (the three
        states written out; with lags, :meth:`_run_deadband_lagged`).

        :return: frequency in Hz at the end of each sub-step.
        """
        if len(self.state) != 3:
            return self._run_deadband_lagged(u_pu, tables)
        inside, above, below = tables
        d = self._deadband_pu
        f, y, z = self.state.tolist()
        out = []
        for u in u_pu:
            (a00, a01, a02, a10, a11, a12, a20, a21, a22, g0, g1, g2, c0, c1, c2) = (
                above if f > d else below if f < -d else inside)
            f, y, z = (a00 * f + a01 * y + a02 * z + g0 * u + c0,
                       a10 * f + a11 * y + a12 * z + g1 * u + c1,
                       a20 * f + a21 * y + a22 * z + g2 * u + c2)
            out.append(f)
        self.state = np.array([f, y, z])
        return self._hz(out)

    def _run_deadband_lagged(self, u_pu: list[float], tables: tuple[tuple[float, ...], ...]
                             ) -> np.ndarray:
        """:meth:`_run_deadband` for a state of any length (governor/turbine lags on)."""
        n, d = len(self.state), self._deadband_pu
        # each regime as (rows of Φ, Γ, c) with the row's Γ and c entries beside it
        inside, above, below = (
            tuple((t[i * n:(i + 1) * n], t[n * n + i], t[n * n + n + i]) for i in range(n))
            for t in tables)
        x = self.state.tolist()
        out = []
        for u in u_pu:
            f = x[0]
            rows = above if f > d else below if f < -d else inside
            x = [sum(map(operator.mul, row, x)) + g * u + c for row, g, c in rows]
            out.append(x[0])
        self.state = np.array(x)
        return self._hz(out)

    def _hz(self, delta_f_pu: list[float]) -> np.ndarray:
        """Frequency in Hz of a list of ``Δf`` (p.u.)."""
        freq = np.array(delta_f_pu)
        freq += 1.0
        freq *= self._f0_hz
        return freq

    def advance_substep(self, u_pu: float) -> float:
        """Integrate one physics sub-step (``physics_dt_s``) with constant injection.

        :param u_pu: net external injection, p.u.
        :return: frequency in Hz at the end of the sub-step.
        """
        return self.advance_variable(u_pu, self.params.physics_dt_s)

    def advance_variable(self, u_pu: float, duration_s: float) -> float:
        """Integrate exactly (ZOH) over an arbitrary duration with constant injection.

        Meant for the rare path of splitting a sub-step at an event; the discretised
        matrices are cached by duration (the sub-step's own are precomputed). With a
        governor deadband the regime is that of ``Δf`` at the start, held over the
        whole duration (as for a sub-step of :meth:`advance`, with which a duration of
        ``physics_dt_s`` agrees bit for bit).

        :param u_pu: net external injection, p.u.
        :param duration_s: duration, s (>= 0; 0 leaves the state unchanged).
        :return: frequency in Hz at the end of the interval.
        """
        _check_real("u_pu", u_pu, allowed="a finite number")
        _check_real("duration_s", duration_s, low=0.0, allowed="a finite number >= 0")
        duration_s = float(duration_s)
        if duration_s == 0.0:
            return self.freq_hz
        held = self._variable_cache.get(duration_s)
        if held is None:
            if len(self._variable_cache) >= _VARIABLE_CACHE_SIZE:   # keep the sub-step's own
                pdt = float(self.params.physics_dt_s)
                self._variable_cache = {pdt: self._variable_cache[pdt]}
            held = (_zoh(self._a, self._b, duration_s) if self._deadband is None
                    else _deadband_tables(self.params, duration_s))
            self._variable_cache[duration_s] = held
        if self._deadband is not None:
            return float(self._run_deadband([float(u_pu)], held)[0])
        phi, gamma = held
        self.state = phi @ self.state + gamma * float(u_pu)
        return self.freq_hz

    def advance_switching(self, after: GridModel, u_pu: np.ndarray, substep: int,
                          offset_s: float, jump_pu: float = 0.0) -> np.ndarray:
        """Integrate one agent step during which the system changes into ``after``'s (a
        unit trips and takes its inertia and governor with it,
        :meth:`GridParams.after_unit_trip`): this model until ``offset_s`` into sub-step
        ``substep``, then ``after``'s, which holds the state from there on (the caller
        advances ``after`` from the next step). The model is LTI (or, with a deadband,
        piecewise affine) on each side, so each side integrates exactly (zero-order
        hold). The sub-step ``substep`` splits at the switch: its input ``u_pu[substep]``
        is the mean over it of an injection that steps by ``jump_pu`` at the switch (the
        trip's ``−contingency_mw / system_base_mw``, counted for the part of the sub-step
        after it: :func:`~gridswarm_env.scenarios.episode_profiles`), so the part before
        holds ``u − jump·(physics_dt_s − offset_s)/physics_dt_s`` and the part after that
        plus ``jump``: a trip inside a sub-step then integrates exactly too (a ``jump_pu``
        of 0 holds the mean on both parts). The sub-steps run one after another
        (:meth:`advance_variable`): once per episode.

        At the switch the governor and turbine states (``y``, and ``v``, ``p_hp`` with the
        lags) are scaled by ``after``'s ``Km`` over this model's when it is lower: for
        ``after_unit_trip(s)``, ``1 − s``. Each unit's governor answers the same ``Δf`` in
        proportion to its share of ``Km``, so the states are that sum and the tripped
        unit's share of the answer held before the trip (``0.1·(Km/R)·Δf`` with ``s`` = 0.1
        in steady state: 0.95 MW at −30 mHz) leaves with it; the lost ``jump_pu`` is its
        scheduled output, the governors' deviation from the schedule being in the states.
        ``Δf`` carries over (the remaining rotors do not jump), and so does the AGC's ``z``,
        the system's secondary-control command, which the remaining units deliver (the
        model has no AGC lag per unit). A switch that does not lower ``Km`` keeps them.

        :param after: the post-switch model, with the same agent step, sub-step and states.
        :param u_pu: net external injection per sub-step, p.u., shape ``(n_substeps,)``.
        :param substep: the sub-step the switch falls in, ``0 <= substep < n_substeps``.
        :param offset_s: the switch's time into it, s, ``0 <= offset_s < physics_dt_s``
            (0: at its start, the whole sub-step in ``after``).
        :param jump_pu: the step of the injection at the switch, p.u. (finite).
        :return: frequency in Hz at the end of each sub-step, shape ``(n_substeps,)``.
        """
        pdt = self.params.physics_dt_s
        if not (isinstance(after, GridModel) and after.n_substeps == self.n_substeps
                and after.params.physics_dt_s == pdt
                and after.params.n_states == self.params.n_states):
            raise ValueError(f"after={after!r} is not allowed: must be a GridModel with the "
                             "same agent step, physics_dt_s and states (lags) as this one")
        if not (0 <= substep < self.n_substeps):
            raise ValueError(f"substep={substep!r} is not allowed: must be in "
                             f"[0, {self.n_substeps})")
        _check_real("offset_s", offset_s, low=0.0, high=pdt,
                    allowed=f"a finite number in [0, physics_dt_s = {pdt!r}) s")
        if offset_s == pdt:
            raise ValueError(f"offset_s={offset_s!r} is not allowed: must be below "
                             f"physics_dt_s = {pdt!r} s (a switch at a sub-step's end is the "
                             "next sub-step's start, offset 0)")
        _check_real("jump_pu", jump_pu, allowed="a finite number")
        u = np.asarray(u_pu, dtype=float).tolist()
        out = [self.advance_variable(uk, pdt) for uk in u[:substep]]
        u_before = u[substep] - jump_pu * ((pdt - offset_s) / pdt)
        self.advance_variable(u_before, offset_s)   # 0: unchanged
        after.state = self.state.copy()
        km, km_after = self.params.mech_gain_km, after.params.mech_gain_km
        if km_after < km:   # the units that leave take their share of the governors' answer
            kept = km_after / km
            after.state[1] *= kept
            after.state[3:] *= kept
        out.append(after.advance_variable(u_before + jump_pu, pdt - offset_s))
        out.extend(after.advance_variable(uk, pdt) for uk in u[substep + 1:])
        return np.array(out)

    def derivative(self, state: np.ndarray, u_pu: float) -> np.ndarray:
        """Continuous-time right-hand side ``A x + B u`` (for tests and references);
        with a governor deadband the exact piecewise-affine one,
        ``A x + B u + b_g·(Δf − db(Δf))``.

        :param state: the state (:attr:`GridParams.state_names`), shape ``(n_states,)``.
        :param u_pu: net external injection, p.u.
        :return: ``dx/dt`` in p.u./s, shape ``(n_states,)``.
        """
        x = np.asarray(state, dtype=float)
        rhs = self._a @ x + self._b * float(u_pu)
        d = self._deadband_pu
        if d > 0.0:   # the governor sees db(Δf), not Δf: give back the difference
            df = float(x[0])
            rhs = rhs + self.params.governor_input_vector() * (df - math.copysign(
                max(abs(df) - d, 0.0), df))
        return rhs


def step_response(params: GridParams, delta_p_pu: float, duration_s: float,
                  delta_f0_pu: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Frequency after a step of net injection applied at ``t = 0`` (event studies).

    :param params: grid parameters (sampled every ``physics_dt_s``).
    :param delta_p_pu: injection step, p.u. (a generation loss is negative).
    :param duration_s: horizon, s; rounded down to whole sub-steps (at least one).
    :param delta_f0_pu: initial frequency deviation, p.u.
    :return: ``(time_s, freq_hz)``, both of shape ``(n + 1,)``, starting with the
        pre-event sample at ``t = 0``.
    """
    _check_real("duration_s", duration_s, low=0.0, low_inclusive=False,
                allowed="a finite number > 0")
    n = max(1, int(math.floor(duration_s / params.physics_dt_s + 1e-9)))
    model = GridModel(params, params.physics_dt_s)
    model.reset(delta_f0_pu)
    freq_hz = np.empty(n + 1)
    freq_hz[0] = model.freq_hz
    for k in range(1, n + 1):  # one sub-step at a time: memory stays O(1) in the horizon
        freq_hz[k] = model.advance_substep(delta_p_pu)
    return np.arange(n + 1) * params.physics_dt_s, freq_hz


def rocof_hz_per_s(freq_trace_hz: np.ndarray, dt_s: float,
                   window_s: float | None = None) -> np.ndarray:
    """Rate of change of frequency of a uniformly sampled trace, over a sliding window.

    ``RoCoF_k = (f[k + w] − f[k]) / (w · dt_s)`` with ``w = window_s / dt_s``
    samples (``w = 1``, consecutive samples, when ``window_s`` is None). Grid codes
    measure RoCoF over a window to reject noise (500 ms in GB and EN 50549: sources at
    ``EnvConfig.rocof_window_s``, which the ``max_rocof_hz_per_s`` KPI uses); the window
    also smooths the true initial RoCoF, so use ``w = 1`` on fine traces to compare
    with the closed form.

    :param freq_trace_hz: frequency samples, Hz, shape ``(n,)``, ``n > w``.
    :param dt_s: sampling interval, s.
    :param window_s: measurement window, s: a whole number of samples, at least one
        (``ValueError`` otherwise, not rounded; as ``EnvConfig.rocof_window_s``).
    :return: RoCoF in Hz/s, shape ``(n − w,)``; entry k belongs to ``[k·dt, (k+w)·dt]``.
    """
    _check_real("dt_s", dt_s, low=0.0, low_inclusive=False, allowed="a finite number > 0")
    f = np.asarray(freq_trace_hz, dtype=float)
    if f.ndim != 1:
        raise ValueError(f"freq_trace_hz has shape {f.shape}: must be one-dimensional")
    w = 1
    if window_s is not None:   # refused between two whole numbers of samples, as the KPI's
        w = check_whole_multiple("rocof_hz_per_s", "window_s", window_s, "dt_s", dt_s)
    if f.size <= w:
        raise ValueError(f"freq_trace_hz has {f.size} samples: must have more than the "
                         f"window of {w} samples")
    return (f[w:] - f[:-w]) / (w * dt_s)
