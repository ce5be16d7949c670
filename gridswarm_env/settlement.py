"""The step's settlement (DESIGN §3): payments, true costs, penalties and rewards of each
agent, and the KPIs they feed.

:class:`Settlement` (one per episode) holds the constant factors as arrays over agents
and calls :mod:`gridswarm_env.market`'s settlement functions with what the step
dispatched; the environment (``GridSwarmEnv._settle``) gathers the inputs (EV
departures, the reserve books, the frequency deviation). Per agent ``i``, over a step of
``h = dt_s / 3600`` hours (contract power ``C``, its price ``π``, delivered ``d``,
undelivered ``u``, reserve gap ``g``: :func:`~gridswarm_env.market.contract_delivery_mw`)::

    payment_i  = (π_i · sign(C_i) · d_i + ρ_i) · h          ρ: reserve availability, $/h
    penalty_i  = λ · h · (u_i + g_i)                        λ: undelivered_penalty_per_mwh
    own_cost_i = h · (c_kind · b_i − (v / h) · ΔE_i) + c_unmet · E_unmet,i
    grid       = w · mean_k |f_k − f0| / band_hz            (shared by all agents)
    reward_i   = scale · (payment_i − own_cost_i − penalty_i − grid)

(``b``: :func:`~gridswarm_env.market.cost_basis_mw`; ``c_kind``, ``v``, ``c_unmet``:
:class:`~gridswarm_env.config.CostConfig`; ``λ``, ``w``, ``band_hz``, ``scale``:
:class:`~gridswarm_env.config.RewardConfig`, whose docstring gives the reasons for their
defaults). In shadow mode nothing is paid, charged or penalised: the reward is
``−scale · grid``.
"""

from __future__ import annotations

import numpy as np

from gridswarm_env import market
from gridswarm_env.config import EnvConfig
from gridswarm_env.dispatch import Execution
from gridswarm_env.metrics import MetricsAccumulator
from gridswarm_env.reserve import ReserveBook


class Settlement:
    """Rewards of one episode's steps over ``n_agents`` agents.

    :param kind_sel: ``(battery, solar, ev)`` slices of the agents (fleets are grouped
        by kind).
    :param zero: ``0.0`` as an ``(n_agents,)`` array operand.
    :param kind: each agent's DER kind (for the KPIs).
    """

    def __init__(self, config: EnvConfig, n_agents: int, kind_sel: tuple[slice, slice, slice],
                 zero: np.ndarray, kind: np.ndarray, metrics: MetricsAccumulator) -> None:
        cfg, n = config, n_agents
        self.dt_h = h = cfg.dt_s / 3600.0
        self.kind_sel, self.zero, self.kind, self.metrics = kind_sel, zero, kind, metrics
        self.shadow = cfg.shadow
        self.stored_energy_value_per_mwh = cfg.costs.stored_energy_value_per_mwh
        self.grid_weight, self.band_hz = cfg.reward.grid_weight, cfg.reward.band_hz
        # the constant factors as arrays over agents, the operands of the market's
        # settlement functions (an array operand skips NumPy's conversion of a Python
        # float each call; the products are the same bits)
        costs, (bat, sol, ev) = cfg.costs, kind_sel
        self.dt_h_arr = np.full(n, h)
        self.penalty_usd_per_mw = np.full(n, cfg.reward.undelivered_penalty_per_mwh * h)  # λh
        rate = self.cost_per_mwh = np.empty(n)    # c_kind: the own-cost rate of each kind
        rate[bat] = costs.battery_degradation_per_mwh
        rate[sol] = costs.solar_curtailment_per_mwh
        rate[ev] = costs.ev_deferral_per_mwh
        self.unmet_cost_per_mwh = np.full(n, costs.ev_unmet_departure_per_mwh)
        self.reward_scale = np.full(n, cfg.reward.scale)

    def rewards(self, ex: Execution, contract_mw: np.ndarray,
                contract_price_per_mwh: np.ndarray, p_exec_mw: np.ndarray,
                unmet_mwh: np.ndarray, book: ReserveBook, t0_s: float, requirement_mw: float,
                mean_abs_dev_hz: float) -> np.ndarray:
        """Payments, true costs, penalties and rewards of the step that started at
        ``t0_s`` (see the module docstring; ``ex``: its
        :func:`~gridswarm_env.dispatch.execute` result; ``p_exec_mw``: the executed mean
        power; ``unmet_mwh``: EV departure energy missing; ``book``: the reserve active
        and its availability rate; ``mean_abs_dev_hz``: mean |f − f0| over the step's
        sub-steps); records the KPIs. Returns the (n,) rewards.

        In shadow mode nothing is dispatched, so nothing is paid or charged: payment,
        penalty and own cost are 0 and the reward is the shared grid term alone (the
        would-be dispatch is in the infos).
        """
        zero = self.zero   # 0.0 as an array operand (read, never written)
        add = np.add.reduce
        grid = market.grid_term_usd(mean_abs_dev_hz, self.grid_weight, self.band_hz)
        if self.shadow:   # nothing dispatched: nothing paid, charged or penalised
            self.metrics.record_dispatch(self.kind, zero, requirement_mw, 0.0, 0.0,
                                         float(add(unmet_mwh)))
            return market.agent_rewards(zero, zero, zero, grid, self.reward_scale)
        delivered, undelivered, gap = market.contract_delivery_mw(
            contract_mw, ex.planned_mean_mw, p_exec_mw, book.active_mw, ex.reserve_share, zero)
        payments = market.contract_payments_usd(contract_mw, contract_price_per_mwh, delivered,
                                                book.rate_at(t0_s), self.dt_h_arr)
        penalties = market.undelivered_penalty_usd(undelivered, gap, self.penalty_usd_per_mw)
        bat, sol, ev = self.kind_sel
        basis = market.cost_basis_mw(p_exec_mw, bat, sol, ev, zero)
        # the KPIs' per-kind sums of the cost basis (record_dispatch)
        kind_sums = (float(add(basis[bat])), float(add(basis[sol])), float(add(basis[ev])))
        own_cost = market.own_cost_usd(basis, self.cost_per_mwh, bat, ex.energy_delta_mwh,
                                       self.stored_energy_value_per_mwh, unmet_mwh,
                                       self.unmet_cost_per_mwh, self.dt_h)
        self.metrics.record_dispatch(self.kind, p_exec_mw, requirement_mw,
                                     float(add(payments)), float(add(penalties)),
                                     float(add(unmet_mwh)), ex.energy_delta_mwh,
                                     ex.p_mean_sum_mw if p_exec_mw is ex.p_mean_mw else None,
                                     kind_sums)
        return market.agent_rewards(payments, own_cost, penalties, grid, self.reward_scale)
