"""Observation assembly: the field names and the per-episode builder of the observations.

Every agent observes one row of :data:`OBS_FIELDS` (``Box(±OBS_LIMIT, (OBS_DIM,),
float32)``): its DER (kind one-hot, SoC, size), its feasible interval, baseline,
scheduled and executed power and reserve, relative to its rated power; the market
signal it last received (request, price, product, emergency, frequency, RoCoF, age);
the bus's backpressure flag; time features; EV departure needs; the solar forecast;
the last clearing price it learned and its own acceptance. Each field's meaning and
scale, by index: docs/model.md, the observation table under *Actions, observations and
episode end*.

:class:`ObservationBuilder` holds one episode's constants (static rows, scales) and the
agents' signal arrays, which :class:`~gridswarm_env.signals.AgentSignals` writes in place;
what the environment replaces during a step is passed to
:meth:`ObservationBuilder.build`. :func:`agent_infos` builds the per-agent info dicts.
"""

from __future__ import annotations

import math

import numpy as np

from gridswarm_env.fleet import (
    ONE,
    FleetState,
    fast_clip,
    fast_count_nonzero,
    mask_selector,
    scalar_array,
)

#: the observation's field names, in index order (meanings and scales: the observation
#: table in docs/model.md)
OBS_FIELDS = (
    "is_solar", "is_battery", "is_ev", "soc", "size_rel", "feasible_lo_rel", "feasible_hi_rel",
    "baseline_rel", "scheduled_rel", "executed_rel", "reserve_rel", "reserve_active",
    "request_rel", "price_rel", "product_reserve", "emergency", "freq_dev_rel", "rocof_rel",
    "signal_age", "backpressure", "tod_sin", "tod_cos", "progress", "ev_departure_12h",
    "ev_shortfall_soc", "solar_forecast_rel", "last_clearing_price_rel", "accepted_share",
)
OBS_DIM = len(OBS_FIELDS)
OBS_LIMIT = 5.0
# the clip bounds as float32 0-d arrays (the same float32 loop as the Python floats, without
# converting them every call)
_OBS_LO32, _OBS_HI32 = np.array(-OBS_LIMIT, np.float32), np.array(OBS_LIMIT, np.float32)
_TWELVE_HOURS_S = scalar_array(43200.0)   # the EV departure feature's scale
#: signal ages are capped (and scaled) at this many steps
SIGNAL_AGE_CAP = 10.0


class ObservationBuilder:
    """One episode's observations of a fleet (see the module docstring).

    :param fleet: the episode's fleet (read at every :meth:`build`: SoC, EV departures,
        solar forecast).
    :param ev: the EVs' agents as a slice (fleets are grouped by kind).
    :param zero: ``(n,)`` zeros (the fleet constants' ``zero``).
    :param request_mw, price_per_mwh, product, freq_hz, rocof_hz_per_s,
        clearing_price_per_mwh, signal_age, emergency_seen: ``(n,)`` arrays of what each
        agent last received, written in place by the environment.
    :param nominal_freq_hz: the frequency observed as 0.
    :param request_scale_mw: the request's scale (the fleet's upward flexibility at reset).
    :param price_floor_per_mwh, price_cap_per_mwh: the scenario's price band.
    :param start_hour: the hour of day at t = 0.
    :param duration_s: the episode's length (``progress`` = t / duration).
    """

    __slots__ = ("fleet", "n_agents", "_rows", "_storage_sel", "_safe_rated", "_active_buf",
                 "_age_cap", "_sig_offset", "_sig_scale", "_ev", "_zero_ev", "_request",
                 "_price", "_product", "_freq", "_rocof", "_clearing_price", "_age",
                 "_emergency_seen", "_start_hour", "_duration_s", "_price_floor",
                 "_price_band")

    def __init__(self, fleet: FleetState, ev: slice, zero: np.ndarray, *,
                 request_mw: np.ndarray, price_per_mwh: np.ndarray, product: np.ndarray,
                 freq_hz: np.ndarray, rocof_hz_per_s: np.ndarray,
                 clearing_price_per_mwh: np.ndarray, signal_age: np.ndarray,
                 emergency_seen: np.ndarray, nominal_freq_hz: float, request_scale_mw: float,
                 price_floor_per_mwh: float, price_cap_per_mwh: float, start_hour: float,
                 duration_s: float) -> None:
        f = self.fleet = fleet
        n = self.n_agents = f.kind.shape[0]
        # observation rows (transposed, float64): static rows written once
        self._safe_rated = np.where(f.rated_power_mw > 0, f.rated_power_mw, 1.0)
        self._storage_sel = mask_selector(f.energy_capacity_mwh > 0)   # a slice: no where=
        self._active_buf = np.empty(n, dtype=bool)
        self._age_cap = np.full(n, SIGNAL_AGE_CAP)
        # mean rated power per kind (1.0 for an absent kind or one configured at 0 MW, so
        # that size_rel is 0, not NaN, for a zero-power DER)
        kind_mean = np.array([f.rated_power_mw[f.kind == k].mean() if (f.kind == k).any()
                              else 1.0 for k in range(3)])
        kind_mean[~(kind_mean > 0)] = 1.0
        rows = np.zeros((OBS_DIM, n))
        rows[0:3] = np.eye(3)[f.kind].T
        rows[4] = f.rated_power_mw / kind_mean[f.kind]
        self._rows = rows
        # the price band's floor and width as ufunc operands (fleet.scalar_array)
        self._price_floor = scalar_array(price_floor_per_mwh)
        self._price_band = scalar_array(price_cap_per_mwh - price_floor_per_mwh)
        # rows 12-18 of the observation: request, price, product, emergency, frequency,
        # RoCoF, signal age -> (x - offset) / scale
        self._sig_offset = np.array([0.0, price_floor_per_mwh, 0.0, 0.0,
                                     nominal_freq_hz, 0.0, 0.0])[:, None]
        self._sig_scale = np.array([request_scale_mw, price_cap_per_mwh - price_floor_per_mwh,
                                    1.0, 1.0, 0.5, 1.0, SIGNAL_AGE_CAP])[:, None]
        self._ev, self._zero_ev = ev, zero[ev]
        self._request, self._price, self._product = request_mw, price_per_mwh, product
        self._freq, self._rocof, self._age = freq_hz, rocof_hz_per_s, signal_age
        self._clearing_price, self._emergency_seen = clearing_price_per_mwh, emergency_seen
        self._start_hour, self._duration_s = start_hour, duration_s

    def build(self, t_s: float, lo_mw: np.ndarray, hi_mw: np.ndarray,
              baseline_mw: np.ndarray, scheduled_mw: np.ndarray, executed_mw: np.ndarray,
              standing_mw: np.ndarray, activation_s: np.ndarray, backpressure: np.ndarray,
              accepted_share: np.ndarray) -> np.ndarray:
        """``(n_agents, OBS_DIM)`` float32 observations at ``t_s`` (see :data:`OBS_FIELDS`).

        Built row by row in a transposed float64 buffer (contiguous writes, one division
        for the six power columns), cast to float32 and clipped to ``±OBS_LIMIT``: the
        same values as computing each column in float64 and storing it as float32.
        """
        f = self.fleet
        t = self._rows     # rows 0-2 (kind one-hot) and 4 (size) are static
        s = self._storage_sel
        if isinstance(s, slice):
            np.divide(f.energy_mwh[s], f.energy_capacity_mwh[s], out=t[3][s])
        else:
            np.divide(f.energy_mwh, f.energy_capacity_mwh, out=t[3], where=s)
        t[5] = lo_mw
        t[6] = hi_mw
        t[7] = baseline_mw
        t[8] = scheduled_mw
        t[9] = executed_mw
        t[10] = standing_mw
        np.divide(t[5:11], self._safe_rated, out=t[5:11])
        t[11] = np.isfinite(activation_s, out=self._active_buf)   # 1.0/0.0
        # rows 12-18: (x − offset) / scale per row in two calls (x − 0.0 and x / 1.0 are x)
        t[12] = self._request
        t[13] = self._price
        t[14] = self._product
        t[15] = self._emergency_seen
        t[16] = self._freq
        t[17] = self._rocof
        np.minimum(self._age, self._age_cap, out=t[18])
        np.subtract(t[12:19], self._sig_offset, out=t[12:19])
        np.divide(t[12:19], self._sig_scale, out=t[12:19])
        t[19] = backpressure
        hour = self._start_hour + t_s / 3600.0
        t[20] = math.sin(2 * math.pi * hour / 24.0)
        t[21] = math.cos(2 * math.pi * hour / 24.0)
        t[22] = t_s / self._duration_s
        # EVs (a slice, so t[row][ev] is a view written in place): hours to departure / 12
        # (capped at 1) and the SoC still missing at departure; 0 for the other kinds
        ev = self._ev
        zero = self._zero_ev
        x = t[23][ev]
        np.subtract(f.departure_s[ev], t_s, out=x)
        np.maximum(x, zero, out=x)
        x /= _TWELVE_HOURS_S
        np.minimum(x, ONE, out=x)
        x = t[24][ev]
        np.subtract(f.departure_soc[ev], t[3][ev], out=x)
        np.maximum(x, zero, out=x)
        plugged = f.plugged[ev]
        if fast_count_nonzero(plugged) < plugged.size:
            np.copyto(x, 0.0, where=~plugged)
        np.divide(f.solar_forecast_mw, self._safe_rated, out=t[25])
        # the clearing price of the last announcement each agent received (0 before any)
        x = t[26]
        np.subtract(self._clearing_price, self._price_floor, out=x)
        x /= self._price_band
        nan = np.isnan(x)
        if fast_count_nonzero(nan):
            np.copyto(x, 0.0, where=nan)
        t[27] = accepted_share
        o = np.empty((self.n_agents, OBS_DIM), dtype=np.float32)
        o[...] = t.T
        return fast_clip(o, _OBS_LO32, _OBS_HI32, out=o)


def agent_infos(names: list[str], masks: np.ndarray, lo_mw: np.ndarray, hi_mw: np.ndarray,
                would_dispatch_mw: np.ndarray | None = None) -> dict[str, dict]:
    """Per agent: ``action_mask`` (the concatenated masks as int8) and ``feasible_mw``
    ``(lo, hi)``; with ``would_dispatch_mw`` (shadow mode) also ``would_dispatch_mw``,
    the mean power the agent would have been dispatched in the step just taken."""
    infos = {a: {"action_mask": m, "feasible_mw": (lo, hi)} for a, m, lo, hi in zip(
        names, masks.astype(np.int8), lo_mw.tolist(), hi_mw.tolist(), strict=True)}
    if would_dispatch_mw is not None:
        for info, would in zip(infos.values(), would_dispatch_mw.tolist(), strict=True):
            info["would_dispatch_mw"] = would
    return infos
