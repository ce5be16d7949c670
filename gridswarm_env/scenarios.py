"""Scenario registry: ``price_spike``, ``solar_surplus`` and ``emergency``.

A :class:`Scenario` is a frozen description of one episode: its timeline, the
system's net load and scheduled utility generation, the contingency (if any),
solar irradiance, the price band of the market and its success criterion.

Imbalance model (MW, positive = shortage the DERs should cover)::

    net_load(t)  = base_load + load_step · ramp((t − load_step_start) / load_ramp)
                   + ε(t)                           ε: AR(1), std load_noise_std_mw,
                                                    sampled every LOAD_NOISE_SAMPLE_S
    gen_sched(t) = base_load + gen_follow · load_step
                   · ramp((t − load_step_start − gen_delay) / gen_ramp)
    lost_gen(t)  = contingency_mw · 1[t ≥ event_time]
    shortage(t)  = net_load(t) − gen_sched(t) + lost_gen(t)

``ramp(x) = clip(x, 0, 1)``. The grid sees ``u = −shortage + P_DER`` (p.u. of
the system base). The operator forecasts the shortage without ε (its forecast
error) and, after the event, knows the lost generation. By default the tripped unit
leaves its inertia and governor behind; ``contingency_unit_share`` > 0 takes that share
of the system's ``H`` and ``Km`` out at the trip (:class:`Scenario`).

Parameters can be overridden: ``get_scenario("price_spike", load_step_mw=120)``
or from a TOML file (:func:`load_scenario_file`).

Per-episode randomization (opt-in; off in the shipped scenarios): with
``magnitude_jitter_frac = j_m`` and/or ``timing_jitter_s = j_t`` > 0 every ``reset``
plays a scenario drawn by :meth:`Scenario.draw_episode` from four independent
``u_i ~ U[−1, 1)``::

    load_step_mw      · (1 + j_m · u_0)        contingency_mw · (1 + j_m · u_1)
    load_step_start_s + j_t · u_2              event_time_s   + j_t · u_3

(a time only moves when its disturbance exists). The ramps, the generation's delay
after the load step, noise, solar path, price band, detection delay and the
operator's ``reserve_target_mw`` (its procurement policy, not nature) stay as given.
:data:`RANDOMIZE_PRESET` is the command lines' ``--randomize``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gridswarm_env.config import (
    MAX_EPISODE_STEPS,
    MAX_POWER_MW,
    MAX_POWER_WHY,
    MAX_PRICE_PER_MWH,
    MAX_PRICE_WHY,
    MAX_TIME_S,
    MAX_TIME_WHY,
    check_at_most,
    check_finite,
    check_int_at_least,
    check_int_at_most,
    check_non_negative,
    check_positive,
    check_range,
    check_real,
    override,
    read_toml_bytes,
    store,
)

#: what a scenario's name may hold: ``evaluate.py`` names output files (``freq_<name>.png``),
#: tensorboard tags and the results' keys by it (:func:`load_scenario_file` and
#: ``evaluate`` refuse other names)
SCENARIO_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
SCENARIO_NAME_TEXT = "letters, digits, '_', '-' and '.'"

PRODUCT_ENERGY = 0
PRODUCT_RESERVE = 1

#: the fields :meth:`Scenario.draw_episode` changes (recorded in the audit trail)
EPISODE_DRAWN_FIELDS = ("load_step_mw", "load_step_start_s", "contingency_mw", "event_time_s")

#: ``--randomize`` of ``evaluate.py``, ``python -m train`` and ``demo.py``: ±10 % on the
#: load step and the trip, ±5 s on their times (an assumption of this project, not a
#: sourced figure: wide enough that the timeline cannot be read off ``progress`` or the
#: time of day — five market rounds either way — and that no two episodes price the same
#: requirement). Every shipped scenario stays valid over the whole range: the load steps
#: start at 20 s (15-25 s), the trip at 10 s (5-15 s: after round 1's delivery at
#: 2·dt_s = 2 s, well inside the 120 s episode), and 121 MW / 110 MW stay far below the
#: 850 MW base load. The emergency's 100 MW reserve target is kept (the operator's
#: procurement, not nature): a trip above it leaves the rest to the energy rounds.
RANDOMIZE_PRESET: dict[str, float] = {"magnitude_jitter_frac": 0.10, "timing_jitter_s": 5.0}


#: The load noise ε is an AR(1) process sampled on this fixed grid, s (the default physics
#: sub-step) and held within each sample: the environment reads it at each physics
#: sub-step's midpoint, so a run with finer sub-steps (``GridParams.physics_dt_s`` = 10 ms)
#: sees the same noise realisation as the default 50 ms and a sub-step study compares like
#: with like (drawn per sub-step, a change of sub-step also changed the noise).
LOAD_NOISE_SAMPLE_S = 0.05


@dataclass(frozen=True)
class Scenario:
    """One episode's timeline and parameters (see the module docstring for the model).

    :param name: registry name.
    :param description: what happens in the episode (shown by ``demo.py`` and the docs).
    :param episode_steps: number of agent steps (truncation after them).
    :param start_hour: local time of day at t = 0 (time features).
    :param base_load_mw: system load at t = 0, balanced by scheduled generation.
    :param load_step_mw: net-load change (+ rise, − fall, e.g. behind-the-meter PV).
    :param load_step_start_s: when the load step starts, s.
    :param load_ramp_s: over how long the load step ramps in, s (> 0).
    :param gen_follow: share of the load step the scheduled generation follows.
    :param gen_delay_s: delay after ``load_step_start_s`` before the scheduled generation
        starts to follow, s.
    :param gen_ramp_s: over how long the scheduled generation ramps to follow, s (> 0).
    :param load_noise_std_mw: stationary standard deviation of the load noise ε, MW.
    :param load_noise_tau_s: correlation time of ε, s (AR(1) coefficient
        ``exp(−LOAD_NOISE_SAMPLE_S / tau)``).
    :param event_time_s: time of the contingency (the trip), s; ``inf``: none.
    :param success: the scenario's success criterion, in words (evaluation reports).
    :param solar_irradiance_start, solar_irradiance_end: solar availability (fraction
        of rated PV) at t = 0 and from ``solar_ramp_s`` on (:meth:`irradiance`).
    :param solar_ramp_s: time over which the availability moves linearly from start to
        end, s (default 300 s: the shipped 300-step episodes at the default 1 s step).
    :param price_floor_per_mwh, price_cap_per_mwh: the band of bid price levels.
    :param contingency_mw: generation lost at ``event_time_s`` (0 = none): the tripped
        unit's scheduled output (a step in ``u``; the governors' deviation from the
        schedule is in the grid's states, and with ``contingency_unit_share`` > 0 the
        unit's share of it leaves too).
    :param reserve_target_mw: reserve the operator buys before the event (when > 0,
        every round announced before the operator detects the trip, at ``event_time_s +
        detection_delay_s``, is a reserve round until the target is met or a reserve
        round clears short, and then one only where no energy is needed: a forecast
        shortage beyond the deadband is bought as energy,
        :func:`~gridswarm_env.market.operator_request`; a target > 0 needs a
        trip: ``contingency_mw > 0`` at a finite ``event_time_s``).
    :param detection_delay_s: from the trip until the operator's emergency broadcast
        is published. The emergency scenario's 20 ms (about one 60 Hz cycle, or one
        PMU frame at 60 frames/s) assumes *event-based* detection: the tripped unit's
        breaker status reaches the operator directly (a transfer-trip or IEC 61850
        GOOSE signal). Detecting the trip from the frequency alone would take hundreds
        of ms (RoCoF relays measure over windows of 100-500 ms), so the shipped
        response latencies are a best case. The DERs act the moment the broadcast
        reaches them: no inverter or charger actuation delay is modelled (fast frequency
        response products allow 250 ms to 1 s; EV chargers answer in seconds), so the
        latency is this delay plus the bus's. This delay stands in for detection plus
        actuation when raised; measured (``emergency``, heuristic, seed 0, 100 agents):
        20 / 100 / 250 / 500 / 1000 ms give a nadir of 59.970 / 59.914 / 59.822 /
        59.692 / 59.505 Hz (unassisted 59.346 Hz).
    :param disturbance_time_s: time from which ``stabilization_time_s`` is measured.
        ``None`` (the default, and the shipped scenarios) derives it: the first
        disturbance, the contingency at ``event_time_s`` (when :attr:`has_event`) or the
        load step at ``load_step_start_s`` (when ``load_step_mw != 0``), else 0. An
        override of a scenario whose value was derived derives it again, so
        ``get_scenario("emergency", event_time_s=30)`` measures from 30 s; a value given
        explicitly is kept as given.
    :param magnitude_jitter_frac: per-episode relative jitter ``j`` of the magnitudes, in
        [0, 1): each episode scales ``load_step_mw`` and ``contingency_mw`` by independent
        factors ``1 + U(−j, j)`` (:meth:`draw_episode`). 0 (the default) draws nothing.
        ``(1 + j)·|load_step_mw|`` and ``(1 + j)·contingency_mw`` must stay below
        ``base_load_mw``.
    :param timing_jitter_s: per-episode jitter ``j`` of the disturbance times, s, >= 0:
        each episode shifts ``load_step_start_s`` (when ``load_step_mw != 0``) and
        ``event_time_s`` (when :attr:`has_event`) by independent ``U(−j, j)``. 0 (the
        default) draws nothing. No time may move below 0: ``j <= load_step_start_s`` and
        ``j <= event_time_s`` (the environment also needs ``event_time_s − j > 2·dt_s``
        for a reserve round before the earliest trip). A derived ``disturbance_time_s``
        follows the drawn times; an explicit one is kept.
    :param contingency_unit_share: the share ``s`` of the system's inertia ``H`` and
        governor gain ``Km`` (both on ``GridParams.system_base_mw``) that leaves with the
        tripped unit at ``event_time_s``, in [0, 1): from the trip instant the grid runs
        with ``H·(1 − s)`` and ``Km·(1 − s)``
        (:meth:`~gridswarm_env.grid.GridParams.after_unit_trip`). 0 (the default, and the
        shipped scenarios, which are calibrated on it): the system keeps both, as if the
        unit's rotor and governor stayed on line. For a unit like the system's average,
        ``s`` = its rating / ``system_base_mw`` (0.1 for ``emergency``'s 100 MW unit on
        the 1 000 MW base: ``H`` 4 -> 3.6 s, ``Km`` 0.95 -> 0.855; the unassisted nadir
        59.29 Hz instead of 59.35 Hz); 0 for a unit without inertia or governor (an
        inverter-based plant). It is the unit's rating, so the magnitude jitter (which
        moves the MW lost) leaves it as given. Needs a trip when > 0. It is checked against
        nothing but [0, 1): no rating is known to check it with (``contingency_mw`` is
        the unit's output, below its rating), so give it as the unit's rating /
        ``system_base_mw``. The governor and turbine states are scaled by ``1 − s`` at
        the trip too: the tripped unit's share of the governors' answer held before it
        leaves with it (:meth:`~gridswarm_env.grid.GridModel.advance_switching`).

    Defaults and the shipped values are assumptions of this project, chosen for a
    legible episode rather than taken from one system's data: an 850 MW balancing area
    on the grid's 1 000 MW base (``GridParams.system_base_mw``), so the 100 MW trip is
    0.10 p.u.; load noise of 1.5 MW standard deviation (0.18 % of the load) correlated
    over 20 s, minute-scale variability the DERs see as a moving requirement; scheduled
    generation that answers a load step after 60 s and over 180 s, the time scale of
    secondary control (AGC), compressed from the minutes of real dispatch (ENTSO-E's
    aFRR fully activates within 5 min) so the DERs' window fits a 300 s episode; price
    bands of 0-500 $/MWh (a scarcity evening), −50-50 $/MWh (a midday surplus, where
    negative prices occur in solar-heavy markets such as CAISO) and 0-100 $/MWh (the
    emergency's reserve rounds). The detection delay has its own paragraph above.
    """

    name: str
    description: str
    episode_steps: int
    start_hour: float
    base_load_mw: float = 850.0
    load_step_mw: float = 0.0
    load_step_start_s: float = 0.0
    load_ramp_s: float = 60.0
    gen_follow: float = 1.0
    gen_delay_s: float = 60.0
    gen_ramp_s: float = 180.0
    load_noise_std_mw: float = 1.5
    load_noise_tau_s: float = 20.0
    solar_irradiance_start: float = 0.5
    solar_irradiance_end: float = 0.5
    solar_ramp_s: float = 300.0
    price_floor_per_mwh: float = 0.0
    price_cap_per_mwh: float = 500.0
    contingency_mw: float = 0.0
    event_time_s: float = math.inf
    detection_delay_s: float = 0.02
    reserve_target_mw: float = 0.0
    disturbance_time_s: float | None = None
    success: str = ""
    magnitude_jitter_frac: float = 0.0
    timing_jitter_s: float = 0.0
    contingency_unit_share: float = 0.0
    # whether disturbance_time_s was derived (None given): overrides derive it again
    _disturbance_derived: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("name", "description", "success"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"Scenario.{name} = {getattr(self, name)!r}: expected a string")
        owner = f"Scenario({self.name!r})"
        store(self, "episode_steps",
              check_int_at_least(owner, "episode_steps", self.episode_steps, 1))
        check_int_at_most(owner, "episode_steps", self.episode_steps, MAX_EPISODE_STEPS,
                          "reset precomputes the episode's load and solar profiles")
        store(self, "start_hour",
              check_range(owner, "start_hour", self.start_hour, 0.0, 24.0, hi_open=True))
        store(self, "base_load_mw", check_positive(owner, "base_load_mw", self.base_load_mw))
        for name in ("load_step_mw", "price_floor_per_mwh", "price_cap_per_mwh"):
            store(self, name, check_finite(owner, name, getattr(self, name)))
        for name in ("load_step_start_s", "gen_delay_s", "load_noise_std_mw",
                     "contingency_mw", "detection_delay_s", "reserve_target_mw"):
            store(self, name, check_non_negative(owner, name, getattr(self, name)))
        for name in ("load_ramp_s", "gen_ramp_s", "load_noise_tau_s", "solar_ramp_s"):
            store(self, name, check_positive(owner, name, getattr(self, name)))
        for name in ("gen_follow", "solar_irradiance_start", "solar_irradiance_end"):
            store(self, name, check_range(owner, name, getattr(self, name), 0.0, 1.0))
        store(self, "event_time_s",
              check_real(owner, "event_time_s", self.event_time_s, allow_inf=True))
        for name in ("base_load_mw", "reserve_target_mw", "load_noise_std_mw"):
            check_at_most(owner, name, getattr(self, name), MAX_POWER_MW, "MW", MAX_POWER_WHY)
        for name in ("price_floor_per_mwh", "price_cap_per_mwh"):
            check_at_most(owner, name, getattr(self, name), MAX_PRICE_PER_MWH, "$/MWh",
                          MAX_PRICE_WHY, signed=True)
        if abs(self.load_step_mw) >= self.base_load_mw:
            raise ValueError(f"{owner}.load_step_mw = {self.load_step_mw!r}: its size must be "
                             f"below base_load_mw ({self.base_load_mw!r})")
        if self.price_cap_per_mwh <= self.price_floor_per_mwh:
            raise ValueError(f"{owner}: price_cap_per_mwh ({self.price_cap_per_mwh}) must be "
                             f"> price_floor_per_mwh ({self.price_floor_per_mwh})")
        if not (self.event_time_s >= 0.0):
            raise ValueError(f"{owner}.event_time_s = {self.event_time_s!r}: must be >= 0 "
                             "(inf = no event)")
        for name in ("load_step_start_s", "load_ramp_s", "gen_delay_s", "gen_ramp_s",
                     "load_noise_tau_s", "detection_delay_s", "solar_ramp_s"):
            check_at_most(owner, name, getattr(self, name), MAX_TIME_S, "s", MAX_TIME_WHY)
        if math.isfinite(self.event_time_s):
            check_at_most(owner, "event_time_s", self.event_time_s, MAX_TIME_S, "s",
                          MAX_TIME_WHY + "; inf = no event")
        if self.reserve_target_mw > 0.0 and not (
                self.contingency_mw > 0.0 and math.isfinite(self.event_time_s)):
            # the operator holds reserve until it detects a trip (it does not know
            # event_time_s): with no trip it would pay for reserve never used
            raise ValueError(f"{owner}.reserve_target_mw = {self.reserve_target_mw!r}: needs a "
                             "trip, contingency_mw > 0 at a finite event_time_s (got "
                             f"contingency_mw = {self.contingency_mw!r}, event_time_s = "
                             f"{self.event_time_s!r}): the operator holds that reserve until it "
                             "detects the trip, so with none it would buy and pay for reserve "
                             "that is never used; set "
                             "reserve_target_mw = 0 or give a contingency_mw > 0 and a finite "
                             "event_time_s")
        if self.contingency_mw >= self.base_load_mw:
            raise ValueError(f"{owner}.contingency_mw = {self.contingency_mw!r}: must be < "
                             f"base_load_mw ({self.base_load_mw})")
        self._check_jitter(owner)
        store(self, "contingency_unit_share", check_range(
            owner, "contingency_unit_share", self.contingency_unit_share, 0.0, 1.0,
            hi_open=True))
        if self.contingency_unit_share > 0.0 and not self.has_event:
            raise ValueError(f"{owner}.contingency_unit_share = {self.contingency_unit_share!r}: "
                             "needs a trip, contingency_mw > 0 at a finite event_time_s (got "
                             f"contingency_mw = {self.contingency_mw!r}, event_time_s = "
                             f"{self.event_time_s!r}): it is the share of the system's inertia "
                             "and governor gain that leaves with the tripped unit; set "
                             "contingency_unit_share = 0 or give a trip")
        if self.disturbance_time_s is None:   # the first disturbance (see the docstring)
            times = [self.event_time_s] if self.has_event else []
            if self.load_step_mw != 0.0:
                times.append(self.load_step_start_s)
            store(self, "disturbance_time_s", min(times, default=0.0))
            store(self, "_disturbance_derived", True)
        else:
            store(self, "disturbance_time_s", check_non_negative(
                owner, "disturbance_time_s", self.disturbance_time_s))
            check_at_most(owner, "disturbance_time_s", self.disturbance_time_s, MAX_TIME_S, "s",
                          MAX_TIME_WHY)

    def _check_jitter(self, owner: str) -> None:
        """Validate the per-episode jitter: every scenario it can draw must be valid."""
        store(self, "magnitude_jitter_frac", check_range(
            owner, "magnitude_jitter_frac", self.magnitude_jitter_frac, 0.0, 1.0,
            hi_open=True))
        store(self, "timing_jitter_s",
              check_non_negative(owner, "timing_jitter_s", self.timing_jitter_s))
        check_at_most(owner, "timing_jitter_s", self.timing_jitter_s, MAX_TIME_S, "s",
                      MAX_TIME_WHY)
        top = 1.0 + self.magnitude_jitter_frac
        for name in ("load_step_mw", "contingency_mw"):
            size = abs(getattr(self, name))
            if self.magnitude_jitter_frac > 0.0 and top * size >= self.base_load_mw:
                limit = min(1.0, self.base_load_mw / size - 1.0)
                raise ValueError(
                    f"{owner}.magnitude_jitter_frac = {self.magnitude_jitter_frac!r}: lets "
                    f"{name} ({getattr(self, name)!r}) reach {top * size:g} MW in size, which "
                    f"must stay below base_load_mw ({self.base_load_mw!r}); allowed: 0 <= "
                    f"magnitude_jitter_frac < {limit:g}")
        j = self.timing_jitter_s
        times = (("load_step_start_s", self.load_step_mw != 0.0, "load step"),
                 ("event_time_s", self.has_event, "trip"))
        for name, present, what in times:
            if j > 0.0 and present and j > getattr(self, name):
                raise ValueError(
                    f"{owner}.timing_jitter_s = {j!r}: would move the {what} at {name} = "
                    f"{getattr(self, name)!r} s before t = 0; allowed: 0 <= timing_jitter_s "
                    f"<= {getattr(self, name)!r}")

    @property
    def has_event(self) -> bool:
        """True when a contingency happens inside the episode."""
        return self.contingency_mw > 0.0 and math.isfinite(self.event_time_s)

    @property
    def detection_time_s(self) -> float:
        """When the operator detects the trip and broadcasts it, ``event_time_s +
        detection_delay_s``, s; ``inf`` without an event (:attr:`has_event`)."""
        return self.event_time_s + self.detection_delay_s if self.has_event else math.inf

    @property
    def randomized(self) -> bool:
        """True when episodes are drawn (:meth:`draw_episode`): some jitter is > 0."""
        return self.magnitude_jitter_frac > 0.0 or self.timing_jitter_s > 0.0

    def drawn_values(self) -> dict[str, float]:
        """The values :meth:`draw_episode` sets (:data:`EPISODE_DRAWN_FIELDS`), by name."""
        return {name: getattr(self, name) for name in EPISODE_DRAWN_FIELDS}

    def draw_episode(self, rng: np.random.Generator) -> Scenario:
        """One episode's scenario: the jittered magnitudes and times (module docstring).

        Draws ``u = rng.uniform(−1, 1, 4)`` (always four numbers, whichever
        disturbances exist) and returns the scenario with ``load_step_mw ·
        (1 + j_m·u_0)``, ``contingency_mw · (1 + j_m·u_1)``, ``load_step_start_s +
        j_t·u_2`` (only when ``load_step_mw != 0``) and ``event_time_s + j_t·u_3`` (only
        when :attr:`has_event`), its own jitter 0 (a realisation, not a distribution).
        Without jitter it returns ``self`` and draws nothing.
        """
        if not self.randomized:
            return self
        u = rng.uniform(-1.0, 1.0, 4)
        j_m, j_t = self.magnitude_jitter_frac, self.timing_jitter_s
        changes: dict[str, Any] = {
            "load_step_mw": self.load_step_mw * (1.0 + j_m * float(u[0])),
            "contingency_mw": self.contingency_mw * (1.0 + j_m * float(u[1])),
            "magnitude_jitter_frac": 0.0, "timing_jitter_s": 0.0}
        if self.load_step_mw != 0.0:   # j_t <= start (validated): max() only for rounding
            changes["load_step_start_s"] = max(self.load_step_start_s + j_t * float(u[2]), 0.0)
        if self.has_event:
            changes["event_time_s"] = max(self.event_time_s + j_t * float(u[3]), 0.0)
        return get_scenario(self, **changes)

    def price_levels_per_mwh(self, n_levels: int) -> np.ndarray:
        """The price of each price level: ``linspace(floor, cap, n_levels)``."""
        return np.linspace(self.price_floor_per_mwh, self.price_cap_per_mwh, n_levels)

    def irradiance(self, t_s: np.ndarray | float) -> np.ndarray:
        """Solar availability as a fraction of rated PV at ``t_s``: ``I(t) = I_start +
        (I_end − I_start)·clip(t / solar_ramp_s, 0, 1)`` (a time in seconds, like the
        load's ramps, so a change of ``dt_s`` does not stretch it)."""
        frac = np.clip(np.asarray(t_s, dtype=float) / self.solar_ramp_s, 0.0, 1.0)
        return self.solar_irradiance_start + (self.solar_irradiance_end
                                              - self.solar_irradiance_start) * frac

    def forecast_shortage_mw(self, t_s: np.ndarray | float) -> np.ndarray:
        """Shortage without the load noise ε (the operator's forecast), before any event."""
        t = np.asarray(t_s, dtype=float)
        load = self.load_step_mw * np.clip((t - self.load_step_start_s) / self.load_ramp_s, 0, 1)
        gen = self.gen_follow * self.load_step_mw * np.clip(
            (t - self.load_step_start_s - self.gen_delay_s) / self.gen_ramp_s, 0, 1)
        return load - gen

    def net_load_mw(self, t_s: np.ndarray | float) -> np.ndarray:
        """System net load without the noise ε (MW)."""
        t = np.asarray(t_s, dtype=float)
        return self.base_load_mw + self.load_step_mw * np.clip(
            (t - self.load_step_start_s) / self.load_ramp_s, 0, 1)

    def lost_generation_mw(self, t_s: np.ndarray | float) -> np.ndarray:
        """Generation lost to the contingency at time ``t_s``."""
        t = np.asarray(t_s, dtype=float)
        return np.where(t >= self.event_time_s, self.contingency_mw, 0.0)

    def lost_generation_mean_mw(self, t_start_s: np.ndarray, t_end_s: np.ndarray
                                ) -> np.ndarray:
        """Mean generation lost over each interval ``[t_start, t_end)``, MW.

        The exact interval average of the step ``contingency_mw · 1[t ≥ event_time]``:
        ``contingency · clip((t_end − event)/(t_end − t_start), 0, 1)``, so a trip inside
        a physics sub-step counts for the part of the sub-step after it (zero-order hold
        of the mean) instead of moving to the sub-step's start or end.
        """
        t0 = np.asarray(t_start_s, dtype=float)
        t1 = np.asarray(t_end_s, dtype=float)
        event = self.event_time_s
        if not math.isfinite(event):
            return np.zeros(np.broadcast(t0, t1).shape)
        share = np.clip((t1 - event) / (t1 - t0), 0.0, 1.0)
        share = np.where(t0 >= event, 1.0, share)
        return self.contingency_mw * share

    def load_noise_mw(self, n_samples: int, sample_dt_s: float,
                      rng: np.random.Generator) -> np.ndarray:
        """AR(1) load noise ε with stationary std ``load_noise_std_mw`` and time constant tau."""
        if self.load_noise_std_mw == 0.0:
            return np.zeros(n_samples)
        a = math.exp(-sample_dt_s / self.load_noise_tau_s)
        shocks = rng.normal(0.0, self.load_noise_std_mw * math.sqrt(1 - a * a), n_samples)
        # exact AR(1) recursion x_k = a x_{k-1} + w_k, x_0 ~ stationary (once per reset)
        shocks[0] = rng.normal(0.0, self.load_noise_std_mw)
        out = shocks.tolist()
        for k in range(1, n_samples):
            out[k] += a * out[k - 1]
        return np.asarray(out)


# The EVs' departure slack is hours with the default fleet (FleetConfig): every EV may
# defer its charging for the whole episode; the departure rule does not bind here.
PRICE_SPIKE = Scenario(
    name="price_spike",
    description=(
        "6 PM evening peak. Timeline: t = 0-20 s balanced; from 20 s net load rises by "
        "110 MW over 60 s (residential peak while rooftop PV fades); scheduled generation "
        "starts to follow at t = 80 s and ramps over 180 s, so a shortage opens at t = 20 s, "
        "peaks at ~110 MW at t = 80 s and closes by ~260 s: more than the batteries can give, "
        "so EV "
        "fleets must defer charging where their departure slack allows. The operator "
        "broadcasts high prices (band 0-500 $/MWh); agents compete to sell stored energy. "
        "Time is compressed so that a 5-minute episode holds the whole event: the ramp is "
        "13 %/min of the 850 MW load, where real evening net-load ramps stay well under "
        "1 %/min (read it as a fast disturbance, not a measured peak)."
    ),
    episode_steps=300,
    start_hour=18.0,
    load_step_mw=110.0,
    load_step_start_s=20.0,
    load_ramp_s=60.0,
    gen_delay_s=60.0,
    gen_ramp_s=180.0,
    solar_irradiance_start=0.15,
    solar_irradiance_end=0.08,
    price_floor_per_mwh=0.0,
    price_cap_per_mwh=500.0,
    success="unserved_energy_mwh ~ 0 and frequency within 59.95-60.05 Hz most of the time "
            "(seconds_outside_band small) at the lowest system_cost.",
)

SOLAR_SURPLUS = Scenario(
    name="solar_surplus",
    description=(
        "Midday over-generation. Timeline: t = 0-20 s balanced; from 20 s clouds clear and "
        "behind-the-meter PV lowers net load by 70 MW over 60 s; must-run generation starts "
        "to back down at t = 80 s and ramps over 180 s, so a surplus opens at t = 20 s, peaks "
        "at ~70 MW at t = 80 s and closes by ~260 s. Prices are low "
        "or negative (band -50-50 $/MWh); agents absorb by charging, curtailing PV or "
        "charging EVs faster. Time is compressed as in price_spike: 8 %/min of the load, "
        "far faster than a geographically smoothed fleet of rooftop PV changes."
    ),
    episode_steps=300,
    start_hour=12.5,
    load_step_mw=-70.0,
    load_step_start_s=20.0,
    load_ramp_s=60.0,
    gen_delay_s=60.0,
    gen_ramp_s=180.0,
    solar_irradiance_start=0.7,
    solar_irradiance_end=0.9,
    price_floor_per_mwh=-50.0,
    price_cap_per_mwh=50.0,
    success="surplus absorbed (unserved_energy_mwh ~ 0), zenith below 60.05 Hz, lowest "
            "system_cost.",
)

EMERGENCY = Scenario(
    name="emergency",
    description=(
        "Generator trip. Timeline: until it detects a trip the operator buys reserve "
        "(product = reserve) for 100 MW; agents bid (power, price) and accepted bids become "
        "standing signed reserve contracts. At t = 10 s a 100 MW unit (0.10 p.u.) trips. The "
        "operator detects it after 20 ms and broadcasts on the EMERGENCY lane; each DER "
        "holding a reserve contract activates it the moment the broadcast reaches it "
        "(sub-step resolution). Energy rounds from the next gate closure (10.25 s) buy "
        "what the activated reserve does not cover (nothing with the default trip, which the "
        "100 MW of reserve covers for the rest of the episode; a larger trip, e.g. a "
        "randomized one, leaves a request). Unassisted, frequency "
        "would fall to ~59.35 Hz about 2.4 s after the trip (below the 59.5 Hz shedding stage)."
    ),
    episode_steps=120,
    start_hour=15.0,
    load_noise_std_mw=1.0,
    solar_irradiance_start=0.5,
    solar_irradiance_end=0.5,
    price_floor_per_mwh=0.0,
    price_cap_per_mwh=100.0,
    contingency_mw=100.0,
    event_time_s=10.0,
    reserve_target_mw=100.0,
    success="frequency nadir >= 59.5 Hz, emergency_response_latency_ms <= 100, "
            "back inside the 59.95-60.05 Hz band for good (stabilization_time_s).",
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (PRICE_SPIKE, SOLAR_SURPLUS, EMERGENCY)}


class EpisodeProfiles(NamedTuple):
    """An episode's time series, precomputed at reset (:func:`episode_profiles`)."""

    #: noise-free balancing requirement per step and physics sub-step, MW
    requirement_sub_mw: np.ndarray
    #: true shortage (requirement + load noise) per step and sub-step, MW
    shortage_sub_mw: np.ndarray
    #: per step, the mean requirement over its sub-steps, MW
    requirement_mean_mw: np.ndarray
    #: the operator's forecast for round r (delivery [(r+1)·dt, (r+2)·dt)), every round, MW
    round_forecast_mw: np.ndarray
    #: irradiance at the steps' times t_k
    irradiance: list[float]


def episode_profiles(sc: Scenario, n_substeps: int, physics_dt_s: float, dt_s: float,
                     step_times_s: np.ndarray, rng: np.random.Generator) -> EpisodeProfiles:
    """Per-sub-step requirement (noise-free) and true shortage for the whole episode of
    ``sc`` (``n_substeps`` physics sub-steps of ``physics_dt_s`` per agent step of
    ``dt_s``), the operator's round forecasts and the irradiance at ``step_times_s``; the
    load noise is drawn from a generator seeded by one draw of ``rng``."""
    pdt = physics_dt_s
    n_sub_total = sc.episode_steps * n_substeps
    t_mid = (np.arange(n_sub_total) + 0.5) * pdt
    forecast = sc.forecast_shortage_mw(t_mid)
    # the trip as its exact mean over each sub-step (a midpoint sample would move it to
    # a sub-step boundary, up to physics_dt_s/2 away from event_time_s)
    lost = sc.lost_generation_mean_mw(np.arange(n_sub_total) * pdt,
                                      np.arange(1, n_sub_total + 1) * pdt)
    # the noise on its fixed grid (LOAD_NOISE_SAMPLE_S), read at each sub-step's
    # midpoint: the same realisation whatever physics_dt_s (identical to one sample per
    # sub-step at the default 50 ms)
    grid_s = LOAD_NOISE_SAMPLE_S
    n_noise = max(1, math.ceil(n_sub_total * pdt / grid_s - 1e-9))
    noise = sc.load_noise_mw(n_noise, grid_s, np.random.default_rng(rng.integers(2**63)))
    # (+1e-9: a midpoint on a sample boundary, as with 100 ms sub-steps, reads the
    # later sample whatever the rounding of t_mid / grid_s)
    noise = noise[np.minimum((t_mid / grid_s + 1e-9).astype(np.int64), n_noise - 1)]
    shape = (sc.episode_steps, n_substeps)
    requirement = (forecast + lost).reshape(shape)
    shortage = (forecast + lost + noise).reshape(shape)
    # the operator's forecast for round r (delivery [(r+1)·dt, (r+2)·dt)), every round
    w0 = (np.arange(sc.episode_steps + 2) + 1) * dt_s
    offsets = (np.arange(n_substeps) + 0.5) * pdt
    return EpisodeProfiles(
        requirement_sub_mw=requirement, shortage_sub_mw=shortage,
        requirement_mean_mw=requirement.mean(axis=1),
        round_forecast_mw=sc.forecast_shortage_mw(w0[:, None] + offsets).mean(axis=1),
        irradiance=sc.irradiance(step_times_s).tolist())


def check_reserve_timing(sc: Scenario, dt_s: float) -> None:
    """Refuse a scenario with a reserve target whose trip leaves the operator no reserve
    round its agents can answer before it at agent steps of ``dt_s`` (reserve round r
    delivers from (r+1)·dt_s, and round 0 is cleared on bids made before its signal can
    reach the agents), or comes after the episode's end (the operator would buy
    reserve for a trip that never happens); with timing jitter, for its earliest draw.

    :raises ValueError: saying which and what to change.
    """
    earliest_s = sc.event_time_s - sc.timing_jitter_s   # the earliest trip it can draw
    if sc.reserve_target_mw > 0 and sc.has_event and not 2 * dt_s < earliest_s:
        # reserve round r delivers from (r+1)·dt_s: reserve standing at the trip needs
        # a round whose window starts before it, and round 0 is cleared on bids made
        # before its signal can reach the agents
        jitter = (f" (event_time_s {sc.event_time_s!r} − timing_jitter_s "
                  f"{sc.timing_jitter_s!r})" if sc.timing_jitter_s else "")
        if not earliest_s > 0:   # "use dt_s < 0 s" named no step length that works
            # (a jitter reaching before t = 0 is refused by the Scenario; one
            # reaching exactly t = 0 is not)
            raise ValueError(
                f"scenario {sc.name!r}: the event at {earliest_s!r} s{jitter} leaves no "
                "reserve round its agents can answer before it at any dt_s, with "
                f"reserve_target_mw = {sc.reserve_target_mw!r} (round 1 delivers from "
                f"2·dt_s): use an event_time_s"
                + (" − timing_jitter_s" if jitter else "")
                + f" above 2·dt_s ({2 * dt_s:g} s at dt_s {dt_s!r})"
                + (", a smaller timing_jitter_s" if jitter else "")
                + ", or reserve_target_mw = 0")
        raise ValueError(
            f"EnvConfig.dt_s = {dt_s!r} leaves scenario {sc.name!r} no reserve round "
            f"its agents can answer before the event at {earliest_s!r} s{jitter} (round 1 "
            f"delivers from 2·dt_s): use dt_s < {earliest_s / 2:g} s, or a later "
            "event_time_s" + (" or a smaller timing_jitter_s" if jitter else ""))
    episode_end_s = sc.episode_steps * dt_s
    if sc.reserve_target_mw > 0 and sc.has_event and earliest_s >= episode_end_s:
        # no trip inside the episode: the operator would buy reserve for nothing (it
        # cannot know the trip comes later), as with no trip at all
        raise ValueError(
            f"scenario {sc.name!r}: the event at {earliest_s!r} s"
            f"{' (its earliest draw)' if sc.timing_jitter_s else ''} comes "
            f"after the episode's end ({sc.episode_steps} steps x dt_s {dt_s!r} = "
            f"{episode_end_s:g} s), so with reserve_target_mw = {sc.reserve_target_mw!r} "
            "the operator would buy reserve for a trip that never happens: use an "
            f"event_time_s below {episode_end_s:g} s, more episode_steps, or "
            "reserve_target_mw = 0")


def scenario_record(scenario: Scenario) -> dict[str, Any]:
    """A :class:`Scenario`'s constructor fields, JSON-safe (an ``event_time_s`` of inf, no
    event, becomes null): what ``evaluate.py``'s ``results.json`` records of a custom
    scenario and ``python -m train``'s record of a scenario file's;
    :func:`scenario_from_record` rebuilds it."""
    from gridswarm_env.metrics import json_safe

    return json_safe({f.name: getattr(scenario, f.name) for f in fields(scenario) if f.init})


def scenario_from_record(record: dict[str, Any]) -> Scenario:
    """The :class:`Scenario` a :func:`scenario_record` (e.g. ``results.json``'s
    ``summary.config.custom_scenarios[name]``) describes.

    :raises ValueError, TypeError: fields a Scenario refuses or does not have.
    """
    event = record.get("event_time_s")
    return Scenario(**{**record, "event_time_s": math.inf if event is None else event})


def scenario_names() -> tuple[str, ...]:
    """Registered scenario names, in registry order."""
    return tuple(SCENARIOS)


def unknown_scenario_text(name: Any, all_allowed: bool = False) -> str:
    """One wording, every command line's, of a scenario name that is neither registered
    nor a scenario file: ``unknown scenario 'nope'; known scenarios: price_spike,
    solar_surplus, emergency, or a scenario file FILE.toml``, with ``'all' (every one)``
    before the file where ``all_allowed`` (evaluate.py's ``--scenarios``, python -m
    train's ``--scenario``). The caller puts the flag before it."""
    return (f"unknown scenario {name!r}; known scenarios: {', '.join(scenario_names())}, "
            + ("'all' (every one), " if all_allowed else "") + "or a scenario file FILE.toml")


def get_scenario(scenario: str | Scenario, **overrides: Any) -> Scenario:
    """Look up a scenario by name (or pass one through) and apply ``overrides``.

    :raises ValueError: for an unknown name (the message lists the known ones) or a
        bad override.
    """
    if isinstance(scenario, Scenario):
        base = scenario
    else:
        if not isinstance(scenario, str) or scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known scenarios: "
                             f"{', '.join(SCENARIOS)}")
        base = SCENARIOS[scenario]
    if not overrides:
        return base
    if base._disturbance_derived and "disturbance_time_s" not in overrides:
        overrides = {**overrides, "disturbance_time_s": None}   # derive it again
    return override(base, **overrides)


def randomized(scenario: str | Scenario) -> Scenario:
    """``scenario`` with :data:`RANDOMIZE_PRESET`: the command lines' ``--randomize``."""
    return get_scenario(scenario, **RANDOMIZE_PRESET)


def check_randomizable(scenario: Scenario, given: str) -> None:
    """Refuse a scenario ``--randomize`` cannot play (:func:`randomized` raises: a time the
    preset's jitter would move below 0), worded for the command line: ``ValueError``
    ``"<given> with --randomize: <why>"`` (``given``: the flag and value that named it,
    e.g. ``--scenario 'trip.toml'``). The registered scenarios all take the preset."""
    try:
        randomized(scenario)
    except ValueError as exc:
        raise ValueError(f"{given} with --randomize: {exc}") from None


def randomize_text(preset: dict[str, float] | None = None) -> str:
    """What ``preset`` (default :data:`RANDOMIZE_PRESET`, ``--randomize``) does, in words."""
    p = RANDOMIZE_PRESET if preset is None else preset
    return (f"per episode, drawn from its seed: the load step and the trip x (1 ± "
            f"{100 * p['magnitude_jitter_frac']:g} %), their times ± "
            f"{p['timing_jitter_s']:g} s (uniform; Scenario.draw_episode)")


def drawn_text(values: dict[str, Any]) -> str:
    """One episode's draw (:meth:`Scenario.drawn_values`, ``None`` for no event as in
    strict JSON) in words: ``load step +107.0 MW from 21.73 s``, ``trip 92.2 MW at
    5.837 s``."""
    parts = []
    if values["load_step_mw"]:
        parts.append(f"load step {values['load_step_mw']:+.1f} MW from "
                     f"{values['load_step_start_s']:.2f} s")
    event = values["event_time_s"]
    if values["contingency_mw"] and event is not None and math.isfinite(event):
        parts.append(f"trip {values['contingency_mw']:.1f} MW at {event:.3f} s")
    return ", ".join(parts) or "no disturbance"


def is_scenario_file(item: str) -> bool:
    """Whether a command line's scenario item names a scenario file for
    :func:`load_scenario_file` (it ends with ``.toml``) rather than a registered
    scenario (``evaluate.py --scenarios``, ``demo.py --scenario``)."""
    return item.lower().endswith(".toml")


class ScenarioFile(NamedTuple):
    """A scenario file read once (:func:`read_scenario_file`): the path as given, the
    :class:`Scenario` parsed from it, the SHA-256 (hex) of the bytes parsed and their
    text. The command lines record the path and the hash (and ``python -m train`` the
    text, so a model's scenario can be rebuilt without the file)."""

    path: str
    scenario: Scenario
    sha256: str
    text: str


def load_scenario_file(path: str | Path) -> Scenario:
    """Load a scenario from TOML: ``base = "price_spike"`` plus fields to override
    (:func:`read_scenario_file` without the hash).

    :raises ValueError: as :func:`read_scenario_file`.
    """
    return read_scenario_file(path).scenario


def read_scenario_file(path: str | Path) -> ScenarioFile:
    """Read the scenario file ``path`` once: ``base = "price_spike"`` plus fields to
    override, and the SHA-256 of the bytes parsed (a second read to hash the file would
    name other bytes if it were rewritten in between).

    :raises ValueError: when the file is missing, unreadable, names a bad field, or a
        ``name`` that is not :data:`SCENARIO_NAME` (evaluate's rule).
    """
    import hashlib

    p = Path(path)
    data, raw, text = read_toml_bytes(path, "scenario file")
    base = data.pop("base", None)
    if not isinstance(base, str) or base not in SCENARIOS:
        got = "" if base is None else f" (got base = {base!r})"
        raise ValueError(f"scenario file {str(p)!r}: needs base = one of "
                         f"{', '.join(SCENARIOS)}{got}")
    known = {f.name for f in fields(Scenario) if f.init}
    for key in data:
        if key not in known:
            raise ValueError(f"scenario file {str(p)!r}: unknown field {key!r}; known fields: "
                             f"{', '.join(sorted(known))}")
    name = data.get("name")
    if isinstance(name, str) and not SCENARIO_NAME.fullmatch(name):   # not a str: Scenario's
        # it played in the environment and demo, and evaluate refused it only later
        raise ValueError(f"scenario file {str(p)!r}: name = {name!r}: use one or more "
                         f"{SCENARIO_NAME_TEXT} (evaluate.py names its output files, "
                         "freq_<name>.png, and results by it)")
    try:
        scenario = get_scenario(base, **data)
    except ValueError as exc:       # a field of the wrong type or out of range
        raise ValueError(f"scenario file {str(p)!r}: {exc}") from None
    return ScenarioFile(str(path), scenario, hashlib.sha256(raw).hexdigest(), text)
