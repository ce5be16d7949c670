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

Resolution: power is piecewise constant per physics sub-step, except the sub-step in
which a reserve contract activates: there the DER follows ``clip(c_j + R_before)`` up
to the activation time and ``clip(c_j + R_after)`` after it (the physical bounds hold at
every instant). The frequency sees that sub-step's mean,

    p_j(s) = (1 − a)·clip(c_j + R_before) + a·clip(c_j + R_after)
    ΔE_j(s) = (1 − a)·g(b_j + clip(c_j + R_before)) + a·g(b_j + clip(c_j + R_after))

with ``a = a_j(s)`` and ``g`` the stored-energy change of a constant net injection
(:func:`~gridswarm_env.fleet.energy_change_mwh`), so the energy that reaches the grid is
the energy that left the store even when the clip bites or the net injection changes
sign inside the sub-step (a battery charging under an energy contract when its reserve
activates). Where neither happens this equals ``clip(c_j + R_j·a)`` and ``g`` of it,
which is what is computed there (bit for bit as before). Two holdings of one agent
activating inside the same sub-step are booked as one step of their summed reserve at
the time that gives the same unclipped mean.

An energy contract the bus delivered inside its window, after the window began
(:func:`execute`'s ``joined``), acts like a reserve activation from its delivery time ``t_a``
to the step's end: ``c_j`` above is then ``c_j + Σ_l C_l · a_l(s)`` (``a_l`` the share of
sub-step ``s`` after ``t_a``), booked at two levels in its sub-step the same way, so a DER
that learns of its dispatch at ``t_a`` delivers ``C_l·(t1 − t_a)`` MW·s of it, and the grid
sees nothing of it before ``t_a``. The step's mean contracted power
(:attr:`Execution.contract_mean_mw`) is what settlement pays for, pro rata.

Under a finite ramp limit (:func:`_execute_ramped`) the power instead *ramps* sub-step by
sub-step from the previous step's last sub-step, at most ``ramp·physics_dt_s`` away from
the baseline per sub-step (returning towards it at once, as
:func:`~gridswarm_env.kernel.ramp_interval`): a contract or an activated reserve is
reached at the DER's rate, whatever ``dt_s``. The lag is not a clamp and is neither paid
nor penalised; the energy is booked per sub-step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from gridswarm_env.fleet import (
    ONE,
    ZERO,
    FleetState,
    energy_change_mwh,
    fast_clip,
    fast_count_nonzero,
    scalar_array,
)
from gridswarm_env.kernel import Kernel, ramp_interval

#: a cut of the plan above this counts as clamped, MW (:attr:`Execution.clamped`)
_CLAMPED_MW = scalar_array(1e-9)


class Execution(NamedTuple):
    """What one step executed, per agent (shape ``(n,)`` unless noted). Immutable; a named
    tuple rather than a frozen dataclass, built in a third of the time every step."""

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
    # under a finite ramp limit only (None otherwise; see _execute_ramped):
    p_path_mw: np.ndarray | None = None            # (n, n_substeps) executed power
    contract_followable_mw: np.ndarray | None = None   # contracts less their ramp lag
    plan_end_mw: np.ndarray | None = None          # the plan q's last sub-step
    # when the power varies inside the step (a ramp, or a reserve activation), None
    # otherwise (the power is p_mean_mw throughout): the (n, n_substeps) power of each
    # sub-step, the mean the frequency integrated (p_total_sub_mw is its column sums), and
    # the activation sub-steps booked at two levels (module docstring), as (agents,
    # sub-steps, level before, level after, share after); what the post-step energy check
    # (kernel.energy_mismatch) recomputes the stored energy from
    p_sub_mw: np.ndarray | None = None
    split_levels: tuple[np.ndarray, ...] | None = None
    # with contracts joined inside the step (execute's ``joined``), None otherwise: the
    # mean contracted energy power over the step, Σ on-time C + Σ joined C·(share after t_a)
    contract_mean_mw: np.ndarray | None = None


def activation_share(activation_s: np.ndarray, t0_s: float, n_substeps: int,
                     physics_dt_s: float) -> np.ndarray:
    """``(n, n_substeps)`` share of each sub-step after each agent's activation time."""
    starts = t0_s + physics_dt_s * np.arange(n_substeps)
    return np.clip((starts[None, :] + physics_dt_s - activation_s[:, None]) / physics_dt_s,
                   0.0, 1.0)


def _reserve_profile(reserve_mw: np.ndarray, first_share: np.ndarray,
                     late_reserve: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                     share_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``(n, n_substeps)`` reserve MW acting in each sub-step, from ``first_share``, the
    ``(n, n_substeps)`` share of each sub-step after each agent's first activation, and
    ``share_of(times)``, the same for the ``late_reserve`` rows' times (see
    :func:`execute`)."""
    if late_reserve is None:
        return reserve_mw[:, None] * first_share
    owner, late_mw, late_s = late_reserve
    first_mw = reserve_mw.copy()
    np.subtract.at(first_mw, owner, late_mw)
    reserve_sub = first_mw[:, None] * first_share
    np.add.at(reserve_sub, owner, late_mw[:, None] * share_of(late_s))
    return reserve_sub


def _contract_profile(contract_mw: np.ndarray,
                      joined: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                      share_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Contracted energy power per sub-step: ``contract_mw[:, None]`` (acting the whole
    step), plus each ``joined`` row ``(owner, MW, delivery s)`` times ``share_of(its
    delivery times)``, the ``(rows, n_substeps)`` share of each sub-step after it (see
    :func:`execute`)."""
    if joined is None:
        return contract_mw[:, None]
    owner, joined_mw, joined_s = joined
    sub = share_of(joined_s)
    sub *= joined_mw[:, None]
    profile = np.repeat(contract_mw[:, None], sub.shape[1], axis=1)
    np.add.at(profile, owner, sub)
    return profile


def _planned_profiles(contract_mw: np.ndarray, joined, reserve_mw: np.ndarray,
                      activation_s: np.ndarray, late_reserve, t0_s: float, n_substeps: int,
                      physics_dt_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(share, reserve_sub, contract_sub)``, ``(n, n_substeps)`` each (``contract_sub``
    ``(n, 1)`` without ``joined``): the activated share of each agent's reserve, the
    reserve MW acting in each sub-step (:func:`execute`'s ``late_reserve`` rows from their
    own times) and the contracted energy MW acting in each (:func:`_contract_profile`,
    ``joined`` rows from their deliveries); the plan is their sum."""
    def share_of(times: np.ndarray) -> np.ndarray:
        return activation_share(times, t0_s, n_substeps, physics_dt_s)

    share = share_of(activation_s)
    reserve_sub = _reserve_profile(reserve_mw, share, late_reserve, share_of)
    if late_reserve is not None:
        owner = late_reserve[0]
        held = reserve_mw[owner, None]   # the holders' rows: activated share of it
        share[owner] = np.divide(reserve_sub[owner], held, out=share[owner], where=held > 0)
    return share, reserve_sub, _contract_profile(contract_mw, joined, share_of)


def _split_activation_substeps(fleet: FleetState, c, p: np.ndarray, net: np.ndarray,
                               planned: np.ndarray, contract_mw: np.ndarray,
                               reserve_mw: np.ndarray, activation_s: np.ndarray,
                               late_reserve, base: np.ndarray, p_lo: np.ndarray,
                               p_hi: np.ndarray, t0_s: float, n_substeps: int,
                               physics_dt_s: float, joined=None
                               ) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """The activation sub-steps as two levels (module docstring), where that differs from
    their mean: a level the clip bites, or net injections of opposite signs. A contract
    ``joined`` inside a sub-step (:func:`execute`) is such a change of level too; where it
    and a reserve activation of the other sign share one sub-step, no single switching
    time gives their unclipped mean, and the sub-step's power is the two levels' mean at
    the nearest one (what its energy is booked from).

    Writes those entries' mean into ``p`` and ``net`` (in place) and returns
    ``(agents, correction, levels)``: the stored-energy change, MWh, to add to each such
    agent's (one entry per sub-step) for booking the two levels instead of the mean, and
    the levels themselves, ``(agents, sub-steps, level before, level after, share after)``
    (:attr:`Execution.split_levels`); ``None`` when there is no such entry (the usual case:
    ``p`` and ``net`` untouched)."""
    def level(at_start: bool) -> np.ndarray:
        """Planned power at each sub-step's start (``at_start``) or end: the reserve
        activated by then acts in full."""
        def acting(times: np.ndarray) -> np.ndarray:
            share = activation_share(times, t0_s, n_substeps, physics_dt_s)
            return 1.0 * (share >= 1.0 if at_start else share > 0.0)
        return _contract_profile(contract_mw, joined, acting) + _reserve_profile(
            reserve_mw, acting(activation_s), late_reserve, acting)

    start, end = level(True), level(False)
    split = start != end                      # some reserve activates inside the sub-step
    if not fast_count_nonzero(split):
        return None
    agents, subs = split.nonzero()
    lo, hi = p_lo[agents], p_hi[agents]
    s0, s1 = start[agents, subs], end[agents, subs]
    p0, p1 = fast_clip(s0, lo, hi), fast_clip(s1, lo, hi)
    net0, net1 = base[agents] + p0, base[agents] + p1
    clipped = (p0 != s0) | (p1 != s1)
    flips = ((net0 < 0) & (net1 > 0)) | ((net0 > 0) & (net1 < 0))
    keep = clipped | flips
    if not fast_count_nonzero(keep):
        return None
    agents, subs, clipped = agents[keep], subs[keep], clipped[keep]
    p0, p1, net0, net1 = p0[keep], p1[keep], net0[keep], net1[keep]
    # the share of the sub-step after the activation: the weight of the unclipped mean
    after = (planned[agents, subs] - s0[keep]) / (s1[keep] - s0[keep])
    if joined is not None:   # steps of both signs: the mean may lie outside the levels
        clipped |= (after < 0.0) | (after > 1.0)
    after = np.clip(after, 0.0, 1.0)
    mean = p0 + after * (p1 - p0)
    p[agents[clipped], subs[clipped]] = mean[clipped]
    net[agents[clipped], subs[clipped]] = base[agents[clipped]] + mean[clipped]
    # stored-energy change of one sub-step at a constant net, for each entry's agent:
    # row r of an (m, n) array holds each agent's r-th entry (``agents`` is sorted), so m
    # is the most entries one agent has (its activations), not the number of entries
    # (an (entries, n) array was quadratic in the fleet: 159 MB at 4 000 agents)
    rank = np.arange(agents.size) - np.searchsorted(agents, agents)
    n_rows = int(rank.max()) + 1

    def stored(net_mw: np.ndarray) -> np.ndarray:
        one = np.zeros((n_rows, fleet.n_agents))
        one[rank, agents] = net_mw
        return energy_change_mwh(fleet, one, physics_dt_s / 3600.0, c)[rank, agents]

    correction = (1.0 - after) * stored(net0) + after * stored(net1)
    correction -= stored(net[agents, subs])
    return agents, correction, (agents, subs, p0, p1, after)


def _execute_ramped(fleet: FleetState, c, kernel: Kernel, base: np.ndarray,
                    p_lo: np.ndarray, p_hi: np.ndarray, contract_mw: np.ndarray,
                    reserve_mw: np.ndarray, activation_s: np.ndarray, p_start_mw: np.ndarray,
                    q_start_mw: np.ndarray, late_reserve, t0_s: float, n_substeps: int,
                    physics_dt_s: float, joined=None) -> Execution:
    """One step under a finite ramp limit ``r`` (MW/s): the power ramps sub-step by
    sub-step, ``R(y) = ramp_interval(y, r·physics_dt)``::

        q(s) = clip(planned(s), R(q(s−1)))                 ramp-followable plan
        x(s) = clip(clip(q(s), p_lo, p_hi), R(x(s−1)))     executed

    from the previous step's last sub-step, ``x(−1) = p_start_mw`` and ``q(−1) =
    q_start_mw`` (:func:`~gridswarm_env.kernel.ramp_interval`: moving away from the
    baseline at most ``r`` MW/s, returning towards it at once), so a contract or an
    activated reserve is reached at ``r`` MW/s, not at once.

    The plan ``q`` ramps on its own, across steps too: a DER held at a physical bound
    (its state of charge, its available sun) is not excused the rest of its contract as
    ramp lag, in the first step or any later one: the bounds' cut ``q − clip(q, p_lo,
    p_hi)`` is the physical guard's shortfall, penalised as without a ramp. When the bound
    relaxes, ``x`` ramps back towards ``q`` at ``r``, and that climb, ``clip(q, p_lo,
    p_hi) − x``, is ramp lag like any other. Where ``x`` follows ``q`` (no clamp) the
    second clip changes nothing. ``planned_mean_mw`` is the mean of what the DER is held
    to, ``x`` plus the bounds' cut (``q`` where nothing was cut): the ramp lag ``planned −
    that`` is not a shortfall (no clamp, no penalty, nothing paid for it); ``clamped``
    counts only the physical guard (a cut above 1e-9 MW). ``contract_followable_mw`` is
    each contract less the lag that falls on it: the lag counts against the activated
    reserve first (the newer change; reserve is paid for capacity, not energy), what
    exceeds it against the energy contract, which is paid for what it delivered. Stored
    energy is booked per sub-step at each sub-step's net power; an activation is not
    split into two levels (the power ramps inside the sub-step). A contract ``joined``
    inside the step (:func:`execute`) is part of the plan from its delivery; the lag is
    then judged against the step's mean contracted power ``C̄`` (``contract_mw`` plus the
    joined contracts' share of the step), and ``contract_followable_mw`` is ``C̄`` less
    its part of the lag.
    """
    share, reserve_sub, contract_sub = _planned_profiles(
        contract_mw, joined, reserve_mw, activation_s, late_reserve, t0_s, n_substeps,
        physics_dt_s)
    contract_mean = None
    if joined is not None:
        contract_mw = contract_mean = contract_sub.mean(axis=1)
    planned = contract_sub + reserve_sub
    sub_ramp = kernel.arrays.ramp_mw_per_s * physics_dt_s
    q = np.empty_like(planned)
    p = np.empty_like(planned)
    cut = np.empty_like(planned)    # the physical bounds' cut of the plan, q − clip(q)
    sub_h = physics_dt_s / 3600.0
    qs, x = q_start_mw, p_start_mw
    delta = None
    for s in range(n_substeps):   # loop over sub-steps, vectorized over agents
        r_lo, r_hi = ramp_interval(qs, sub_ramp)
        qs = fast_clip(planned[:, s], r_lo, r_hi)
        q[:, s] = qs
        y = fast_clip(qs, p_lo, p_hi)
        np.subtract(qs, y, out=cut[:, s])
        r_lo, r_hi = ramp_interval(x, sub_ramp)
        x = fast_clip(y, r_lo, r_hi)
        p[:, s] = x
        d = energy_change_mwh(fleet, base + x, sub_h, c)
        delta = d if delta is None else delta + d
    net = base[:, None] + p
    held = p + cut   # what the DER is held to: its power plus what the bounds cut
    p_mean, q_mean = p.mean(axis=1), held.mean(axis=1)
    lag = planned.mean(axis=1) - q_mean
    res = reserve_sub.mean(axis=1)
    lag_res = np.where(lag * res > 0.0, np.copysign(np.minimum(np.abs(lag), np.abs(res)), res),
                       0.0)
    lag_c = np.copysign(1.0, contract_mw) * (lag - lag_res)   # in the contract's direction
    followable = np.copysign(np.maximum(np.abs(contract_mw) - np.maximum(lag_c, 0.0), 0.0),
                             contract_mw)
    return Execution(
        p_mean_mw=p_mean, planned_mean_mw=q_mean, p_total_sub_mw=p.sum(axis=0),
        net_min_mw=net.min(axis=1), net_max_mw=net.max(axis=1), energy_delta_mwh=delta,
        clamped=(np.abs(cut) > _CLAMPED_MW).any(axis=1), reserve_share=share.mean(axis=1),
        baseline_mw=base, p_mean_sum_mw=float(np.add.reduce(p_mean)), p_path_mw=p,
        contract_followable_mw=followable, plan_end_mw=q[:, -1].copy(), p_sub_mw=p,
        contract_mean_mw=contract_mean)


def _followed_baseline(fleet: FleetState, kernel: Kernel, c, baseline_mw: np.ndarray,
                       dt_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(b, p_lo, p_hi)``: the baseline each agent follows over the step (module
    docstring: available PV for solar, ``baseline_mw`` otherwise, inside the physical
    bounds of its actual state, :meth:`Kernel.execution_bounds`) and the balancing power
    those bounds allow, ``[net_lo − b, net_hi − b]``."""
    lo_net, hi_net = kernel.execution_bounds(fleet, dt_s / 3600.0)
    base = baseline_mw.copy()
    base[c.solar] = fleet.solar_available_mw[c.solar]
    base = fast_clip(base, lo_net, hi_net, out=base)
    return base, lo_net - base, hi_net - base


def balancing_bounds(fleet: FleetState, kernel: Kernel, baseline_mw: np.ndarray,
                     dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(p_lo, p_hi)``, (n,) MW each: the balancing power :func:`execute` lets each
    agent execute this step from the fleet's present state (its clip bounds; the
    activated reserve of a holder whose bound cuts it is not delivered)."""
    _base, p_lo, p_hi = _followed_baseline(fleet, kernel, kernel.fleet_constants(fleet),
                                           baseline_mw, dt_s)
    return p_lo, p_hi


def execute(fleet: FleetState, kernel: Kernel, *, baseline_mw: np.ndarray,
            contract_mw: np.ndarray, reserve_mw: np.ndarray, activation_s: np.ndarray,
            t0_s: float, dt_s: float, n_substeps: int, physics_dt_s: float,
            p_prev_mw: np.ndarray | None = None,
            late_reserve: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
            p_start_mw: np.ndarray | None = None,
            q_start_mw: np.ndarray | None = None,
            joined: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Execution:
    """Execute one step (module equations). Does not modify ``fleet``.

    With ``p_prev_mw`` (last step's executed balancing power) and a finite ramp limit the
    power follows the ramp sub-step by sub-step from ``p_start_mw`` (the last sub-step's
    power; ``p_prev_mw`` when None), its plan from ``q_start_mw`` (the last step's
    ``plan_end_mw``; ``p_start_mw`` when None): :func:`_execute_ramped`.

    ``reserve_mw[j]`` acts from ``activation_s[j]``, except the rows of ``late_reserve``
    ``(owner, MW, activation s)``: reserve included in ``reserve_mw[owner]`` that its
    holder activated later in this step (a contract that reached it after its first),
    which acts from its own time, ``R_j·a_j(s) = (R_j − Σ_late MW)·a(s; activation_s[j])
    + Σ_late MW·a(s; t_late)``.

    ``contract_mw[j]`` acts the whole step; ``joined`` rows ``(owner, MW, delivery s)`` are
    energy contracts for this step's window that reached their holder after it began
    (delivery in ``(t0_s, t0_s + dt_s)``), each acting from its delivery until the step's
    end, ``C_l·a(s; t_l)`` (module docstring); :attr:`Execution.contract_mean_mw` is then
    the step's mean contracted power.
    """
    c = kernel.fleet_constants(fleet)
    base, p_lo, p_hi = _followed_baseline(fleet, kernel, c, baseline_mw, dt_s)
    if p_prev_mw is not None and kernel.has_ramp:
        x0 = p_prev_mw if p_start_mw is None else p_start_mw
        return _execute_ramped(
            fleet, c, kernel, base, p_lo, p_hi, contract_mw, reserve_mw, activation_s,
            x0, x0 if q_start_mw is None else q_start_mw, late_reserve, t0_s,
            n_substeps, physics_dt_s, joined)
    t1_s = t0_s + dt_s
    in_step = activation_s < t1_s
    # the usual step: no reserve activated yet (activation_s >= t1 > t0 everywhere)
    activated = bool(fast_count_nonzero(in_step))
    if activated:
        in_step &= reserve_mw > ZERO
    if late_reserve is not None or joined is not None or (
            activated and fast_count_nonzero(in_step)
            and fast_count_nonzero(activation_s[in_step] > t0_s)):
        share, reserve_sub, contract_sub = _planned_profiles(
            contract_mw, joined, reserve_mw, activation_s, late_reserve, t0_s, n_substeps,
            physics_dt_s)
        planned = contract_sub + reserve_sub
        p = fast_clip(planned, p_lo[:, None], p_hi[:, None])
        net = base[:, None] + p
        fix = _split_activation_substeps(fleet, c, p, net, planned, contract_mw, reserve_mw,
                                         activation_s, late_reserve, base, p_lo, p_hi,
                                         t0_s, n_substeps, physics_dt_s, joined)
        # energy per sub-step from its mean net power; the activation sub-steps that
        # need it are then corrected to their two levels (module docstring)
        sub_h = physics_dt_s / 3600.0
        delta = energy_change_mwh(fleet, net[:, 0], sub_h, c)
        for s in range(1, n_substeps):   # loop over sub-steps (20), vectorized over agents
            delta = delta + energy_change_mwh(fleet, net[:, s], sub_h, c)
        levels = None
        if fix is not None:
            agents, correction, levels = fix
            np.add.at(delta, agents, correction)
        p_mean = p.mean(axis=1)
        return Execution(
            p_mean_mw=p_mean, planned_mean_mw=planned.mean(axis=1),
            p_total_sub_mw=p.sum(axis=0), net_min_mw=net.min(axis=1),
            net_max_mw=net.max(axis=1), energy_delta_mwh=delta,
            clamped=(np.abs(p - planned) > _CLAMPED_MW).any(axis=1),
            reserve_share=share.mean(axis=1), baseline_mw=base,
            p_mean_sum_mw=float(np.add.reduce(p_mean)), p_sub_mw=p, split_levels=levels,
            contract_mean_mw=None if joined is None else contract_sub.mean(axis=1))
    share = np.where(activation_s <= t0_s, ONE, ZERO) if activated else np.zeros(
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
        energy_delta_mwh=energy_change_mwh(fleet, net, dt_s / 3600.0, c),
        clamped=np.abs(p - planned) > _CLAMPED_MW, reserve_share=share, baseline_mw=base)
