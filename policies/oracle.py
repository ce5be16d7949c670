"""``oracle``: the perfect-foresight optimum of the balancing problem, driven through the market.

Description
-----------
At reset the oracle solves one linear program (scipy's HiGHS) over the whole episode
whose objective is exactly ``system_cost`` (:mod:`gridswarm_env.metrics`), then, step
by step, *bids* its plan into the same environment: every planned MW goes through the
bus, the merit-order clearing, signed contracts, the kernel and the dispatcher like
anyone's, so its KPIs are measured, not assumed. It re-plans from the measured state
when the environment deviates from the plan (see *Re-planning*).

What the oracle knows that agents do not
----------------------------------------
* the whole future balancing requirement ``raw.requirement_sub_mw`` (noise-free shortage
  plus lost generation), hence every future operator request, the contingency's time and
  size, and which rounds are reserve rounds (before the trip, those until the reserve
  target is met or a reserve round held clears short, and after that those where no
  energy is needed: it takes its own reserve round to meet the target);
* the exact future solar availability and forecasts of every plant: it replays the
  environment's fleet RNG (a copy of ``raw.rng``; the environment draws nothing else
  from it) through :func:`gridswarm_env.fleet.update_solar`;
* every agent's exact state and parameters (``raw.fleet``: stored energy, capacity,
  efficiencies, EV departure times and departure energy) and the kernel's limits
  (``raw.kernel.arrays``), and the rules of the market and of reserve activation.

It does *not* know the bus latencies (it assumes the configured mean latency for the
reserve activation time until the emergency broadcast has arrived) nor the load noise ε
(which does not enter ``system_cost``).

Linear program
--------------
Steps ``k = 0..K−1`` of the remaining episode, ``h = dt_s/3600``, agents ``i``.
Balancing power ``p_ik = g_ik − w_ik`` (``g`` up = more injection, ``w`` down), stored
energy ``E_ik`` after step ``k``, reserve ``r_i`` (emergency only), unserved power
``u_k`` and EV unmet departure energy ``m_i``::

    min  Σ_ik h·(c↑_i g_ik + c↓_i w_ik) + Σ_k VOLL·h·u_k + Σ_i c_unmet·m_i
    s.t. E_ik = E_i,k−1 + h·(α_i w_ik − β_i g_ik) + γ_ik          (SoC dynamics)
         E_min_ik <= E_ik <= E_max_ik,  0 <= g <= g_max,  0 <= w <= w_max
         u_k >= σ_k (R_k − Σ_i p_ik),  u_k >= 0,  σ_k = sign(R_k) (+1 at 0)
         m_i >= D_i − E_i,d(i),  m_i >= 0                           (EV departures)
         e_ik = p_ik − a_k r_i;  d_k e_ik >= 0;  d_k Σ_i e_ik <= d_k A_k   (market)
         A_k = A0_k − Σ_i r_i  after the emergency broadcast (reserve coupling)
         p_ik + (1 − a_k) r_i <= g_max_ik  where d_k = +1 (held reserve stays on top)
         Σ_i r_i <= reserve target;  |p_ik − p_i,k−1| <= ramp_i·dt_s

plus, where a ramp limit holds, a tie-break ``ε·h·Σ z_ik`` with ``z_ik >= p_ik − p_i,k−1``
(:data:`RAMP_TIEBREAK_PER_MWH`: keeps the plan from re-assigning like DERs from one
re-plan to the next, each change lagging inside the step; not in the reported cost).

* batteries: ``c↑ = c_bat + v/η_d``, ``c↓ = c_bat − v·η_c`` (wear, and the stored
  energy at its value ``v``: :func:`true_cost_per_mwh`), ``α = η_c``, ``β = 1/η_d``,
  ``γ = 0`` (a split charge/discharge keeps the one-way efficiencies linear; at an
  optimum one is 0);
* solar: ``g = 0``, ``w`` = curtailment <= min(available, forecast, export cap),
  ``c↓ = c_curt``;
* EVs: ``p`` is relative to the kernel's baseline charging path ``b_ik`` (simulated),
  net = b + p <= 0; ``c↑ = c_ev`` (deferral), ``c↓ = 0`` (extra charging),
  ``α = β = η_c``, ``γ = −η_c·h·b``; the kernel's departure rule (the departure energy
  stays reachable at full charging) is a lower bound on ``E``; an EV that cannot
  reach it charges flat out (the kernel forces it), so it has no flexibility;
* market rules: the energy part ``e`` of a step is the contract of the round bid one
  step earlier (the one-step delay); ``d_k`` is the direction of that round (+1
  shortage, −1 surplus, 0 no energy round: step 0, reserve rounds, requests inside the
  deadband); accepted power never opposes nor exceeds the request. ``a_k`` is the
  share of step ``k`` after reserve activation. The first step of a re-plan is already
  contracted and is fixed.
* power bounds are rounded down to multiples of the bid power step (the action
  space's levels), so the plan is biddable; ramp limits are not (the mask allows the
  first level past a ramp bound, bid as the bound: :meth:`Kernel.power_mask`), nor is a
  reserve's ramp cap (``ramp · MarketConfig.reserve_full_activation_s``, the kernel's
  reserve bound), nor, for an agent under a cap below its rating or a ramp limit
  (:attr:`Kernel.limit_edge_agents`), a bound a power limit sets, which the mask
  passes the same way: a battery's caps, an EV's deferrable baseline and its charge
  cap above it, a PV plant's curtailment (rounded down, a battery's 2.0 MW cap in
  ``price_spike`` was planned as 1.72-2.00 MW and the oracle cost 772 $ against the
  heuristic's 512 $: seeds 0-4, 100 agents; now 498 $). An EV's reserve is at most its
  baseline under its charge cap, a PV plant's curtailment at most its export cap.
  The plan moves power in steps; under a ramp limit dispatch ramps it inside the step,
  so the executed power lags the plan by up to half a step's ramp.

Scale: one variable block per agent and step, no aggregation, built as sparse COO
arrays with NumPy (no per-agent Python loop): 100 agents x 300 steps is 90 500
variables, 30 500 rows and 252 000 non-zeros, built in ~0.1 s (0.15 s at 300 agents).
Planning time (build + HiGHS solve; the solve is ~97-99 % of it) grows about as
agents^1.6-1.8. Measured on the 2-core VM, price_spike, 300 steps: 1.1 s at 100
agents, 5.9 s at 300, 48 s at 1 000 with the cores idle, up to ~5x that with them
shared. (These are the project's planning-time figures; the README and ``demo.py``
refer here rather than repeat them.) So the oracle is a per-episode yardstick for
evaluation-sized fleets, not for 10 000 agents. ``demo.py`` prints a status line
before it plans.

Driving the environment
-----------------------
At step ``j`` the round being bid delivers in step ``j + 1``: each agent with planned
energy ``e_i,j+1`` in the round's direction bids it, rounded away from zero to a
power level inside its mask, at the price level that ranks its true marginal cost
first (cheapest kind first: lowest price in a shortage, highest in a surplus), so
the clearing reproduces the plan's merit order; the marginal bid is partly accepted.
In a reserve round it bids the reserve it plans to activate. Every other agent able to
move in that direction bids its feasible capacity at a *backup* price tier behind all
planned bids (in a reserve round less the most the plan sells upward from there on:
reserve held stays on top of its holder's energy bids, and the operator buys offers up
to its target): it is accepted only if a planned bid fell short (a clipped contract, a
request the plan did not foresee), so the oracle never does worse than its plan for
want of offers.

Re-planning
-----------
The oracle re-solves from the measured state (remaining steps, first step fixed) when
(a) the emergency broadcast has arrived (activation times become known), (b) the
request of the round being bid differs from the plan's by more than
``replan_request_mw``, or (c) some storage agent's energy drifted from the plan by more
than ``replan_drift`` of its capacity (the merit order shares a tier among agents in
index order, not exactly as planned).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from gridswarm_env.config import CostConfig, check_non_negative, check_positive
from gridswarm_env.fleet import KIND_BATTERY, KIND_EV, KIND_SOLAR, update_solar
from gridswarm_env.scenarios import PRODUCT_RESERVE
from policies.base import nearest_allowed, split_mask

#: ``round_direction`` code of a step with no market rule (already contracted).
FREE = 2
_TOL_MW = 1e-6
#: $/MWh charged in the LP on each MW a ramp-limited DER's power rises between steps,
#: times ``h``: a tie-break, far below every true cost (>= 27.5 $/MWh), not part of the
#: plan's reported cost. The costs are per MWh, so the LP is indifferent to *which* of
#: several like DERs covers a step; without it a re-plan re-assigned ~30 DERs a step
#: (15 MW of changes, ``emergency``, 1 MW/s on batteries and EVs), and under a ramp each
#: change lags inside the step: ~3.5 MW short in every step after the trip. Only rises
#: are charged (any re-assignment back and forth holds one): half the rows of charging
#: both directions, and HiGHS solved it ~5x faster (``price_spike`` at ``dt_s`` 0.5,
#: 600 steps: 15.6 s against 73 s).
RAMP_TIEBREAK_PER_MWH = 0.1


@dataclass(frozen=True)
class BalancingProblem:
    """One instance of the balancing LP (see the module docstring for the equations).

    Shapes: ``n`` agents, ``K`` steps. Energies are *after* each step.

    :param dt_s: step length, s.
    :param costs: cost coefficients (VOLL and EV unmet departure are read from here).
    :param requirement_mw: (K,) mean balancing requirement R_k (+ shortage).
    :param round_direction: (K,) int: +1 / −1 direction of the energy round delivering in
        step k, 0 = no energy round (balancing power only from activated reserve),
        :data:`FREE` = no market rule (an already contracted step).
    :param request_mw: (K,) signed request A0_k of that round (before reserve coupling).
    :param reserve_coupled: (K,) bool: the round's request is reduced by the reserve.
    :param reserve_share: (K,) share a_k of step k after reserve activation, in [0, 1].
    :param up_max_mw: (n, K) bound on g (more injection).
    :param down_max_mw: (n, K) bound on w (less injection).
    :param up_cost_per_mwh: (n,) true cost of up energy c↑.
    :param down_cost_per_mwh: (n,) true cost of down energy c↓.
    :param energy0_mwh: (n,) stored energy now.
    :param energy_min_mwh: (n, K) lower bound of E after each step.
    :param energy_max_mwh: (n, K) upper bound of E after each step.
    :param charge_gain: (n,) α: MWh stored per MWh of down energy.
    :param discharge_gain: (n,) β: MWh drawn per MWh of up energy.
    :param energy_drift_mwh: (n, K) γ: stored-energy change at p = 0.
    :param reserve_min_mw: (n,) lower bound of r (= max when the reserve is fixed).
    :param reserve_max_mw: (n,) upper bound of r (0: no reserve).
    :param reserve_target_mw: cap on Σ r.
    :param departure_step: (n,) int: step after which the EV departs (−1: none).
    :param departure_energy_mwh: (n,) energy the EV should hold when it departs.
    :param ramp_mw: (n,) cap on |p_k − p_k−1| (inf: none).
    :param last_p_mw: (n,) balancing power executed before step 0.
    :param first_step_p_mw: (n,) fixed balancing power of step 0, or None.
    """

    dt_s: float
    costs: CostConfig
    requirement_mw: np.ndarray
    round_direction: np.ndarray
    request_mw: np.ndarray
    reserve_coupled: np.ndarray
    reserve_share: np.ndarray
    up_max_mw: np.ndarray
    down_max_mw: np.ndarray
    up_cost_per_mwh: np.ndarray
    down_cost_per_mwh: np.ndarray
    energy0_mwh: np.ndarray
    energy_min_mwh: np.ndarray
    energy_max_mwh: np.ndarray
    charge_gain: np.ndarray
    discharge_gain: np.ndarray
    energy_drift_mwh: np.ndarray
    reserve_min_mw: np.ndarray
    reserve_max_mw: np.ndarray
    reserve_target_mw: float
    departure_step: np.ndarray
    departure_energy_mwh: np.ndarray
    ramp_mw: np.ndarray
    last_p_mw: np.ndarray
    first_step_p_mw: np.ndarray | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_positive(owner, "dt_s", self.dt_s)
        check_non_negative(owner, "reserve_target_mw", self.reserve_target_mw)
        n, k = self.shape
        per_step = ("requirement_mw", "round_direction", "request_mw", "reserve_coupled",
                    "reserve_share")
        per_agent = ("up_cost_per_mwh", "down_cost_per_mwh", "energy0_mwh", "charge_gain",
                     "discharge_gain", "reserve_min_mw", "reserve_max_mw", "departure_step",
                     "departure_energy_mwh", "ramp_mw", "last_p_mw")
        per_pair = ("up_max_mw", "down_max_mw", "energy_min_mwh", "energy_max_mwh",
                    "energy_drift_mwh")
        for names, shape in ((per_step, (k,)), (per_agent, (n,)), (per_pair, (n, k))):
            for name in names:
                got = np.shape(getattr(self, name))
                if got != shape:
                    raise ValueError(f"{owner}.{name} has shape {got}: must be {shape} "
                                     f"(n_agents={n}, n_steps={k})")
        if self.first_step_p_mw is not None and np.shape(self.first_step_p_mw) != (n,):
            raise ValueError(f"{owner}.first_step_p_mw has shape "
                             f"{np.shape(self.first_step_p_mw)}: must be ({n},) or None")
        bad = ~np.isin(self.round_direction, (-1, 0, 1, FREE))
        if bad.any():
            raise ValueError(f"{owner}.round_direction contains {self.round_direction[bad][0]!r}: "
                             f"allowed -1, 0, +1 and FREE ({FREE})")
        share = np.asarray(self.reserve_share)
        if (share < 0).any() or (share > 1).any():
            raise ValueError(f"{owner}.reserve_share must lie in [0, 1]")
        for name in ("up_max_mw", "down_max_mw", "reserve_max_mw", "reserve_min_mw"):
            if (np.asarray(getattr(self, name)) < 0).any():
                raise ValueError(f"{owner}.{name} must be >= 0")
        if (np.asarray(self.reserve_min_mw) > np.asarray(self.reserve_max_mw) + 1e-12).any():
            raise ValueError(f"{owner}.reserve_min_mw must be <= reserve_max_mw")

    @property
    def shape(self) -> tuple[int, int]:
        """(n_agents, n_steps)."""
        return int(np.shape(self.up_max_mw)[0]), int(np.shape(self.requirement_mw)[0])


@dataclass(frozen=True)
class BalancingPlan:
    """The LP's optimum.

    :param p_mw: (n, K) balancing power per agent and step.
    :param energy_part_mw: (n, K) the part of ``p`` bought in energy rounds (p − a·r).
    :param reserve_mw: (n,) reserve per agent.
    :param energy_mwh: (n, K) stored energy after each step.
    :param unserved_mw: (K,) unserved power per step.
    :param unmet_mwh: (n,) EV unmet departure energy.
    :param cost: optimal objective, $ (the predicted ``system_cost`` of these steps).
    :param solve_time_s: wall time of HiGHS.
    :param first_step: episode step index of column 0.
    :param request_mw: (K,) the request the plan expects for each step's round (after
        the reserve coupling).
    :param reserve_share: (K,) share of each step after reserve activation (the
        problem's).
    """

    p_mw: np.ndarray
    energy_part_mw: np.ndarray
    reserve_mw: np.ndarray
    energy_mwh: np.ndarray
    unserved_mw: np.ndarray
    unmet_mwh: np.ndarray
    cost: float
    solve_time_s: float
    first_step: int = 0
    request_mw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reserve_share: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class LinearProgram:
    """``min c·x`` s.t. ``A_ub x <= b_ub``, ``A_eq x = b_eq``, ``lb <= x <= ub`` (CSR)."""

    c: np.ndarray
    a_ub: sparse.csr_matrix
    b_ub: np.ndarray
    a_eq: sparse.csr_matrix
    b_eq: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    offsets: dict[str, int]


class _Rows:
    """COO accumulator of constraint rows (vectorized appends)."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.rhs: list[np.ndarray] = []
        self.n = 0

    def add(self, n_rows: int, entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
            rhs: np.ndarray) -> None:
        """Append ``n_rows`` rows; ``entries`` = (local row, column, value) arrays."""
        for r, c, v in entries:
            r, c, v = np.broadcast_arrays(np.asarray(r), np.asarray(c), np.asarray(v, float))
            self.rows.append(r.ravel() + self.n)
            self.cols.append(c.ravel())
            self.vals.append(v.ravel())
        self.rhs.append(np.broadcast_to(np.asarray(rhs, float), (n_rows,)).copy())
        self.n += n_rows

    def matrix(self, n_cols: int) -> tuple[sparse.csr_matrix, np.ndarray]:
        if not self.n:
            return sparse.csr_matrix((0, n_cols)), np.zeros(0)
        m = sparse.coo_matrix((np.concatenate(self.vals),
                               (np.concatenate(self.rows), np.concatenate(self.cols))),
                              shape=(self.n, n_cols))
        return m.tocsr(), np.concatenate(self.rhs)


def build_lp(problem: BalancingProblem) -> LinearProgram:
    """Assemble the sparse LP of ``problem`` (module docstring equations)."""
    pb = problem
    n, k_steps = pb.shape
    h = pb.dt_s / 3600.0
    nk = n * k_steps
    off = {"g": 0, "w": nk, "e": 2 * nk, "u": 3 * nk, "m": 3 * nk + k_steps,
           "r": 3 * nk + k_steps + n}
    ramp = np.asarray(pb.ramp_mw, dtype=float)
    ramped = np.flatnonzero(np.isfinite(ramp))
    # z_ik >= p_ik − p_i,k−1, z >= 0, of the ramp-limited agents (the tie-break's variables)
    off["z"] = off["r"] + n
    n_var = off["z"] + ramped.size * k_steps
    z_idx = off["z"] + np.arange(ramped.size * k_steps).reshape(ramped.size, k_steps)
    agent_step = np.arange(nk).reshape(n, k_steps)      # flat index of (i, k)
    g_idx, w_idx, e_idx = off["g"] + agent_step, off["w"] + agent_step, off["e"] + agent_step
    u_idx = off["u"] + np.arange(k_steps)
    m_idx, r_idx = off["m"] + np.arange(n), off["r"] + np.arange(n)

    lb, ub = np.zeros(n_var), np.full(n_var, np.inf)
    ub[g_idx] = pb.up_max_mw
    ub[w_idx] = pb.down_max_mw
    e_lo = np.minimum(pb.energy_min_mwh, pb.energy_max_mwh)
    lb[e_idx], ub[e_idx] = e_lo, pb.energy_max_mwh
    departs = (pb.departure_step >= 0) & (pb.departure_step < k_steps)
    ub[m_idx] = np.where(departs, np.inf, 0.0)
    lb[r_idx], ub[r_idx] = pb.reserve_min_mw, pb.reserve_max_mw

    direction = np.asarray(pb.round_direction)
    share = np.asarray(pb.reserve_share, dtype=float)
    has_reserve = np.asarray(pb.reserve_max_mw) > 0
    # per-agent market sign: bounds where no reserve is active, rows where it is
    by_rows = has_reserve[:, None] & (share[None, :] > 0) & (direction[None, :] != FREE)
    by_bounds = ~by_rows & (direction[None, :] != FREE)
    no_up = by_bounds & (direction[None, :] <= 0)
    no_down = by_bounds & ((direction[None, :] == 1) | (direction[None, :] == 0))
    ub[g_idx[no_up]] = 0.0
    ub[w_idx[no_down]] = 0.0
    if pb.first_step_p_mw is not None:
        p0 = np.asarray(pb.first_step_p_mw, dtype=float)
        lb[g_idx[:, 0]] = ub[g_idx[:, 0]] = np.maximum(p0, 0.0)
        lb[w_idx[:, 0]] = ub[w_idx[:, 0]] = np.maximum(-p0, 0.0)

    eq, ineq = _Rows(), _Rows()
    # SoC dynamics: E_k − E_{k−1} + hβ g − hα w = γ (+ E0 at k = 0)
    rows = agent_step
    rhs = np.array(pb.energy_drift_mwh, dtype=float, copy=True)
    rhs[:, 0] += pb.energy0_mwh
    entries = [(rows, e_idx, 1.0),
               (rows, g_idx, h * np.asarray(pb.discharge_gain)[:, None]),
               (rows, w_idx, -h * np.asarray(pb.charge_gain)[:, None])]
    if k_steps > 1:
        entries.append((rows[:, 1:], e_idx[:, :-1], -1.0))
    eq.add(nk, entries, rhs.ravel())

    # market sign with activated reserve: e = g − w − a·r
    ai, ak = np.nonzero(by_rows)
    if ai.size:
        local = np.arange(ai.size)
        d = direction[ak]
        expr = [(local, g_idx[ai, ak], 1.0), (local, w_idx[ai, ak], -1.0),
                (local, r_idx[ai], -share[ak])]
        zero = d == 0
        if zero.any():
            sel = np.flatnonzero(zero)
            eq.add(sel.size, [(np.arange(sel.size), c[sel], np.broadcast_to(v, local.shape)[sel])
                              for _, c, v in expr], 0.0)
        if (~zero).any():
            sel = np.flatnonzero(~zero)
            sgn = -d[sel].astype(float)
            ineq.add(sel.size, [(np.arange(sel.size), c[sel],
                                 sgn * np.broadcast_to(v, local.shape)[sel])
                                for _, c, v in expr], 0.0)

    # round totals: d·Σ(g − w) − d·a·Σr + d·coupled·Σr <= d·A0
    steps = np.flatnonzero(np.abs(direction) == 1)
    if steps.size:
        d = direction[steps].astype(float)
        local = np.arange(steps.size)[:, None]
        coupled = np.asarray(pb.reserve_coupled, dtype=float)[steps]
        r_coef = d * (coupled - share[steps])
        ineq.add(steps.size, [
            (local, g_idx[:, steps].T, d[:, None]),
            (local, w_idx[:, steps].T, -d[:, None]),
            (local, r_idx[None, :], np.where(has_reserve[None, :], r_coef[:, None], 0.0))],
            d * np.asarray(pb.request_mw, dtype=float)[steps])
        up_coupled = steps[(np.asarray(pb.reserve_coupled)[steps]) & (d > 0)]
        if up_coupled.size and has_reserve.any():
            cap = float(np.asarray(pb.request_mw)[up_coupled].min())
            ineq.add(1, [(np.zeros(n, int), r_idx, 1.0)], cap)
    if has_reserve.any():
        ineq.add(1, [(np.zeros(n, int), r_idx, 1.0)], pb.reserve_target_mw)
        # a holder's energy bid keeps its whole reserve on top (Kernel.bid_interval:
        # hi = max(hi_net − base − reserve, 0)), so in a shortage round
        # e = p − a·r <= up − r: p + (1 − a)·r <= up (before the trip, a = 0: held reserve
        # is room the holder cannot sell as energy)
        hi, hk = np.nonzero(has_reserve[:, None] & (direction[None, :] == 1)
                            & (share[None, :] < 1.0))
        if hi.size:
            local = np.arange(hi.size)
            ineq.add(hi.size, [(local, g_idx[hi, hk], 1.0), (local, w_idx[hi, hk], -1.0),
                               (local, r_idx[hi], 1.0 - share[hk])],
                     np.asarray(pb.up_max_mw, dtype=float)[hi, hk])

    # unserved: −σ Σ(g − w) − u <= −σ R
    sigma = np.where(np.asarray(pb.requirement_mw) >= 0, 1.0, -1.0)
    local = np.arange(k_steps)[None, :]
    ineq.add(k_steps, [(local, g_idx, -sigma[None, :]), (local, w_idx, sigma[None, :]),
                       (np.arange(k_steps), u_idx, -1.0)],
             -sigma * np.asarray(pb.requirement_mw, dtype=float))

    # EV departures: −E_i,d − m_i <= −D_i
    dep = np.flatnonzero(departs)
    if dep.size:
        local = np.arange(dep.size)
        ineq.add(dep.size, [(local, e_idx[dep, pb.departure_step[dep]], -1.0),
                            (local, m_idx[dep], -1.0)],
                 -np.asarray(pb.departure_energy_mwh, dtype=float)[dep])

    # ramp limits: ±(p_k − p_{k−1}) <= ramp (p_{−1} = last_p; skipped for a fixed step 0),
    # and the tie-break's (p_k − p_{k−1}) − z_k <= 0
    if ramped.size:
        first = 1 if pb.first_step_p_mw is not None else 0
        for sign in (1.0, -1.0):
            ks = np.arange(max(first, 1), k_steps)
            grid_i, grid_k = np.meshgrid(ramped, ks, indexing="ij")
            local = np.arange(grid_i.size).reshape(grid_i.shape)
            if grid_i.size:
                change = [(local, g_idx[grid_i, grid_k], sign),
                          (local, w_idx[grid_i, grid_k], -sign),
                          (local, g_idx[grid_i, grid_k - 1], -sign),
                          (local, w_idx[grid_i, grid_k - 1], sign)]
                ineq.add(grid_i.size, change, ramp[grid_i].ravel())
                if sign > 0:
                    ineq.add(grid_i.size, [*change, (local, z_idx[:, ks], -1.0)], 0.0)
            if first == 0:
                local0 = np.arange(ramped.size)
                change0 = [(local0, g_idx[ramped, 0], sign), (local0, w_idx[ramped, 0], -sign)]
                last = sign * np.asarray(pb.last_p_mw)[ramped]
                ineq.add(ramped.size, change0, ramp[ramped] + last)
                if sign > 0:
                    ineq.add(ramped.size, [*change0, (local0, z_idx[:, 0], -1.0)], last)

    c = np.zeros(n_var)
    c[g_idx] = h * np.asarray(pb.up_cost_per_mwh, dtype=float)[:, None]
    c[w_idx] = h * np.asarray(pb.down_cost_per_mwh, dtype=float)[:, None]
    c[u_idx] = h * pb.costs.voll_per_mwh
    c[m_idx] = pb.costs.ev_unmet_departure_per_mwh
    c[z_idx] = h * RAMP_TIEBREAK_PER_MWH
    a_eq, b_eq = eq.matrix(n_var)
    a_ub, b_ub = ineq.matrix(n_var)
    return LinearProgram(c=c, a_ub=a_ub, b_ub=b_ub, a_eq=a_eq, b_eq=b_eq, lb=lb, ub=ub,
                         offsets=off)


def solve_balancing(problem: BalancingProblem, first_step: int = 0) -> BalancingPlan:
    """Solve the balancing LP with HiGHS.

    :param first_step: episode step index of the problem's step 0 (kept in the plan).
    :raises RuntimeError: if HiGHS reports anything but an optimum.
    """
    lp = build_lp(problem)
    t0 = time.perf_counter()
    res = linprog(lp.c, A_ub=lp.a_ub if lp.a_ub.shape[0] else None,
                  b_ub=lp.b_ub if lp.a_ub.shape[0] else None, A_eq=lp.a_eq, b_eq=lp.b_eq,
                  bounds=np.column_stack([lp.lb, lp.ub]), method="highs")
    elapsed = time.perf_counter() - t0
    if res.status != 0:
        raise RuntimeError(f"oracle LP not solved (HiGHS status {res.status}): {res.message}")
    n, k_steps = problem.shape
    x, off = res.x, lp.offsets
    nk = n * k_steps
    g = x[off["g"]:off["g"] + nk].reshape(n, k_steps)
    w = x[off["w"]:off["w"] + nk].reshape(n, k_steps)
    p = g - w
    r = x[off["r"]:off["r"] + n]
    energy_part = p - np.asarray(problem.reserve_share)[None, :] * r[:, None]
    return BalancingPlan(
        p_mw=p, energy_part_mw=energy_part, reserve_mw=r,
        energy_mwh=x[off["e"]:off["e"] + nk].reshape(n, k_steps),
        unserved_mw=x[off["u"]:off["u"] + k_steps], unmet_mwh=x[off["m"]:off["m"] + n],
        cost=float(res.fun) - float(lp.c[off["z"]:] @ x[off["z"]:]),   # less the tie-break
        solve_time_s=elapsed, first_step=first_step,
        request_mw=np.asarray(problem.request_mw, dtype=float)
        - np.asarray(problem.reserve_coupled, dtype=float) * float(r.sum()),
        reserve_share=np.asarray(problem.reserve_share, dtype=float))


# --------------------------------------------------------------------------- from the env
def true_cost_per_mwh(kind: np.ndarray, eta_charge: np.ndarray, eta_discharge: np.ndarray,
                      costs: CostConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each agent's true cost of up and down balancing energy, $/MWh at the grid, as
    ``system_cost`` counts it (:class:`~gridswarm_env.config.CostConfig`).

    * battery: up ``c_bat + v/η_d`` (wear, and the stored energy the discharge spends),
      down ``c_bat − v·η_c`` (wear, less the stored energy the charge gains);
    * solar: up ``inf`` (it cannot inject more than its available output), down
      ``c_curt``;
    * EV: up ``c_ev`` (deferred charging), down 0 (charging ahead of the baseline).

    :return: ``(up, down)``, each ``(n,)``.
    """
    is_bat = kind == KIND_BATTERY
    bat_up, bat_down = costs.battery_cost_per_mwh(
        eta_charge, np.where(eta_discharge > 0, eta_discharge, 1.0))
    up = np.where(is_bat, bat_up, np.where(kind == KIND_EV, costs.ev_deferral_per_mwh, np.inf))
    down = np.where(is_bat, bat_down,
                    np.where(kind == KIND_SOLAR, costs.solar_curtailment_per_mwh, 0.0))
    return up, down


def _floor_to_step(power_mw: np.ndarray, step_mw: np.ndarray) -> np.ndarray:
    """Round a bound down to a multiple of the agent's power-level step."""
    safe = np.where(step_mw > 0, step_mw, 1.0)
    return np.where(step_mw > 0, np.floor(power_mw / safe + 1e-9) * safe, 0.0)


def _solar_paths(raw, first_step: int, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact future solar availability and the forecast used for each step's bids.

    Replays :func:`update_solar` with a copy of the environment's fleet RNG.
    :returns: (available (n, K), forecast the kernel uses for step k's bids (n, K);
        column 0 of the forecast is the available power, the step being contracted).
    """
    cfg, sc, dt = raw.config, raw.scenario, raw.config.dt_s
    fleet = raw.fleet.copy()
    rng = copy.deepcopy(raw.rng)
    n = fleet.n_agents
    avail = np.zeros((n, n_steps))
    forecast = np.zeros((n, n_steps))
    avail[:, 0] = forecast[:, 0] = fleet.solar_available_mw
    if n_steps > 1:
        forecast[:, 1] = fleet.solar_forecast_mw
    for k in range(1, n_steps):
        t1 = (first_step + k) * dt
        update_solar(fleet, float(sc.irradiance(t1)),
                     float(sc.irradiance(t1 + dt)), cfg.fleet, dt, rng)
        avail[:, k] = fleet.solar_available_mw
        if k + 1 < n_steps:
            forecast[:, k + 1] = fleet.solar_forecast_mw
    return avail, forecast


def _ev_baseline_path(raw, first_step: int, n_steps: int) -> dict[str, np.ndarray]:
    """The kernel's baseline charging path of every EV at p = 0 (vectorized over agents).

    Same rule as :meth:`Kernel.bid_interval`: charge at the baseline rate, faster when
    the departure energy (at full charging) would otherwise become unreachable, flat
    out when it already is; nothing once unplugged or full.
    """
    f, lim = raw.fleet, raw.kernel.arrays
    dt, h = raw.config.dt_s, raw.config.dt_s / 3600.0
    n = f.n_agents
    is_ev = f.kind == KIND_EV
    cap, eta = f.energy_capacity_mwh, f.eta_charge
    energy = f.energy_mwh.copy()
    out = {name: np.zeros((n, n_steps)) for name in ("baseline_mw", "energy_after_mwh",
                                                     "e_req_mwh", "charge_room_mw")}
    out["plugged"] = np.zeros((n, n_steps), dtype=bool)
    out["flexible"] = np.zeros((n, n_steps), dtype=bool)
    out["req_ok"] = np.zeros((n, n_steps), dtype=bool)
    for k in range(n_steps):
        t_start = (first_step + k) * dt
        t_end = t_start + dt
        plugged = is_ev & f.plugged & (f.departure_s > t_start)
        rate = np.where(plugged & (energy < cap), f.ev_baseline_rate_mw, 0.0)
        room_mw = np.maximum(lim.soc_max * cap - energy, 0.0) / (eta * h)
        lo = -np.minimum(lim.max_charge_mw, room_mw)
        # a DER that cannot charge gains nothing, also in an unbounded time (an EV that
        # never leaves, departure inf): 0 MWh, not 0·inf
        after_s = np.where(lim.max_charge_mw > 0, np.maximum(f.departure_s - t_end, 0.0), 0.0)
        e_req = lim.departure_soc * cap - lim.max_charge_mw * eta * after_s / 3600.0
        need = np.maximum(e_req - energy, 0.0) / (eta * h)
        hi = np.minimum(np.maximum(-need, lo), 0.0)
        if first_step == 0 and k == 0:   # the first step follows the plain schedule
            hi = np.zeros(n)
        b = np.where(plugged, np.clip(-rate, lo, hi), 0.0)
        after = energy - b * eta * h
        out["baseline_mw"][:, k] = b
        out["plugged"][:, k] = plugged
        out["flexible"][:, k] = plugged & (b >= -rate - 1e-12)
        out["req_ok"][:, k] = plugged & (after >= e_req - 1e-12)
        out["e_req_mwh"][:, k] = e_req
        out["charge_room_mw"][:, k] = np.where(plugged, -lo, 0.0)
        out["energy_after_mwh"][:, k] = after
        energy = after
    return out


def problem_from_env(raw) -> BalancingProblem:
    """The balancing LP of the remaining episode of ``raw`` from its current state.

    Step 0 of the problem is ``raw.step_index`` (the step about to run, already
    contracted: its balancing power is fixed to the awarded contracts and reserve).
    """
    cfg, sc, f, lim = raw.config, raw.scenario, raw.fleet, raw.kernel.arrays
    c = cfg.costs
    k0, dt = raw.step_index, cfg.dt_s
    h = dt / 3600.0
    n_steps = sc.episode_steps - k0
    if n_steps < 1:
        raise ValueError(f"problem_from_env: the episode has ended (step {k0} of "
                         f"{sc.episode_steps}); reset the environment first")
    n = raw.n_agents
    steps = k0 + np.arange(n_steps)
    is_bat, is_sol, is_ev = f.kind == KIND_BATTERY, f.kind == KIND_SOLAR, f.kind == KIND_EV
    level_step_mw = f.rated_power_mw * float(np.diff(raw.kernel.level_fraction[:2])[0])

    # what the operator will request (same rule as the environment's operator)
    pdt = cfg.grid.physics_dt_s
    ts = steps[:, None] * dt + (np.arange(raw.n_substeps)[None, :] + 0.5) * pdt
    forecast_mw = np.asarray(sc.forecast_shortage_mw(ts)).mean(axis=1)
    requirement = raw.requirement_sub_mw[k0:].mean(axis=1)
    standing = raw.reserve_standing_mw()
    reserve_variable = bool(sc.has_event and sc.reserve_target_mw > 0 and not raw.event_detected
                            and standing.sum() <= 0 and raw.round_product == PRODUCT_RESERVE)
    t_pub = sc.detection_time_s
    direction = np.zeros(n_steps, dtype=np.int64)
    request = np.zeros(n_steps)
    coupled = np.zeros(n_steps, dtype=bool)
    deadband = cfg.market.deadband_mw
    # before the trip is known the operator buys energy once its reserve target is met or
    # its last reserve round cleared short (market.operator_request): after any reserve
    # round held (from round 1 on; the oracle's own is taken to meet the target) a round
    # needing energy buys it
    energy_ok = (sc.reserve_target_mw - float(raw.reserve_awarded_mw.sum()) <= deadband
                 or raw.reserve_short)
    for j, k in enumerate(steps):   # loop over steps (K), not agents
        if j == 0:
            direction[j] = FREE
            continue
        if j == 1:
            reserve_round = raw.round_product == PRODUCT_RESERVE
            a0, is_coupled = float(raw.round_request_mw), False
        else:
            # step k's window is round k - 1's, announced at gate closure of step k - 2
            detected = raw.event_detected or t_pub <= (k - 2) * dt + cfg.market.gate_s
            a0 = float(forecast_mw[j])
            reserve_round = sc.reserve_target_mw > 0 and not detected and not (
                energy_ok and abs(a0) > deadband)
            is_coupled = False
            if detected:
                a0 += sc.contingency_mw
                if reserve_variable:
                    is_coupled = True
                else:
                    a0 -= float(standing.sum())
        if reserve_round:
            energy_ok = energy_ok or j >= 2 or raw.round_index > 0 or reserve_variable
            continue
        request[j], coupled[j] = a0, is_coupled
        if is_coupled:
            direction[j] = 1 if a0 >= 0 else -1
        elif abs(a0) > deadband:
            direction[j] = 1 if a0 > 0 else -1

    # reserve activation share of each step
    active = np.isfinite(raw.activation_s)
    if active.any():
        act_s = float(raw.activation_s[active].min())
    elif sc.has_event:
        act_s = t_pub + cfg.bus.latency_mean_s
    else:
        act_s = math.inf
    share = np.clip(((steps + 1) * dt - act_s) / dt, 0.0, 1.0) if math.isfinite(act_s) \
        else np.zeros(n_steps)

    # power bounds per kind
    ev = _ev_baseline_path(raw, k0, n_steps)
    avail, solar_fc = _solar_paths(raw, k0, n_steps)
    step_mw = level_step_mw[:, None]
    up = np.where(is_bat[:, None], lim.max_discharge_mw[:, None],
                  np.where(is_ev[:, None] & ev["flexible"], -ev["baseline_mw"], 0.0))
    down = np.where(is_bat[:, None], lim.max_charge_mw[:, None],
                    np.where(is_sol[:, None],   # its baseline: export-capped output
                             np.minimum(np.minimum(avail, solar_fc),
                                        lim.max_discharge_mw[:, None]),
                             np.where(is_ev[:, None],
                                      ev["charge_room_mw"] + ev["baseline_mw"], 0.0)))
    # rounded down to levels, but where the kernel bids the first level past a bound a
    # power limit of an agent under a cap or a ramp sets as the bound itself
    # (Kernel.limit_edge_agents): a battery's caps, an EV's deferrable (capped) baseline
    # and its charge cap above it (not the room to its ceiling), a PV plant's full
    # curtailment
    edge = raw.kernel.limit_edge_agents
    edge = np.zeros(n, dtype=bool) if edge is None else edge
    up_exact = (edge & (is_bat | is_ev))[:, None]
    down_exact = (edge & (is_bat | is_sol))[:, None] | (
        edge[:, None] & is_ev[:, None] & (ev["charge_room_mw"] >= lim.max_charge_mw[:, None]
                                          - _TOL_MW))
    up = np.where(up_exact, np.maximum(up, 0.0), _floor_to_step(np.maximum(up, 0.0), step_mw))
    down = np.where(down_exact, np.maximum(down, 0.0),
                    _floor_to_step(np.maximum(down, 0.0), step_mw))

    # energy bounds (after each step), widened to contain the present state
    cap = f.energy_capacity_mwh
    e_min = np.repeat((lim.soc_min * cap)[:, None], n_steps, axis=1)
    e_max = np.repeat((lim.soc_max * cap)[:, None], n_steps, axis=1)
    e_min = np.where(is_ev[:, None] & ev["req_ok"], np.maximum(e_min, ev["e_req_mwh"]), e_min)
    e_min = np.where(is_sol[:, None], 0.0, e_min)
    e_max = np.where(is_sol[:, None], 0.0, e_max)
    e_now = f.energy_mwh[:, None]
    e_min, e_max = np.minimum(e_min, e_now), np.maximum(e_max, e_now)

    eta_c = f.eta_charge
    eta_d = np.where(f.eta_discharge > 0, f.eta_discharge, 1.0)
    charge_gain = np.where(is_sol, 0.0, eta_c)
    discharge_gain = np.where(is_bat, 1.0 / eta_d, np.where(is_ev, eta_c, 0.0))
    drift = np.where(is_ev[:, None], -ev["baseline_mw"] * eta_c[:, None] * h, 0.0)

    # the step about to run is contracted: awarded energy plus activated reserve
    p0 = raw.awarded_next + standing * share[0]
    e1 = f.energy_mwh + drift[:, 0] + h * (charge_gain * np.maximum(-p0, 0.0)
                                           - discharge_gain * np.maximum(p0, 0.0))
    e_min[:, 0] = np.minimum(e_min[:, 0], e1)
    e_max[:, 0] = np.maximum(e_max[:, 0], e1)
    up[:, 0] = np.maximum(up[:, 0], np.maximum(p0, 0.0))
    down[:, 0] = np.maximum(down[:, 0], np.maximum(-p0, 0.0))

    if reserve_variable:
        res_max = np.where(is_bat, lim.max_discharge_mw,
                           np.where(is_ev & ev["flexible"][:, min(1, n_steps - 1)],
                                    np.minimum(f.ev_baseline_rate_mw, lim.max_charge_mw),
                                    0.0))
        res_max = np.where(edge & (is_bat | is_ev), res_max,
                           _floor_to_step(res_max, level_step_mw))
        # under a ramp: what the DER reaches within the product's full activation time
        # (the kernel's reserve bound; its first level past it is bid as the bound)
        res_max = np.minimum(res_max, raw.kernel.reserve_ramp_cap_mw)
        res_min = np.zeros(n)
    else:
        res_max = res_min = standing.copy()
    # the ramp is not rounded to levels: the mask allows the first level past a ramp
    # bound and the kernel clips it to the bound (Kernel.power_mask), so any ramp step is
    # biddable
    ramped = np.isfinite(lim.ramp_mw_per_s)
    ramp_mw = np.where(ramped, lim.ramp_mw_per_s * dt, np.inf)
    up_cost, down_cost = true_cost_per_mwh(f.kind, f.eta_charge, f.eta_discharge, c)
    departing = is_ev & f.plugged & (f.departure_s > k0 * dt) & (
        f.departure_s <= sc.episode_steps * dt)
    dep_s = np.where(departing, f.departure_s, 0.0)
    dep_step = np.where(departing, np.ceil(dep_s / dt - 1e-9).astype(np.int64) - 1 - k0, -1)
    dep_step = np.where(departing & (dep_step < 0), 0, dep_step)
    return BalancingProblem(
        dt_s=dt, costs=c, requirement_mw=requirement, round_direction=direction,
        request_mw=request, reserve_coupled=coupled, reserve_share=share,
        up_max_mw=up, down_max_mw=down,
        up_cost_per_mwh=np.where(is_sol, 0.0, up_cost),
        down_cost_per_mwh=down_cost,
        energy0_mwh=f.energy_mwh.copy(), energy_min_mwh=e_min, energy_max_mwh=e_max,
        charge_gain=charge_gain, discharge_gain=discharge_gain, energy_drift_mwh=drift,
        reserve_min_mw=res_min, reserve_max_mw=res_max,
        reserve_target_mw=float(sc.reserve_target_mw) if reserve_variable else float(
            standing.sum()),
        departure_step=dep_step, departure_energy_mwh=f.departure_soc * cap,
        ramp_mw=ramp_mw, last_p_mw=raw.last_p_mw.copy(), first_step_p_mw=p0)


# --------------------------------------------------------------------------- the policy
class OraclePolicy:
    """Perfect-foresight LP plan, bid through the market (see the module docstring).

    :param replan_drift: re-plan when a storage agent's energy differs from the plan by
        more than this share of its capacity.
    :param replan_request_mw: re-plan when the request of the round being bid differs
        from the plan's by more than this.
    :param backup_bids: let unplanned agents bid behind the planned ones.
    :param seed: unused (the plan is deterministic); accepted so every policy factory
        takes the same keywords.
    """

    name = "oracle"

    def __init__(self, replan_drift: float = 0.01, replan_request_mw: float = 0.5,
                 backup_bids: bool = True, seed: int | None = None) -> None:
        check_positive("OraclePolicy", "replan_drift", replan_drift)
        check_positive("OraclePolicy", "replan_request_mw", replan_request_mw)
        self.replan_drift = float(replan_drift)
        self.replan_request_mw = float(replan_request_mw)
        self.backup_bids = bool(backup_bids)
        self.plans: list[BalancingPlan] = []
        self.replan_failures: list[str] = []
        self._raw = None

    # ------------------------------------------------------------------ protocol
    def reset(self, env, seed: int | None = None) -> None:
        """Solve the episode's LP from the state right after ``env.reset``."""
        self._raw = env
        self._n_power = env.config.market.n_power_levels
        self._level_fraction = np.asarray(env.kernel.level_fraction, dtype=float)
        f = env.fleet
        self._up_cost, self._down_cost = true_cost_per_mwh(f.kind, f.eta_charge,
                                                           f.eta_discharge, env.config.costs)
        self._event_planned = False
        self.replan_failures = []
        if env.step_index >= env.scenario.episode_steps:   # ended: nothing left to plan
            n = env.n_agents
            self.plans = [BalancingPlan(
                p_mw=np.zeros((n, 0)), energy_part_mw=np.zeros((n, 0)), reserve_mw=np.zeros(n),
                energy_mwh=np.zeros((n, 0)), unserved_mw=np.zeros(0), unmet_mwh=np.zeros(n),
                cost=0.0, solve_time_s=0.0, first_step=env.step_index)]
            return
        self.plans = [solve_balancing(problem_from_env(env), first_step=env.step_index)]

    @property
    def plan(self) -> BalancingPlan:
        """The plan in force."""
        return self.plans[-1]

    @property
    def planned_cost(self) -> float:
        """The first plan's optimum: the predicted ``system_cost`` of the episode."""
        return self.plans[0].cost

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Bid the plan for the round being bid (delivery in the next step)."""
        raw = self._raw
        if raw is None:
            raise RuntimeError("OraclePolicy.act() called before reset(env)")
        self._maybe_replan(raw)
        power_mask, price_mask = split_mask(mask, self._n_power)
        n = power_mask.shape[0]
        mid = (self._n_power - 1) // 2
        out = np.zeros((n, 2), dtype=np.int64)
        out[:, 0] = mid
        request = float(raw.round_request_mw)
        reserve_round = raw.round_product == PRODUCT_RESERVE
        col = raw.step_index + 1 - self.plan.first_step
        if abs(request) <= raw.config.market.deadband_mw or col >= self.plan.p_mw.shape[1]:
            return self._with_price(out, np.zeros(n), 0, price_mask)
        d = 1 if (reserve_round or request > 0) else -1
        if reserve_round:
            want = np.maximum(self.plan.reserve_mw - raw.reserve_standing_mw(), 0.0)
        else:
            want = self.plan.energy_part_mw[:, col] * d
            want = np.maximum(want, 0.0)
        planned = want > _TOL_MW
        level = self._level_for(d * want, raw.fleet.rated_power_mw, power_mask)
        cost = self._up_cost if d > 0 else self._down_cost
        tier_cost = np.where(np.isfinite(cost), cost, 1e12)
        ranks = np.unique(tier_cost, return_inverse=True)[1].ravel()
        n_ranks = int(ranks.max()) + 1
        tier = np.where(planned, ranks, n_ranks + ranks)
        if self.backup_bids:
            allowed = power_mask & ((np.arange(self._n_power)[None, :] - mid) * d > 0)
            if reserve_round:
                # the operator buys reserve offered up to its target, and held reserve
                # stays on top of its holder's energy bids: a backup offer keeps the
                # room the plan sells upward from here on (the plan's energy rounds
                # before the trip stay biddable)
                ahead = self.plan.energy_part_mw[:, col:][:, self.plan.reserve_share[col:] == 0]
                sells = np.max(ahead, axis=1, initial=0.0)
                powers = raw.fleet.rated_power_mw[:, None] * self._level_fraction[None, :]
                room = np.max(powers, axis=1, where=allowed, initial=0.0)
                allowed &= powers <= (room - sells)[:, None] + _TOL_MW
            extreme = np.where(allowed.any(axis=1),
                               (np.argmax(allowed, axis=1) if d < 0 else
                                self._n_power - 1 - np.argmax(allowed[:, ::-1], axis=1)), mid)
            level = np.where(planned, level, extreme)
        else:
            level = np.where(planned, level, mid)
        out[:, 0] = level
        return self._with_price(out, tier, d, price_mask)

    # ------------------------------------------------------------------ helpers
    def _with_price(self, out: np.ndarray, tier: np.ndarray, direction: int,
                    price_mask: np.ndarray) -> np.ndarray:
        n_price = price_mask.shape[1]
        t = np.minimum(np.asarray(tier, dtype=np.int64), n_price - 1)
        target = t if direction >= 0 else n_price - 1 - t
        out[:, 1] = nearest_allowed(target.astype(np.int64), price_mask)
        return out

    def _level_for(self, power_mw: np.ndarray, rated_mw: np.ndarray,
                   power_mask: np.ndarray) -> np.ndarray:
        """Power level reaching at least ``|power_mw|`` (away from 0), then the nearest
        level the mask allows."""
        frac = self._level_fraction
        rel = np.divide(power_mw, rated_mw, out=np.zeros_like(power_mw), where=rated_mw > 0)
        pos = (rel - frac[0]) / (frac[1] - frac[0])
        idx = np.where(rel > 0, np.ceil(pos - 1e-9), np.floor(pos + 1e-9))
        idx = np.clip(idx, 0, self._n_power - 1).astype(np.int64)
        return nearest_allowed(idx, power_mask)

    def _maybe_replan(self, raw) -> None:
        plan = self.plan
        col = raw.step_index - plan.first_step
        reasons = []
        if raw.emergency_seen.any() and not self._event_planned:
            self._event_planned = True
            reasons.append("emergency broadcast arrived")
        nxt = col + 1
        if (0 < nxt < plan.request_mw.size and raw.round_product != PRODUCT_RESERVE
                and abs(plan.request_mw[nxt] - raw.round_request_mw) > self.replan_request_mw):
            reasons.append(f"request {raw.round_request_mw:.2f} MW vs planned "
                           f"{plan.request_mw[nxt]:.2f} MW")
        if 0 < col <= plan.energy_mwh.shape[1]:
            cap = raw.fleet.energy_capacity_mwh
            drift = np.abs(raw.fleet.energy_mwh - plan.energy_mwh[:, col - 1])
            if (drift > self.replan_drift * cap + 1e-12).any():
                reasons.append("energy drift")
        if not reasons or raw.step_index >= raw.scenario.episode_steps - 1:
            return
        try:
            self.plans.append(solve_balancing(problem_from_env(raw),
                                              first_step=raw.step_index))
        except RuntimeError as exc:   # keep bidding the previous plan
            self.replan_failures.append(f"step {raw.step_index}: {exc}")
