"""KPI definitions — the one place they are defined (DESIGN §8).

The environment feeds a :class:`MetricsAccumulator` once per step (streaming, O(1)
memory: nothing is recomputed over history); ``evaluate.py``, ``train`` and
``demo.py`` read the same dict from :meth:`GridSwarmEnv.episode_metrics`.

Definitions (``h = dt_s/3600``, sums over steps ``k``):

* ``system_cost`` ($) = c_bat·Σ|p_bat|·h + c_curt·Σmax(−p_solar, 0)·h
  + c_ev·Σmax(p_ev, 0)·h + v_stored·E_bat,drawn + c_ev,unmet·E_ev,unmet
  + VOLL·``unserved_energy_mwh`` (true costs of the balancing energy,
  :class:`~gridswarm_env.config.CostConfig`); ``E_bat,drawn`` (extra
  ``battery_energy_drawn_mwh``) = −Σ ΔE over the batteries' stores, the energy they
  must buy back (negative: gained).
* ``unserved_energy_mwh`` = Σ_k max(sign(R̄_k)·(R̄_k − D̄_k), 0)·h, where R̄_k is the
  step's mean balancing requirement (the noise-free shortage plus lost generation,
  + shortage / − surplus) and D̄_k the mean balancing power the DERs delivered;
  sign(0) = +1, as the oracle's σ_k (:mod:`policies.oracle`): a step with no
  requirement counts DER absorption as unserved (a shortage it made) and
  injection as delivered, here and in ``delivered_energy_mwh``.
* ``balancing_payments`` ($): what the operator paid at clearing prices (energy
  delivered + reserve capacity); ``der_revenue`` = payments − undelivered penalties.
* frequency KPIs over every physics sub-step; ``max_rocof_hz_per_s`` =
  max_k |f_k − f_{k−w}| / (w·Δt) over the sub-step samples f_k (Δt = physics_dt_s): a
  RoCoF over a window of w sub-steps,
  :attr:`~gridswarm_env.config.EnvConfig.rocof_window_s` (default 0.5 s, the grid codes'
  window, in whole sub-steps), so it does not depend on Δt; f_k = f_0, the initial
  frequency, for k < 0 (the grid starts in a steady state, so every window has its
  full length); ``seconds_outside_band``: time with
  |f − 60| > 0.05 Hz (NERC band); ``stabilization_time_s``: from the scenario's
  disturbance until |f − 60| < 0.05 Hz (back inside the NERC band) for good (0.0 if it
  never left the band, None if it is outside the band at the end of the episode).
* ``emergency_response_latency_ms``: first DER response − event time (None if no
  event, or no response). A response is a reserve contract's activation or the start of
  delivery of the first verified energy contract awarded on a request that covers the
  trip, in the direction of the lost power, whichever comes first (a scenario without a
  reserve target responds only by energy, a dispatch step or more after detection).
* ``emergency_response_mw_100ms`` (extra): reserve power, MW, that the holders whose
  contracts activated within :data:`RESPONSE_WINDOW_S` of the event (DESIGN §7's 100 ms)
  deliver at the window's end ``t_e``: how much of the lost generation was answered in
  time, where the latency only says that someone was (None if no event happened in the
  episode; also, not yet measured, until the step holding ``t_e`` or the episode's last
  step has run: read after a step that ends inside the window, e.g. by a live
  dashboard; 0.0 if nothing activated in time, and always in shadow mode). A holder's
  delivered reserve is its executed balancing power at ``t_e`` less what it would execute
  there without the reserve, ``clip(c + R) − clip(c)`` in its physical bounds (``c`` its
  energy contract, ``R`` its reserve activated by ``t_e``;
  :meth:`MetricsAccumulator.record_window_end`): ``R`` unless a bound cuts it (an EV
  already full, a battery at its floor). Without a ramp limit the reserve acts in full
  from its activation; a holder under a finite ramp limit, whose reserve ramps in at its
  rate from its activation, counts with its power at ``t_e``
  (:meth:`MetricsAccumulator.ramped_response_mw`, a closed form at that instant), capped
  at that difference.
* ``consensus_rate`` = rounds reaching consensus / rounds held (None if none held). A
  round is held when its request exceeds the deadband, from round 1 on: round 0 is
  announced at reset and cleared on bids made from the reset observation, before its
  signal can arrive (a round whose signal congestion delays still counts);
  ``negotiations`` = bids (partly) accepted, in every round.
* ``contracts_signed`` / ``contracts_verified`` / ``contracts_rejected``: the ledger's
  counts this episode (rejected = failed verification at dispatch or authentication on
  receipt); ``contracts_lost``: signed contracts the bus refused (control lane past its
  queue limit) or dropped as obsolete (deferred longer than one agent step), never
  delivered. Signed = verified + rejected + lost + those still in
  flight or held (reserve not activated) at the end.
* ``contracts_late`` (extra): the rejections of ``contracts_rejected`` with reason
  ``late`` (``contracts_rejected_by_reason["late"]``): energy contracts that reached
  their holders at or after their delivery window's end (one arriving inside it executes
  from its arrival, :meth:`ContractFlow.verify_joined
  <gridswarm_env.contract_flow.ContractFlow.verify_joined>`); each is the operator's own
  copy, published when it was issued (a replay, a duplicate or a copy an attacker
  withheld and sent later is ``expired``, :meth:`ContractLedger.verify_batch
  <gridswarm_env.trust.ContractLedger.verify_batch>`). None executes. 0 whenever every
  contract arrives within ``2·dt_s − gate_s`` of its signing (the shipped settings).
* ``requirement_energy_mwh`` / ``delivered_energy_mwh`` (extras): the balancing energy
  required, ``Σ |R̄|·h``, and the DER energy delivered in its direction,
  ``Σ sign(R̄)·D̄·h`` (R̄, D̄: a step's mean requirement and fleet balancing power, MW;
  h = dt_s / 3600): their ratio is the share covered, in shortage and surplus alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridswarm_env.config import BAND_HZ, NOMINAL_HZ, CostConfig, rocof_window_substeps
from gridswarm_env.fleet import KIND_BATTERY, KIND_EV, KIND_SOLAR, kind_selector, scalar_array

# NOMINAL_HZ (60 Hz) is config.NOMINAL_HZ: EnvConfig refuses another nominal frequency
# BAND_HZ, the NERC frequency band 59.95-60.05 Hz, is config.BAND_HZ (also the reward's)
_NOMINAL_HZ = scalar_array(NOMINAL_HZ)   # as a ufunc operand
SETTLE_HZ = BAND_HZ     # stabilization: back inside the NERC band for good (a tighter
# 0.02 Hz threshold was within reach of the ambient load noise: a run that never left the
# band reported minutes of "stabilization")
UFLS_FIRST_STAGE_HZ = 59.3   # ERCOT under-frequency load shedding, first stage
SHEDDING_STAGE_HZ = 59.5     # the emergency scenario's calibration threshold
RESPONSE_WINDOW_S = 0.1      # DESIGN §7: the emergency response must start within 100 ms
#: a step whose samples all deviate less than this is neither outside the band nor unsettled
_INSIDE_HZ = min(BAND_HZ, SETTLE_HZ)

KPI_KEYS = (
    "system_cost", "unserved_energy_mwh", "balancing_payments", "der_revenue",
    "frequency_nadir_hz", "frequency_zenith_hz", "max_abs_deviation_hz",
    "max_rocof_hz_per_s", "seconds_outside_band", "stabilization_time_s",
    "emergency_response_latency_ms", "consensus_rate", "negotiations",
    "contracts_signed", "contracts_verified", "contracts_rejected", "contracts_lost",
    "blocked_attempts", "executed_violations",
    "bus_published", "bus_delivered", "bus_deferred", "bus_dropped",
)

#: The unit of every number in the KPI dict (:meth:`MetricsAccumulator.result`'s keys,
#: then the environment's extras, :meth:`GridSwarmEnv.episode_metrics`); ``""`` for
#: counts and ratios. ``evaluate.py``'s ``results.md`` column headers and ``demo.py``'s
#: summary table take their units from here.
KPI_UNITS: dict[str, str] = {
    "system_cost": "$", "unserved_energy_mwh": "MWh", "balancing_payments": "$",
    "der_revenue": "$", "frequency_nadir_hz": "Hz", "frequency_zenith_hz": "Hz",
    "max_abs_deviation_hz": "Hz", "max_rocof_hz_per_s": "Hz/s",
    "seconds_outside_band": "s", "stabilization_time_s": "s",
    "emergency_response_latency_ms": "ms", "consensus_rate": "", "negotiations": "",
    "contracts_signed": "", "contracts_verified": "", "contracts_rejected": "",
    "contracts_lost": "", "blocked_attempts": "", "executed_violations": "",
    "bus_published": "", "bus_delivered": "", "bus_deferred": "", "bus_dropped": "",
    # extras
    "mean_abs_deviation_hz": "Hz", "requirement_energy_mwh": "MWh",
    "delivered_energy_mwh": "MWh", "battery_throughput_mwh": "MWh",
    "battery_energy_drawn_mwh": "MWh", "curtailed_energy_mwh": "MWh",
    "ev_deferred_energy_mwh": "MWh", "ev_unmet_energy_mwh": "MWh",
    "contracts_late": "", "simulated_seconds": "s", "emergency_response_mw_100ms": "MW",
    # the environment's extras
    "n_agents": "", "steps": "", "stale_bids": "", "dispatch_clamped": "",
    "shadow_dispatch_energy_mwh": "MWh", "shadow_response_latency_ms": "ms",
    "audit_entries": "",
}


@dataclass
class MetricsAccumulator:
    """Streaming accumulator of the KPIs over one episode.

    ``rocof_window_s``: the RoCoF window (a whole multiple of ``physics_dt_s``, else
    ``ValueError``; None: 0.5 s in whole sub-steps, see
    :func:`~gridswarm_env.config.rocof_window_substeps`); ``last_freq_hz``: the
    frequency at t = 0 (and before), the sample before the first.
    """

    costs: CostConfig
    dt_s: float
    physics_dt_s: float
    disturbance_time_s: float
    event_time_s: float | None
    rocof_window_s: float | None = None
    nadir_hz: float = NOMINAL_HZ
    zenith_hz: float = NOMINAL_HZ
    max_rocof_hz_per_s: float = 0.0
    seconds_outside_band: float = 0.0
    abs_dev_integral_hz_s: float = 0.0
    elapsed_s: float = 0.0
    last_unsettled_s: float | None = None
    last_freq_hz: float = NOMINAL_HZ
    battery_throughput_mwh: float = 0.0
    battery_drawn_mwh: float = 0.0   # net energy the battery stores lost (cell side)
    curtailed_mwh: float = 0.0
    ev_deferred_mwh: float = 0.0
    ev_unmet_mwh: float = 0.0
    unserved_mwh: float = 0.0
    requirement_mwh: float = 0.0
    delivered_mwh: float = 0.0
    payments: float = 0.0
    penalties: float = 0.0
    first_response_s: float | None = None
    response_mw_in_window: float = 0.0
    # activations in the window by holders under a finite ramp: owner -> [(at_s, MW, MW/s)]
    ramped_activations: dict[int, list] = field(default_factory=dict)
    # reserve activated in the window per holder, MW, until the step holding the window's
    # end judges it against the holders' bounds (record_window_end)
    window_reserve_mw: dict[int, float] = field(default_factory=dict)
    # what those bounds cut: Σ over holders without a ramp limit, MW, and each ramped
    # holder's deliverable reserve at the window's end, MW (owner -> MW)
    response_cut_mw: float = 0.0
    ramped_response_cap_mw: dict[int, float] = field(default_factory=dict)
    # the step holding the window's end (or the episode's last step) has been reached
    # (close_window_if_ends_in): emergency_response_mw_100ms is measured, None before
    response_window_closed: bool = False
    rounds: int = 0
    consensus_rounds: int = 0
    negotiations: int = 0
    blocked_attempts: int = 0
    executed_violations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # the last step's lowest and highest sample (set by record_frequency)
    step_min_hz: float = field(default=NOMINAL_HZ, init=False, repr=False, compare=False)
    step_max_hz: float = field(default=NOMINAL_HZ, init=False, repr=False, compare=False)
    # kind selectors of the last ``kinds`` array seen (the fleet's, the same every step)
    _kinds_seen: Any = field(default=None, init=False, repr=False, compare=False)
    _selectors: tuple = field(default=(), init=False, repr=False, compare=False)
    # the RoCoF window in sub-steps, its length in s, and the last w samples (f_{k−w+1..k})
    _rocof_w: int = field(default=1, init=False, repr=False, compare=False)
    _rocof_span_s: float = field(default=0.0, init=False, repr=False, compare=False)
    _rocof_tail: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        w = rocof_window_substeps(type(self).__name__, self.rocof_window_s,
                                  self.physics_dt_s, "physics_dt_s")
        self._rocof_w = w
        self._rocof_span_s = w * self.physics_dt_s   # as grid.rocof_hz_per_s divides
        self._rocof_tail = np.full(w, float(self.last_freq_hz))

    @property
    def window_end_s(self) -> float | None:
        """The end of the emergency response window, ``t_e = event_time_s +
        RESPONSE_WINDOW_S`` (DESIGN §7's 100 ms), simulated s; None without an event. The
        window is judged at this time, not by a 0.1 s difference (``1.1 - 1.0`` is
        0.10000000000000009 in floats: a reserve activated at 1.1 s after an event at
        1.0 s is inside it)."""
        return None if self.event_time_s is None else self.event_time_s + RESPONSE_WINDOW_S

    def latency_ms(self, response_s: float | None) -> float | None:
        """A response at ``response_s`` (simulated s) measured from the event, ms
        (``emergency_response_latency_ms``, and the shadow mode's would-be one); None
        without an event or a response."""
        if self.event_time_s is None or response_s is None:
            return None
        return (response_s - self.event_time_s) * 1000.0

    # ----------------------------------------------------------------- frequency
    def record_frequency(self, t_end_s: np.ndarray, freq_hz: np.ndarray) -> float:
        """Add one step's sub-step samples (time at the end of each sub-step, Hz).

        RoCoF is ``|f_k − f_{k−w}| / (w·physics_dt_s)`` over a window of ``w`` sub-steps
        (``rocof_window_s``), its earlier samples from the last ``w`` kept across steps
        (before the first step: the initial frequency); since dividing by a positive
        constant is monotone in floating point, the step's maximum is
        ``max|f_k − f_{k−w}| / (w·physics_dt_s)``, the same bits as
        ``np.abs(grid.rocof_hz_per_s(trace, physics_dt_s, w·physics_dt_s)).max()`` over
        the episode's trace preceded by ``w`` initial samples (not ``rocof_window_s``
        itself: None there means one sample). A NaN sample makes the RoCoF, nadir and
        zenith NaN for good. The step's lowest and highest samples are kept in
        ``step_min_hz`` and ``step_max_hz``.

        :return: ``Σ_k |f_k − 60|`` over the samples, Hz (the reward's grid term uses it).
        """
        dev = np.subtract(freq_hz, _NOMINAL_HZ)
        np.abs(dev, out=dev)
        self.step_min_hz = low = float(np.minimum.reduce(freq_hz))
        self.step_max_hz = high = float(np.maximum.reduce(freq_hz))
        # a NaN extreme replaces the kept one and stays (Python's min(60, nan) is 60)
        nadir, zenith = self.nadir_hz, self.zenith_hz
        if not (low >= nadir or math.isnan(nadir)):
            self.nadir_hz = low
        if not (high <= zenith or math.isnan(zenith)):
            self.zenith_hz = high
        # max |f_k − f_{k−w}| over the step, f_{k−w} from the kept tail where k − w is in
        # an earlier step (np.maximum.reduce propagates a NaN, and a NaN KPI stays NaN)
        w = self._rocof_w
        both = np.concatenate((self._rocof_tail, freq_hz))
        change = np.subtract(both[w:], both[:-w])
        np.abs(change, out=change)
        rocof = float(np.maximum.reduce(change)) / self._rocof_span_s
        self._rocof_tail = both[-w:]
        best = self.max_rocof_hz_per_s
        if not (rocof <= best or math.isnan(best)):
            self.max_rocof_hz_per_s = rocof
        # the largest |f − 60| is at the lowest or the highest sample (rounding x − 60 is
        # monotone in x): inside the band (and the settle band) there, no sample is out
        inside = abs(low - NOMINAL_HZ) < _INSIDE_HZ and abs(high - NOMINAL_HZ) < _INSIDE_HZ
        if not inside:   # (a NaN extreme is not inside either)
            # a NaN sample is not inside the band: counted outside, and unsettled
            self.seconds_outside_band += (float(np.count_nonzero(~(dev <= BAND_HZ)))
                                          * self.physics_dt_s)
        dev_sum = float(np.add.reduce(dev))
        self.abs_dev_integral_hz_s += dev_sum * self.physics_dt_s
        if not inside and float(t_end_s[-1]) > self.disturbance_time_s:   # else no sample
            # is unsettled after the disturbance
            unsettled = ~(dev < SETTLE_HZ)
            if float(t_end_s[0]) <= self.disturbance_time_s:
                unsettled &= t_end_s > self.disturbance_time_s
            unsettled = unsettled.nonzero()[0]
            if unsettled.size:
                self.last_unsettled_s = float(t_end_s[unsettled[-1]])
        self.last_freq_hz = float(freq_hz[-1])
        self.elapsed_s = float(t_end_s[-1])
        return dev_sum

    # ----------------------------------------------------------------- energy and money
    def record_dispatch(self, kinds: np.ndarray, p_mean_mw: np.ndarray,
                        requirement_mean_mw: float, payments: float, penalties: float,
                        ev_unmet_mwh: float, energy_delta_mwh: np.ndarray | None = None,
                        p_sum_mw: float | None = None,
                        kind_sums_mw: tuple[float, float, float] | None = None) -> None:
        """Add one step's executed balancing power (mean over the step, MW per agent) and,
        if given, each agent's stored-energy change over the step (MWh; its batteries'
        sum enters ``system_cost`` at the stored-energy value). ``p_sum_mw``, if given,
        is ``np.add.reduce(p_mean_mw)`` already computed by the caller; ``kind_sums_mw``,
        if given, is ``(Σ|p_battery|, Σmax(−p_solar, 0), Σmax(p_ev, 0))``, each
        ``np.add.reduce`` over the kind's agents in index order, also computed by the
        caller (the environment's settlement has these arrays at hand)."""
        h = self.dt_s / 3600.0
        if kinds is not self._kinds_seen:
            self._kinds_seen = kinds
            self._selectors = tuple(kind_selector(kinds, k)
                                    for k in (KIND_BATTERY, KIND_SOLAR, KIND_EV))
        bat, solar, ev = self._selectors   # slices select the same values as the masks
        add = np.add.reduce
        if kind_sums_mw is None:
            kind_sums_mw = (float(add(np.abs(p_mean_mw[bat]))),
                            float(add(np.maximum(-p_mean_mw[solar], 0.0))),
                            float(add(np.maximum(p_mean_mw[ev], 0.0))))
        throughput, curtailed, deferred = kind_sums_mw
        self.battery_throughput_mwh += throughput * h
        if energy_delta_mwh is not None:
            self.battery_drawn_mwh -= float(add(energy_delta_mwh[bat]))
        self.curtailed_mwh += curtailed * h
        self.ev_deferred_mwh += deferred * h
        self.ev_unmet_mwh += ev_unmet_mwh
        delivered = float(add(p_mean_mw)) if p_sum_mw is None else p_sum_mw
        sign = 1.0 if requirement_mean_mw >= 0 else -1.0
        self.unserved_mwh += max(sign * (requirement_mean_mw - delivered), 0.0) * h
        self.requirement_mwh += abs(requirement_mean_mw) * h
        self.delivered_mwh += sign * delivered * h   # in the requirement's direction
        self.payments += payments
        self.penalties += penalties

    def record_response(self, first_activation_s: float) -> None:
        """Note a DER response (simulated seconds); the earliest is kept."""
        if self.first_response_s is None or first_activation_s < self.first_response_s:
            self.first_response_s = first_activation_s

    def record_activation(self, at_s: float, power_mw: float, owner: int = -1,
                          ramp_mw_per_s: float = math.inf) -> None:
        """A reserve contract of ``power_mw`` activated at ``at_s`` (simulated seconds) by
        holder ``owner``, counted when ``at_s`` <= :attr:`window_end_s`. Without a ramp
        limit the contract counts in full; under a finite ``ramp_mw_per_s`` the holder's
        power at the window's end counts (:meth:`ramped_response_mw`). Either is then cut
        to what the holder's physical bounds let it deliver at the window's end
        (:meth:`record_window_end`)."""
        end_s = self.window_end_s
        if end_s is not None and at_s <= end_s:
            self.window_reserve_mw[owner] = self.window_reserve_mw.get(owner, 0.0) + power_mw
            if ramp_mw_per_s == math.inf:
                self.response_mw_in_window += power_mw
            else:
                self.ramped_activations.setdefault(owner, []).append(
                    (at_s, power_mw, ramp_mw_per_s))

    def close_window_if_ends_in(self, t0_s: float, t1_s: float, *, last: bool = False) -> bool:
        """Close the response window if the step ``[t0_s, t1_s)`` holds its end ``t_e``
        (:attr:`window_end_s`), or is the episode's ``last`` step and starts by
        ``t_e``: then ``response_window_closed`` is set, from which
        ``emergency_response_mw_100ms`` is measured (None before: a step that ends inside
        the window has not seen all of it). Return whether the step must then judge the
        reserve activated in the window (:meth:`record_window_end`): it closed the window
        and some reserve is still unjudged. Called once per step, after the step's
        activations are recorded."""
        end_s = self.window_end_s
        if end_s is None:
            return False
        if not (t0_s <= end_s and (end_s < t1_s or last)):
            return False
        self.response_window_closed = True
        return bool(self.window_reserve_mw)

    def record_window_end(self, contract_mw: np.ndarray, p_lo_mw: np.ndarray,
                          p_hi_mw: np.ndarray) -> None:
        """Judge the reserve activated in the window against what its holders deliver at
        the window's end ``t_e``, in the step that holds it
        (:meth:`close_window_if_ends_in`): with ``R_j`` the reserve holder ``j`` activated
        by ``t_e`` and ``c_j`` its energy contract for the step, dispatch executes
        ``clip(c_j + R_j, p_lo_j, p_hi_j)`` at ``t_e`` where it would execute
        ``clip(c_j, p_lo_j, p_hi_j)`` without the reserve
        (:func:`~gridswarm_env.dispatch.execute`; ``p_lo``, ``p_hi``: the step's
        :func:`~gridswarm_env.dispatch.balancing_bounds`), so the reserve delivers the
        difference. Where neither clip bites that is ``R_j`` itself (nothing recomputed:
        an uncut response keeps its bits); where one does, the rest of ``R_j`` is cut
        from ``emergency_response_mw_100ms`` (a holder under a ramp limit: its power at
        ``t_e`` is capped at the difference)."""
        for owner, held in self.window_reserve_mw.items():
            c, lo, hi = float(contract_mw[owner]), float(p_lo_mw[owner]), float(p_hi_mw[owner])
            with_reserve, without = min(max(c + held, lo), hi), min(max(c, lo), hi)
            if with_reserve == c + held and without == c:
                continue   # no clip bites: the reserve acts in full
            # the reserve's contribution in its own direction, at most the reserve itself
            delivered = math.copysign(
                min(max(math.copysign(1.0, held) * (with_reserve - without), 0.0), abs(held)),
                held)
            if owner in self.ramped_activations:
                self.ramped_response_cap_mw[owner] = abs(delivered)
            else:
                self.response_cut_mw += held - delivered
        self.window_reserve_mw = {}

    def response_mw(self) -> float:
        """``emergency_response_mw_100ms`` of the steps so far (module docstring)."""
        mw = self.response_mw_in_window
        if self.response_cut_mw:
            mw -= self.response_cut_mw
        return mw + self.ramped_response_mw() if self.ramped_activations else mw

    def ramped_response_mw(self) -> float:
        """Reserve power, MW, that holders under a finite ramp limit deliver at the window's
        end ``t_e`` (:attr:`window_end_s`): each holder follows the step target
        ``T(t) = Σ_c R_c·[t ≥ t_c]`` of its contracts at its ramp ``r``, from rest at its
        first activation, so its power at ``t_e`` is the closed form of a rate-limited
        follower of a non-decreasing target,

            p(t_e) = min( T(t_e), min_c [ T(t_c⁻) + r·(t_e − t_c) ] )

        (one contract: ``min(R, r·(t_e − t_c))``), the instant ``t_e`` and not a sub-step:
        the physics' 50 ms sub-steps do not enter it. It assumes each holder ramps from
        rest; one already moving under an energy contract reaches its reserve sooner
        (from charging it stops at once) or later (still ramping up to its contract)."""
        end_s = self.window_end_s
        if not self.ramped_activations or end_s is None:
            return 0.0
        total = 0.0
        for owner in sorted(self.ramped_activations):
            rows = sorted(self.ramped_activations[owner])
            target = sum(abs(mw) for _, mw, _ in rows)
            power, before = target, 0.0
            for at_s, mw, ramp in rows:
                power = min(power, before + ramp * (end_s - at_s))
                before += abs(mw)
            if owner in self.ramped_response_cap_mw:   # its bounds cut it (record_window_end)
                power = min(power, self.ramped_response_cap_mw[owner])
            total += max(power, 0.0)
        return total

    def record_round(self, held: bool, consensus: bool, n_accepted: int) -> None:
        """One cleared round: ``held`` rounds count towards ``consensus_rate``; accepted
        bids count as negotiations in every round."""
        self.negotiations += int(n_accepted)
        if held:
            self.rounds += 1
            self.consensus_rounds += int(consensus)

    # ----------------------------------------------------------------- result
    @property
    def system_cost(self) -> float:
        c = self.costs
        return (c.battery_degradation_per_mwh * self.battery_throughput_mwh
                + c.solar_curtailment_per_mwh * self.curtailed_mwh
                + c.ev_deferral_per_mwh * self.ev_deferred_mwh
                + c.stored_energy_value_per_mwh * self.battery_drawn_mwh
                + c.ev_unmet_departure_per_mwh * self.ev_unmet_mwh
                + c.voll_per_mwh * self.unserved_mwh)

    def stabilization_time_s(self) -> float | None:
        if self.elapsed_s <= self.disturbance_time_s:
            return None
        if self.last_unsettled_s is None:
            return 0.0
        if not abs(self.last_freq_hz - NOMINAL_HZ) < SETTLE_HZ:   # (NaN: not settled)
            return None
        return self.last_unsettled_s + self.physics_dt_s - self.disturbance_time_s

    def result(self, *, contracts: dict[str, Any], bus_totals: dict[str, int]) -> dict[str, Any]:
        """The flat KPI dict (keys :data:`KPI_KEYS` first, then extras)."""
        out: dict[str, Any] = {
            "system_cost": self.system_cost,
            "unserved_energy_mwh": self.unserved_mwh,
            "balancing_payments": self.payments,
            "der_revenue": self.payments - self.penalties,
            "frequency_nadir_hz": self.nadir_hz,
            "frequency_zenith_hz": self.zenith_hz,
            "max_abs_deviation_hz": max(NOMINAL_HZ - self.nadir_hz, self.zenith_hz - NOMINAL_HZ),
            "max_rocof_hz_per_s": self.max_rocof_hz_per_s,
            "seconds_outside_band": self.seconds_outside_band,
            "stabilization_time_s": self.stabilization_time_s(),
            "emergency_response_latency_ms": self.latency_ms(self.first_response_s),
            "consensus_rate": (self.consensus_rounds / self.rounds) if self.rounds else None,
            "negotiations": self.negotiations,
            "contracts_signed": int(contracts.get("signed", 0)),
            "contracts_verified": int(contracts.get("verified", 0)),
            "contracts_rejected": int(contracts.get("rejected", 0)),
            "contracts_lost": int(contracts.get("lost", 0)),
            "blocked_attempts": self.blocked_attempts,
            "executed_violations": self.executed_violations,
            "bus_published": int(bus_totals.get("published", 0)),
            "bus_delivered": int(bus_totals.get("delivered", 0)),
            "bus_deferred": int(bus_totals.get("deferred", 0)),
            "bus_dropped": int(bus_totals.get("dropped", 0)),
            # extras (not part of the contract, but useful)
            "mean_abs_deviation_hz": (self.abs_dev_integral_hz_s / self.elapsed_s
                                      if self.elapsed_s > 0 else 0.0),
            "requirement_energy_mwh": self.requirement_mwh,
            "delivered_energy_mwh": self.delivered_mwh,
            "battery_throughput_mwh": self.battery_throughput_mwh,
            "battery_energy_drawn_mwh": self.battery_drawn_mwh,
            "curtailed_energy_mwh": self.curtailed_mwh,
            "ev_deferred_energy_mwh": self.ev_deferred_mwh,
            "ev_unmet_energy_mwh": self.ev_unmet_mwh,
            "contracts_rejected_by_reason": dict(contracts.get("rejected_by_reason", {})),
            "contracts_late": int(contracts.get("rejected_by_reason", {}).get("late", 0)),
            "simulated_seconds": self.elapsed_s,
            "emergency_response_mw_100ms": (
                self.response_mw()
                if (self.event_time_s is not None and self.elapsed_s > self.event_time_s
                    and self.response_window_closed)
                else None),
        }
        out.update(self.extra)
        return out


def is_finite_or_none(x: Any) -> bool:
    """True for None or a finite float (JSON-safe KPI values)."""
    return x is None or (isinstance(x, int | float) and math.isfinite(x))


def nonfinite_keys(metrics: Mapping[str, Any]) -> list[str]:
    """KPI keys whose value is a NaN or infinite number: a broken episode, which
    ``evaluate.py`` and ``python -m train``'s tensorboard scalars leave out of their means
    and count (strict JSON can only hold them as null, like a KPI that is legitimately
    None)."""
    return [k for k, v in metrics.items() if not isinstance(v, bool)
            and isinstance(v, float | np.floating) and not math.isfinite(v)]


def json_safe(value: Any) -> Any:
    """``value`` as strict-JSON types, recursively: NaN/±inf → None, NumPy scalars and
    arrays → Python, tuples → lists, mapping keys → str, other objects → ``str``.

    Used for every KPI file the tools write (``evaluate.py``, ``demo.py --json``).
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)
