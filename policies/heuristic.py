"""``heuristic``: scripted role agents (solar, battery trader, EV fleet), vectorized.

Description
-----------
Every agent reads its own observation row (:data:`gridswarm_env.env.OBS_FIELDS`), its
action mask and the environment's static public description (cost coefficients
:class:`~gridswarm_env.config.CostConfig`, price levels, power levels, fleet
parameters), and bids one ``(power level, price level)`` pair. No agent reads another
agent's state, the future, or hidden environment state. All arithmetic is NumPy over
agents (no per-agent Python loop).

Roles
-----
* **Solar** publishes its forecast (the environment does so on ``grid/forecast``) and,
  in a surplus, offers curtailment asking compensation equal to its true cost
  ``c_curt`` (27.5 $/MWh), for at most its forecast less a forecast-error margin
  (an optimistic forecast would leave the contract undelivered); it cannot inject
  more than its available output, so it stays out of shortages and reserve rounds.
* **Battery trader** sells in a shortage at its true cost plus a margin that rises as
  its SoC falls, and absorbs in a surplus asking compensation that rises as its SoC
  rises (so the market dispatches the fullest batteries to discharge and the
  emptiest to charge, keeping SoC near the middle)::

      ask_sell   = c_bat + v/η_d + c_bat · m · clip((s_mid − soc) / (s_mid − s_low), 0, 1)
      ask_absorb = c_bat − v·η_c + c_bat · m · clip((soc − s_mid) / (s_high − s_mid), 0, 1)

  where ``c_bat ± v·…`` is its true cost (wear, and the stored energy spent or gained
  at ``v = stored_energy_value_per_mwh``, as ``system_cost`` counts it).

* **EV fleet** protects its departure energy: it offers to defer charging (inject
  more) only for the share of its flexibility its departure slack allows::

      slack_soc = t_departure_h · η_c / (E/P) − shortfall_soc
      defer share = clip(slack_soc / ev_slack_buffer_soc, 0, 1)

  priced at ``c_ev`` (60 $/MWh) plus an urgency margin; in a surplus it charges more
  and is willing to *pay* for that energy (its true cost of extra charging is 0), more
  when it is short of its departure energy, so it is dispatched before curtailment::

      pay_absorb = c_ev · clip(shortfall_soc / ev_pay_full_shortfall_soc, 0, 1)
* **Reserve rounds** (observation ``product_reserve`` = 1): batteries and EVs offer the
  upward capacity the kernel says they can sustain until the episode ends (the
  feasible interval in the observation), priced like a sale.

Sizing and prices
-----------------
The operator's request arrives as ``request_rel`` = request / fleet upward flexibility.
Each agent offers the share ``clip(overoffer · |request_rel|, min_offer_share, 1)`` of its
feasible capacity in the request's direction, rounded *up* to the next power level
(past a ramp bound or a bound a power limit sets only when the mask allows that level:
the kernel bids it as the bound, so a ramp step below one level still moves the agent
and a cap between levels is offered in full).
With pay-as-clear merit order only the cheapest offers are accepted, so the over-offer
(default 2x) makes coverage robust while the prices (true costs) decide who delivers
and hence ``system_cost``.

That sizing assumes every agent's feasible capacity is about its share of the fleet's
flexibility. After the emergency broadcast (observation ``emergency`` = 1) it is not: the
activated reserve stays on top of any energy dispatch, so the reserve holders have no
upward room left (the kernel's interval is ``rated − reserve``) and only the agents
without reserve can answer the residual request, which ``request_rel`` measures against
the *whole* fleet. In ``emergency`` with a 108 MW trip the request is 8 MW
(``request_rel`` 0.064 of 125 MW) but 100 MW of the fleet's 125 MW is held as reserve:
the 25 MW left (10 batteries, no EV deferral) offered 0.2 of it, 5.2 MW, and 2.8 MW went
unserved for the rest of the episode. An agent cannot see how much of the fleet the
reserve holds, so in an upward energy round after the broadcast it offers its whole
feasible upward capacity (share 1); the prices still decide who delivers.

A seller's price is the lowest price level at or above its ask; an absorber's is the
highest level at or below what it is willing to pay (minus the compensation it asks). A
zero request gets a 0 MW bid. The chosen levels are projected on the action mask (nearest allowed level), so the
kernel never blocks a heuristic bid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gridswarm_env.config import check_positive, check_range
from gridswarm_env.env import OBS_FIELDS
from policies.base import nearest_allowed, split_mask

_COL = {name: i for i, name in enumerate(OBS_FIELDS)}


@dataclass(frozen=True)
class HeuristicConfig:
    """Parameters of the scripted roles (all dimensionless unless the name says otherwise).

    :param overoffer: offered capacity / requested share of the fleet's flexibility.
    :param min_offer_share: smallest share of its feasible capacity an agent offers when
        a round is held (so small requests are still covered).
    :param soc_mid: the battery SoC the traders steer towards.
    :param soc_low: SoC at which the sell margin is fully applied (default: the kernel's
        default battery floor, 10 %).
    :param soc_high: SoC at which the absorb margin is fully applied (default: the
        kernel's default battery ceiling, 95 %).
    :param soc_margin: the margin at ``soc_low`` / ``soc_high``, as a share of ``c_bat``.
    :param ev_slack_buffer_soc: departure slack (SoC) at which an EV offers its whole
        deferral capacity; below it the offer shrinks linearly to 0.
    :param ev_urgency_margin: extra deferral price (share of ``c_ev``) of an EV with no
        slack left.
    :param ev_pay_full_shortfall_soc: departure shortfall (SoC) at which an EV pays up
        to ``c_ev`` per MWh for extra charging in a surplus.
    :param solar_margin_sigmas: solar offers curtailment only up to its forecast
        shrunk by this many standard deviations of the forecast error
        (``FleetConfig.solar_forecast_error_std`` + ``solar_variability_std``), so a
        curtailment contract stays deliverable when the forecast was optimistic.
    """

    overoffer: float = 2.0
    min_offer_share: float = 0.2
    soc_mid: float = 0.5
    soc_low: float = 0.1
    soc_high: float = 0.95
    soc_margin: float = 1.0
    ev_slack_buffer_soc: float = 0.05
    ev_urgency_margin: float = 0.5
    ev_pay_full_shortfall_soc: float = 0.5
    solar_margin_sigmas: float = 2.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_positive(owner, "overoffer", self.overoffer)
        check_range(owner, "min_offer_share", self.min_offer_share, 0.0, 1.0)
        check_range(owner, "soc_low", self.soc_low, 0.0, 1.0)
        check_range(owner, "soc_mid", self.soc_mid, 0.0, 1.0)
        check_range(owner, "soc_high", self.soc_high, 0.0, 1.0)
        if not self.soc_low < self.soc_mid < self.soc_high:
            raise ValueError(f"{owner}: need soc_low < soc_mid < soc_high, got "
                             f"{self.soc_low}, {self.soc_mid}, {self.soc_high}")
        check_range(owner, "soc_margin", self.soc_margin, 0.0, 10.0)
        check_positive(owner, "ev_slack_buffer_soc", self.ev_slack_buffer_soc)
        check_range(owner, "ev_urgency_margin", self.ev_urgency_margin, 0.0, 10.0)
        check_positive(owner, "ev_pay_full_shortfall_soc", self.ev_pay_full_shortfall_soc)
        check_range(owner, "solar_margin_sigmas", self.solar_margin_sigmas, 0.0, 10.0)


class HeuristicPolicy:
    """Scripted solar / battery / EV roles bidding at true cost (see the module docstring).

    :param config: role parameters (defaults documented in :class:`HeuristicConfig`).
    :param seed: unused (the policy is deterministic); accepted so every policy factory
        takes the same keywords.
    """

    name = "heuristic"

    def __init__(self, config: HeuristicConfig | None = None, seed: int | None = None) -> None:
        self.config = config or HeuristicConfig()
        self._ready = False

    def reset(self, env, seed: int | None = None) -> None:
        """Read the static public description of ``env`` (costs, levels, fleet parameters)."""
        cfg = env.config
        self._n_power = cfg.market.n_power_levels
        self._price_levels = np.asarray(env.price_levels_per_mwh, dtype=float)
        self._level_fraction = np.asarray(env.kernel.level_fraction, dtype=float)
        # agents under a finite ramp limit or a cap below their rating (declared limits:
        # static and public, Kernel.limit_edge_agents): their mask may allow the first level
        # past a ramp bound or a power limit, bid as the bound itself
        edge = env.kernel.limit_edge_agents
        self._edge_agents = None if edge is None else edge.copy()
        self._costs = c = cfg.costs
        # a battery's true cost of selling / absorbing 1 MWh: wear ± the stored energy
        # spent (1/η_d of it) or gained (η_c of it), as system_cost counts it
        self._bat_up_cost, self._bat_down_cost = c.battery_cost_per_mwh(
            cfg.fleet.battery_eta_charge, cfg.fleet.battery_eta_discharge)
        # full-rate EV charging, in SoC per hour: η_c · P / E
        self._ev_soc_per_h = cfg.fleet.ev_eta_charge / cfg.fleet.ev_duration_h
        sigma = cfg.fleet.solar_forecast_error_std + cfg.fleet.solar_variability_std
        self._solar_keep = max(1.0 - self.config.solar_margin_sigmas * sigma, 0.0)
        self._ready = True

    # ------------------------------------------------------------------ act
    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``(n, 2)`` int64 actions: [power level, price level] per agent."""
        if not self._ready:
            raise RuntimeError("HeuristicPolicy.act() called before reset(env)")
        power_mask, price_mask = split_mask(mask, self._n_power)
        target_rel, price, bound_rel = self.bids(obs)
        power_level = nearest_allowed(self._power_level_index(target_rel, bound_rel, power_mask),
                                      power_mask)
        price_level = nearest_allowed(self._price_level_index(price, target_rel), price_mask)
        return np.stack([power_level, price_level], axis=1)

    def bids(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The continuous bids behind :meth:`act`.

        :returns: (power as a share of rated power, signed, (n,); price in $/MWh, (n,);
            the largest deliverable power as a share of rated power, signed like the
            bid, (n,)) before snapping to levels and masks.
        """
        cfg, c = self.config, self._costs
        col = _COL
        is_solar = obs[:, col["is_solar"]] > 0.5
        is_battery = obs[:, col["is_battery"]] > 0.5
        is_ev = obs[:, col["is_ev"]] > 0.5
        soc = obs[:, col["soc"]].astype(float)
        lo = np.minimum(obs[:, col["feasible_lo_rel"]].astype(float), 0.0)
        hi = np.maximum(obs[:, col["feasible_hi_rel"]].astype(float), 0.0)
        request = obs[:, col["request_rel"]].astype(float)
        reserve_round = obs[:, col["product_reserve"]] > 0.5
        after_trip = obs[:, col["emergency"]] > 0.5
        held = np.abs(request) > 1e-9   # rounds inside the deadband clear nothing anyway
        share = np.clip(cfg.overoffer * np.abs(request), cfg.min_offer_share, 1.0)

        # battery prices: margins steer SoC towards the middle
        sell_margin = np.clip((cfg.soc_mid - soc) / (cfg.soc_mid - cfg.soc_low), 0.0, 1.0)
        absorb_margin = np.clip((soc - cfg.soc_mid) / (cfg.soc_high - cfg.soc_mid), 0.0, 1.0)
        wear = c.battery_degradation_per_mwh
        bat_sell = self._bat_up_cost + wear * cfg.soc_margin * sell_margin
        bat_absorb_pay = -(self._bat_down_cost + wear * cfg.soc_margin * absorb_margin)

        # EV: how much deferral the departure slack allows, and how urgent charging is
        hours = 12.0 * obs[:, col["ev_departure_12h"]].astype(float)   # capped at 12 h
        shortfall = obs[:, col["ev_shortfall_soc"]].astype(float)
        slack = hours * self._ev_soc_per_h - shortfall
        defer_share = np.clip(slack / cfg.ev_slack_buffer_soc, 0.0, 1.0)
        urgency = 1.0 - defer_share
        ev_sell = c.ev_deferral_per_mwh * (1.0 + cfg.ev_urgency_margin * urgency)
        ev_absorb_pay = c.ev_deferral_per_mwh * np.clip(
            shortfall / cfg.ev_pay_full_shortfall_soc, 0.0, 1.0)

        up = np.where(is_battery, hi, np.where(is_ev, hi * defer_share, 0.0))
        sell_price = np.where(is_ev, ev_sell, bat_sell)
        down = np.where(is_solar, -lo * self._solar_keep, -lo)
        absorb_pay = np.where(is_solar, -c.solar_curtailment_per_mwh,
                              np.where(is_ev, ev_absorb_pay, bat_absorb_pay))

        shortage = held & ((request > 0) | reserve_round)
        surplus = held & (request < 0) & ~reserve_round
        # after the emergency broadcast the activated reserve holds an unknown part of the
        # fleet's upward flexibility: offer all the feasible upward capacity (docstring)
        share = np.where(shortage & after_trip & ~reserve_round, 1.0, share)
        bound = np.where(shortage, up, np.where(surplus, -down, 0.0))
        target = share * bound
        price = np.where(surplus, absorb_pay, sell_price)
        return target, price, bound

    # ------------------------------------------------------------------ snapping
    def _power_level_index(self, target_rel: np.ndarray, bound_rel: np.ndarray,
                           power_mask: np.ndarray | None = None) -> np.ndarray:
        """Power level reaching at least ``|target_rel|`` (rounded away from 0) without
        passing ``|bound_rel|`` (then rounded towards 0). For an agent under a ramp
        limit or a cap below its rating, a level past the bound that ``power_mask``
        allows is kept: the kernel allows the first level past a ramp bound or a bound a
        power limit sets and clips it to the bound
        (:meth:`~gridswarm_env.kernel.Kernel.power_mask`), so the bid is the bound; rounded
        towards 0, a ramp step smaller than one level would bid 0 MW for ever."""
        frac = self._level_fraction
        pos = (target_rel - frac[0]) / (frac[1] - frac[0])
        away = np.where(target_rel > 0, np.ceil(pos - 1e-9), np.floor(pos + 1e-9))
        toward = np.where(target_rel > 0, np.floor(pos + 1e-9), np.ceil(pos - 1e-9))
        away = np.clip(away, 0, self._n_power - 1).astype(np.int64)
        beyond = np.abs(frac[away]) > np.abs(bound_rel) + 1e-9
        if self._edge_agents is not None and power_mask is not None:
            beyond &= ~(self._edge_agents & power_mask[np.arange(away.size), away])
        idx = np.where(beyond, toward, away)
        idx = np.where(target_rel == 0, (self._n_power - 1) // 2, idx)
        return np.clip(idx, 0, self._n_power - 1).astype(np.int64)

    def _price_level_index(self, price: np.ndarray, target_rel: np.ndarray) -> np.ndarray:
        """Sellers: lowest level >= their ask; absorbers: highest level <= what they pay."""
        levels = self._price_levels
        n = levels.size
        ceil_idx = np.clip(np.searchsorted(levels, price - 1e-9, side="left"), 0, n - 1)
        floor_idx = np.clip(np.searchsorted(levels, price + 1e-9, side="right") - 1, 0, n - 1)
        return np.where(target_rel < 0, floor_idx, ceil_idx).astype(np.int64)
