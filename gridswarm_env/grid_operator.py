"""The grid operator's side of the market rounds (DESIGN §2, §3): what it knows, what it
announces, and the clearing of each round.

:class:`GridOperator` (one per episode) holds the operator's forecasts of each round
(``round_forecast_mw``), the solar agents' PV forecasts that reached it over the bus
(``forecast_mw``, :meth:`GridOperator.receive_forecasts`) and the fleet flexibility it
prices with (:meth:`GridOperator.flexible_mw`); it sizes each round's request and product
(:meth:`GridOperator.request`), publishes the round's announcement to every agent
(:meth:`GridOperator.announce`: request, price signal, product, the grid's state, the last
clearing price), clears the round on the bids that reached it by gate closure
(:meth:`GridOperator.clear`) and keeps the market's results (last clearing price,
whether the last reserve round cleared short). Signing and delivering the awards is
:mod:`gridswarm_env.contract_flow`'s; when each happens, the environment's.

The equations (:mod:`gridswarm_env.market`'s functions; forecast shortage ``F`` of the
round's window, MW; deadband ``δ``; reserve target ``T``)::

    request   reserve round (target, trip not known):  max(T − Σ awarded, 0)
              energy round:  F  (+ contingency − Σ standing reserve, once the trip is known)
    flexibility   up   = Σ battery discharge caps + Σ plugged EVs' min(baseline, charge cap)
                  down = Σ battery charge caps
                         + Σ plugged EVs' (charge cap − min(baseline, charge cap))
                         + Σ min(PV forecast held, the plant's export cap)
    (the caps: the kernel's compiled limits, each at most the DER's rating; without a
    limits file, the ratings; SoC, departures and ramp limits are not counted)
    price signal  s = clip(request / flexibility, −1, 1),  r = clip(0, floor, cap)
                  s >= 0: r + (cap − r)·s      s < 0: r + (r − floor)·s

(which round is which: :func:`~gridswarm_env.market.operator_request`; the price signal
is a hint, clearing is by bids: :func:`~gridswarm_env.market.price_signal_per_mwh`, the
linear form of an operating-reserve demand curve, cf. ERCOT's ORDC; clearing:
:func:`~gridswarm_env.market.clear_market`, merit order, pay-as-clear.)
"""

from __future__ import annotations

import math

import numpy as np

from gridswarm_env import market
from gridswarm_env.bus import AgentMessageBus, Delivery, Lane, TopicBatch
from gridswarm_env.config import MarketConfig
from gridswarm_env.fleet import FleetConstants, FleetState, fast_count_nonzero
from gridswarm_env.kernel import LimitArrays
from gridswarm_env.messages import OPERATOR, SIGNAL_DTYPE, SIGNAL_VOID, TOPIC_FORECAST, TOPIC_PRICE
from gridswarm_env.metrics import MetricsAccumulator
from gridswarm_env.scenarios import PRODUCT_ENERGY, PRODUCT_RESERVE


class GridOperator:
    """The operator of one episode (see the module docstring).

    :ivar round_forecast_mw: the operator's forecast for round ``r`` (delivery
        ``[(r+1)·dt, (r+2)·dt)``), every round, MW.
    :ivar forecast_mw: the PV forecast held per agent (solar agents' only matter), MW:
        before any ``grid/forecast`` message arrives, each solar agent's forecast for the
        first window, as a plant files it with its schedule before the market opens (the
        fleet's forecast at reset, so round 0, announced at t = 0, prices with it); from
        then on only delivered forecasts change it (:meth:`receive_forecasts`).
    :ivar flex_up_mw, flex_down_mw: per agent, the flexibility it prices with (see
        :meth:`refresh_flexibility`).
    :ivar n_plugged: EVs plugged in when the flexibility was last refreshed.
    """

    def __init__(self, bus: AgentMessageBus, fleet: FleetState, const: FleetConstants,
                 kernel_arrays: LimitArrays, round_forecast_mw: np.ndarray,
                 metrics: MetricsAccumulator, *, price_floor_per_mwh: float,
                 price_cap_per_mwh: float, reserve_target_mw: float, contingency_mw: float,
                 market_config: MarketConfig, latency_max_s: float, dt_s: float) -> None:
        n = fleet.kind.size
        self.bus, self.fleet, self.const, self.kernel_arrays = bus, fleet, const, kernel_arrays
        self.round_forecast_mw = round_forecast_mw
        self.metrics = metrics
        self.price_floor_per_mwh, self.price_cap_per_mwh = price_floor_per_mwh, price_cap_per_mwh
        self.reserve_target_mw, self.contingency_mw = reserve_target_mw, contingency_mw
        self.market_config = market_config
        # the PV forecasts held (see forecast_mw), with the publish time of each (-inf: the
        # schedule's, older than any message)
        self.forecast_mw = fleet.solar_forecast_mw.copy()
        self.forecast_sent_s = np.full(n, -math.inf)
        # forecasts are published a step apart: a newer one overtakes an older one only
        # when latencies can differ by more than a step (L_older − L_newer > dt_s). Up to
        # that, delivery order is publish order, also out of a deferred backlog and at the
        # tie (L_older = dt_s, L_newer = 0: equal times are delivered in publish order)
        self.forecasts_reorder = latency_max_s > dt_s
        # the market's results so far: the last clearing price (NaN before any round
        # cleared at a price), the product of the round cleared last, and whether the last
        # reserve round cleared short (its next rounds buy the shortage as energy first)
        self.last_clearing_price_per_mwh = math.nan
        self.cleared_product = PRODUCT_ENERGY
        self.reserve_short = False
        self.agent_ids = np.arange(n)
        self.signal_rows = np.empty(n, dtype=SIGNAL_DTYPE)
        # opaque-item views of the packed signal records: one record is broadcast to all
        # rows (the same bytes as the field-wise copies, several times faster)
        self.signal_record = np.empty(1, dtype=SIGNAL_DTYPE)
        self._signal_rows_void = self.signal_rows.view(SIGNAL_VOID)
        self._signal_record_void = self.signal_record.view(SIGNAL_VOID)
        # fleet flexibility (DESIGN §3): the plugged-in fleet's, refreshed when EVs leave;
        # downward follows the PV forecast
        self.refresh_flexibility()
        self.neutral_price_per_mwh = market.neutral_price_per_mwh(price_floor_per_mwh,
                                                                  price_cap_per_mwh)

    def request(self, round_index: int, *, trip_known: bool, reserve_awarded_mw: np.ndarray,
                standing_reserve_mw: np.ndarray) -> tuple[float, int]:
        """Request (MW) and product of the round delivering in [(r+1)·dt, (r+2)·dt),
        with ``trip_known``: whether the operator knows of the trip when it announces
        the round (detected by then), not for the whole step.

        With a reserve target, a round announced while the operator does not know of a
        trip buys the reserve still missing (request ``max(target − awarded, 0)``, no
        round inside the deadband), or, once the target is met or the last reserve round
        held cleared short (:attr:`reserve_short`), the forecast shortage beyond the deadband
        as energy; every later round is an energy round
        (:func:`~gridswarm_env.market.operator_request`): the product switches on what the
        operator knows and holds, never on the scenario's hidden ``event_time_s``."""
        # the forecast = its mean over the window's sub-steps (precomputed at reset)
        return market.operator_request(
            float(self.round_forecast_mw[round_index]), trip_known=trip_known,
            reserve_target_mw=self.reserve_target_mw, reserve_awarded_mw=reserve_awarded_mw,
            contingency_mw=self.contingency_mw, standing_reserve_mw=standing_reserve_mw,
            deadband_mw=self.market_config.deadband_mw, reserve_short=self.reserve_short)

    def refresh_after_departures(self) -> None:
        """Refresh the flexibility (:meth:`refresh_flexibility`) when an EV left since the
        last refresh (the plugged-in count changed); otherwise nothing."""
        if int(fast_count_nonzero(self.fleet.plugged)) != self.n_plugged:
            self.refresh_flexibility()

    def refresh_flexibility(self) -> None:
        """The flexibility the operator prices with (see :meth:`flexible_mw`) of the
        batteries and the EVs still plugged in (recomputed when one leaves)."""
        c, f, a = self.const, self.fleet, self.kernel_arrays
        self.flex_up_mw, self.flex_down_mw = market.fleet_flexibility(
            c.is_battery, c.is_ev, f.plugged, a.max_discharge_mw, a.max_charge_mw,
            f.ev_baseline_rate_mw)
        self.n_plugged = int(fast_count_nonzero(f.plugged))

    def flexible_mw(self, request_mw: float) -> float:
        """Fleet flexibility in the request's direction, MW, under the kernel's power
        limits: upward = battery discharge caps + the EVs' deferrable baseline charging
        (at most their charge caps); downward = the PV forecasts the operator holds (see
        :meth:`receive_forecasts`), each at most the plant's export cap, + EV headroom up
        to the charge cap + battery charge caps (:func:`~gridswarm_env.market.
        fleet_flexibility`)."""
        if request_mw >= 0:
            return self.flex_up_mw
        return market.downward_flexibility_mw(self.flex_down_mw, self.const.solar,
                                              self.forecast_mw,
                                              self.kernel_arrays.max_discharge_mw)

    def receive_forecasts(self, delivery: Delivery) -> None:
        """The operator keeps each solar agent's newest forecast that ``grid/forecast``
        delivered (TELEMETRY lane); a forecast dropped, deferred or still in flight changes
        nothing, so under congestion the operator prices with the last one that arrived."""
        fc = delivery.topic(TOPIC_FORECAST)
        senders = fc.senders
        if not len(senders):
            return
        values = fc.payloads
        if self.forecasts_reorder:   # newest by publish time, never an older one
            sent = fc.publish_times_s
            order = np.argsort(sent, kind="stable")
            senders, values, sent = senders[order], values[order], sent[order]
            newer = sent >= self.forecast_sent_s[senders]
            senders, values, sent = senders[newer], values[newer], sent[newer]
            self.forecast_sent_s[senders] = sent
        # put: = [senders] = values, the last (newest) of a sender's forecasts wins
        self.forecast_mw.put(senders, values)

    def announce(self, round_index: int, request_mw: float, product: int, now_s: float,
                 freq_hz: float, rocof_hz_per_s: float) -> float:
        """Publish round ``round_index``'s announcement to every agent at ``now_s``
        (MARKET lane) with the grid's state and the last clearing price; returns its price
        signal, $/MWh (:func:`~gridswarm_env.market.price_signal_per_mwh` of the request
        and the flexibility in its direction)."""
        price = market.price_signal_unchecked(float(request_mw), self.flexible_mw(request_mw),
                                              self.price_floor_per_mwh,
                                              self.price_cap_per_mwh,
                                              self.neutral_price_per_mwh)
        # the bus copies published rows: the buffer is reused
        self.signal_record[0] = (round_index, request_mw, price, product, freq_hz,
                                 rocof_hz_per_s, self.last_clearing_price_per_mwh)
        self._signal_rows_void[...] = self._signal_record_void
        self.bus.publish_batch(TOPIC_PRICE, self.signal_rows, lane=Lane.MARKET,
                               senders=OPERATOR, recipients=self.agent_ids,
                               now_s=now_s)
        return price

    def clear(self, bids: TopicBatch, round_index: int, request_mw: float, product: int,
              award_cap: tuple[np.ndarray, np.ndarray] | None
              ) -> tuple[market.ClearingResult, int]:
        """Clear round ``round_index`` (``request_mw``, ``product``) on the bids that
        reached the operator by gate closure (``bids``: ``grid/bids``;
        :func:`~gridswarm_env.market.clear_market`: merit order, pay-as-clear, consensus
        share); records the round in the metrics and keeps the market's results
        (:attr:`last_clearing_price_per_mwh`, :attr:`cleared_product`,
        :attr:`reserve_short`). Signing the awards is the contract flow's
        (:meth:`ContractFlow.issue <gridswarm_env.contract_flow.ContractFlow.issue>`).

        :param award_cap: ``(unseen, cap_mw)``: per agent, whether a reserve award of its
            is still on the bus, and the most it may then be awarded (the kernel's bound
            with that reserve counted; ``GridSwarmEnv._update_feasible``), or None.
        :return: ``(result, stale)``: the clearing result and the number of bids of
            earlier rounds (deferred by the bus) left out.
        """
        n = self.agent_ids.size
        mc = self.market_config
        power, price = np.zeros(n), np.zeros(n)
        eligible = np.zeros(n, dtype=bool)
        stale = 0
        if len(bids.senders):
            rows = bids.payloads
            senders = bids.senders
            current = rows["round"] == round_index
            n_current = int(fast_count_nonzero(current))
            if n_current < current.size:   # bids of earlier rounds, deferred by the bus
                stale = current.size - n_current
                rows, senders = rows[current], senders[current]
            if request_mw != 0.0:   # a zero request takes no bid (market.clear_market)
                # put: = power[senders] = ... (last wins in order), faster from the packed,
                # unaligned record fields
                power.put(senders, rows["power_mw"])
                price.put(senders, rows["price_per_mwh"])
                eligible[senders] = True
                if award_cap is not None:   # awards the bidders had not received
                    unseen, cap = award_cap
                    power[unseen] = np.minimum(power[unseen], cap[unseen])
        self.cleared_product = product
        result = market.clear_market(
            request_mw, power, price, eligible, consensus_share=mc.consensus_share,
            price_cap_per_mwh=self.price_cap_per_mwh,
            price_floor_per_mwh=self.price_floor_per_mwh, deadband_mw=mc.deadband_mw,
            check=False, tie_break=mc.tie_break)
        # held: a request beyond the deadband, from round 1 on (round 0 is announced at
        # reset and cleared on bids made from the reset observation, before its signal
        # can arrive; later rounds count even when congestion delays their signal)
        held = abs(request_mw) > mc.deadband_mw and round_index > 0
        if product == PRODUCT_RESERVE and round_index > 0:
            # the fleet offered less reserve than asked: the operator's next rounds buy
            # the forecast shortage as energy before trying again (operator_request)
            self.reserve_short = request_mw - result.accepted_total_mw > mc.deadband_mw
        self.metrics.record_round(held, result.consensus, result.n_accepted)
        if not math.isnan(result.clearing_price_per_mwh):
            self.last_clearing_price_per_mwh = result.clearing_price_per_mwh
        return result, stale
