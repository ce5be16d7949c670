"""The "mute" executor: turns verified contracts into executed DER power.

Dispatch is an environment rule, not an agent. For the current delivery window it
receives the balancing power of the energy contracts that *verified* (rejected
ones contribute 0 MW) and the reserve of the standing reserve contracts with the
time each one was activated, and produces the balancing power every agent
executes in every physics sub-step:

    planned_j(s) = c_j + R_j · a_j(s)        a_j(s) = share of sub-step s after activation
    net_j(s)     = clip(b_j + planned_j(s), net_lo_j, net_hi_j)
    p_j(s)       = net_j(s) − b_j

where ``b_j`` is the agent's baseline (the schedule it follows at p = 0: actual
available PV for solar, the kernel's planned schedule otherwise) and
``[net_lo, net_hi]`` the physical bounds of its *actual* state over the step
(:meth:`Kernel.execution_bounds`). The clip is the last guard of the kernel: with
a feasible contract it changes nothing; when it bites, the shortfall is counted
(``dispatch_clamped``) and penalized as undelivered energy.

Resolution: power is piecewise constant per physics sub-step. The sub-step in which a
reserve contract activates carries its *mean* planned power ``c_j + R_j·a_j(s)``, so
the frequency sees the activation at its exact time within the sub-step (zero-order
hold of the mean), and its stored-energy change is booked with the efficiency of the
mean's sign (:func:`~gridswarm_env.fleet.energy_change_mwh`). That is exact unless the
net injection changes sign inside that one sub-step (a battery charging under an energy
contract when its reserve activates): then the flipped part is booked at the wrong
efficiency, at most ``|R_j|·physics_dt_s/3600·(1/η_d − η_c)`` MWh (1.5e-6 MWh per MW
at 50 ms with the default 0.949 efficiencies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gridswarm_env.fleet import FleetState, energy_change_mwh, fast_clip
from gridswarm_env.kernel import Kernel, ramp_interval


@dataclass(frozen=True)
class Execution:
    """What one step executed, per agent (shape ``(n,)`` unless noted)."""

    p_mean_mw: np.ndarray          # balancing power, mean over the step
    planned_mean_mw: np.ndarray    # contracted (planned) balancing power, mean over the step
    p_total_sub_mw: np.ndarray     # (n_substeps,) fleet balancing power per sub-step
    net_min_mw: np.ndarray         # min / max net injection over the sub-steps
    net_max_mw: np.ndarray
    energy_delta_mwh: np.ndarray   # stored-energy change over the step
    clamped: np.ndarray            # bool: the physical guard changed the planned power
    reserve_share: np.ndarray      # mean activated share of the standing reserve
    baseline_mw: np.ndarray        # the baseline actually followed (p = 0 schedule, feasible)
    p_mean_sum_mw: float           # Σ p_mean_mw over agents (np.add.reduce, index order)


def activation_share(activation_s: np.ndarray, t0_s: float, n_substeps: int,
                     physics_dt_s: float) -> np.ndarray:
    """``(n, n_substeps)`` share of each sub-step after each agent's activation time."""
    starts = t0_s + physics_dt_s * np.arange(n_substeps)
    return np.clip((starts[None, :] + physics_dt_s - activation_s[:, None]) / physics_dt_s,
                   0.0, 1.0)


def execute(fleet: FleetState, kernel: Kernel, *, baseline_mw: np.ndarray,
            contract_mw: np.ndarray, reserve_mw: np.ndarray, activation_s: np.ndarray,
            t0_s: float, dt_s: float, n_substeps: int, physics_dt_s: float,
            p_prev_mw: np.ndarray | None = None,
            late_reserve: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
            ) -> Execution:
    """Execute one step (module equations). Does not modify ``fleet``.

    With ``p_prev_mw`` (last step's executed balancing power) the guard also holds the
    ramp limit (:func:`~gridswarm_env.kernel.ramp_interval`).

    ``reserve_mw[j]`` acts from ``activation_s[j]``, except the rows of ``late_reserve``
    ``(owner, MW, activation s)``: reserve included in ``reserve_mw[owner]`` that its
    holder activated later in this step (a contract that reached it after its first),
    which acts from its own time, ``R_j·a_j(s) = (R_j − Σ_late MW)·a(s; activation_s[j])
    + Σ_late MW·a(s; t_late)``.
    """
    h = dt_s / 3600.0
    st = kernel._statics_for(fleet)
    c = st.fleet
    b = kernel._bounds(st, fleet, fleet.energy_mwh, fleet.energy_mwh, fleet.solar_available_mw,
                       h, math.inf, fleet.plugged, False)     # = kernel.execution_bounds
    lo_net, hi_net = b[0], b[1]
    base = baseline_mw.copy()
    base[c.solar] = fleet.solar_available_mw[c.solar]
    base = fast_clip(base, lo_net, hi_net, out=base)
    p_lo = lo_net - base
    p_hi = hi_net - base
    if p_prev_mw is not None and kernel.has_ramp:
        ramp = (kernel.ramp_step_mw if dt_s == kernel.dt_s
                else kernel.arrays.ramp_mw_per_s * dt_s)
        r_lo, r_hi = ramp_interval(p_prev_mw, ramp)
        p_lo, p_hi = np.maximum(p_lo, r_lo), np.minimum(p_hi, r_hi)
    t1_s = t0_s + dt_s
    in_step = activation_s < t1_s
    # the usual step: no reserve activated yet (activation_s >= t1 > t0 everywhere)
    activated = bool(np.count_nonzero(in_step))
    if activated:
        in_step &= reserve_mw > 0
    if late_reserve is not None or (activated and np.count_nonzero(in_step)
                                    and np.count_nonzero(activation_s[in_step] > t0_s)):
        share = activation_share(activation_s, t0_s, n_substeps, physics_dt_s)
        if late_reserve is None:
            planned = contract_mw[:, None] + reserve_mw[:, None] * share
        else:
            owner, late_mw, late_s = late_reserve
            first_mw = reserve_mw.copy()
            np.subtract.at(first_mw, owner, late_mw)
            reserve_sub = first_mw[:, None] * share
            np.add.at(reserve_sub, owner, late_mw[:, None] * activation_share(
                late_s, t0_s, n_substeps, physics_dt_s))
            held = reserve_mw[owner, None]   # the holders' rows: activated share of it
            share[owner] = np.divide(reserve_sub[owner], held, out=share[owner],
                                     where=held > 0)
            planned = contract_mw[:, None] + reserve_sub
        p = fast_clip(planned, p_lo[:, None], p_hi[:, None])
        net = base[:, None] + p
        # energy per sub-step from its mean net power (the efficiency depends on the sign
        # of net: see the module docstring for the activation sub-step)
        sub_h = physics_dt_s / 3600.0
        delta = energy_change_mwh(fleet, net[:, 0], sub_h, c)
        for s in range(1, n_substeps):   # loop over sub-steps (20), vectorized over agents
            delta = delta + energy_change_mwh(fleet, net[:, s], sub_h, c)
        p_mean = p.mean(axis=1)
        return Execution(
            p_mean_mw=p_mean, planned_mean_mw=planned.mean(axis=1),
            p_total_sub_mw=p.sum(axis=0), net_min_mw=net.min(axis=1),
            net_max_mw=net.max(axis=1), energy_delta_mwh=delta,
            clamped=(np.abs(p - planned) > 1e-9).any(axis=1),
            reserve_share=share.mean(axis=1), baseline_mw=base,
            p_mean_sum_mw=float(np.add.reduce(p_mean)))
    share = np.where(activation_s <= t0_s, 1.0, 0.0) if activated else np.zeros(
        activation_s.shape[0])
    planned = reserve_mw * share
    planned += contract_mw
    p = fast_clip(planned, p_lo, p_hi)
    net = base + p
    p_sum = float(np.add.reduce(p))
    total_sub = np.empty(n_substeps)   # np.full without its Python-level overhead
    total_sub.fill(p_sum)
    return Execution(
        p_mean_mw=p, planned_mean_mw=planned, p_mean_sum_mw=p_sum,
        p_total_sub_mw=total_sub,
        net_min_mw=net, net_max_mw=net,
        energy_delta_mwh=energy_change_mwh(fleet, net, h, c),
        clamped=np.abs(p - planned) > 1e-9, reserve_share=share, baseline_mw=base)
