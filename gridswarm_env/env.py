"""GridSwarmEnv: ~100 DER agents keep a grid at 60 Hz through a market, a bus and contracts.

Description
-----------
A PettingZoo ``ParallelEnv``. Each agent is one DER portfolio (``solar_000``,
``battery_017``, ``ev_042`` …). Every step is one balancing-market round: the
operator's request and price signal reach agents over the Agent Message Bus
(:mod:`gridswarm_env.bus`); agents bid (power, price); the kernel
(:mod:`gridswarm_env.kernel`) blocks infeasible bids; the market clears
(:mod:`gridswarm_env.market`); each award becomes a contract signed by agent and
operator (:mod:`gridswarm_env.trust`); the mute dispatcher executes only contracts
that verify (:mod:`gridswarm_env.dispatch`); the fleet and the grid frequency
advance (:mod:`gridswarm_env.fleet`, :mod:`gridswarm_env.grid`). This module
orchestrates the step and holds the PettingZoo API; the operator's forecasts, requests
and announcements are :mod:`gridswarm_env.grid_operator`'s, what agents received of
them :mod:`gridswarm_env.signals`', the contracts from issue to dispatch
:mod:`gridswarm_env.contract_flow`'s and the rewards :mod:`gridswarm_env.settlement`'s.

Timeline of step k (t0 = k·dt, t1 = t0 + dt)::

    t0          bids of round k published (delivery window [t1, t1 + dt))
    t0 + gate   bids delivered so far are cleared; contracts signed and published;
                the operator announces round k + 1 (request, price, product)
    [t0, t1)    physics: contracts of round k − 1 that verified are executed;
                reserve contracts activate when the emergency broadcast arrives
    t1          observations from what the bus delivered

Action Space
------------
``MultiDiscrete([n_power_levels, n_price_levels])`` (default 21 x 11), the same for
every agent: power level ``i`` bids ``linspace(-1, 1)[i] x rated power`` of balancing
power (+ more injection, − less), price level ``j`` bids
``linspace(floor, cap)[j]`` $/MWh of the scenario's band (for a surplus: the price
the absorber pays; negative = compensation asked). ``infos[a]["action_mask"]``
holds the concatenated per-dimension masks (power levels, then price levels).

Observation Space
-----------------
``Box(-5, 5, (OBS_DIM,), float32)``, the fields named in order by :data:`OBS_FIELDS`
(:mod:`gridswarm_env.observations`; each field's meaning and scale: docs/model.md,
*Actions, observations and episode end*, the observation table): kind one-hot, SoC, size, feasible interval, baseline, scheduled and awarded power,
reserve, delivered market signal (request, price, product, emergency, frequency,
RoCoF, age), backpressure flag, time features, EV departure needs, solar
forecast, last clearing price and own acceptance.

Rewards
-------
Per agent, in $ times ``reward.scale`` (see :class:`~gridswarm_env.config.RewardConfig`;
the formulas are :mod:`gridswarm_env.market`'s settlement functions, which
:meth:`GridSwarmEnv._settle` calls): delivered contract energy at its clearing price +
reserve availability at each contract's price − own true cost (stored energy spent
included) − penalty for contracted energy and activated reserve not delivered − EV
unmet departure cost − ``grid_weight``·mean|Δf|/``band_hz`` (mean over the step's
physics sub-steps; shared). The fleet's MW are shared
among the agents, so per-agent rewards scale about as ``1/n_agents``.

Episode End
-----------
No termination; truncation after ``scenario.episode_steps`` steps.

Scenario randomization
----------------------
``base_scenario`` is the scenario given. When it has jitter
(``Scenario.magnitude_jitter_frac`` or ``timing_jitter_s`` > 0), every ``reset`` draws
the episode's ``scenario`` (``Scenario.draw_episode``) from a generator of its own,
``SeedSequence(seed, spawn_key=(SCENARIO_SPAWN_KEY,))``, re-seeded with every
``reset(seed=...)`` and continued by ``reset()`` without one: the fleet, noise, bus,
nonce and contract-key streams are the same as without jitter, and without jitter
nothing is drawn (``scenario is base_scenario``). The operator, the metrics, ``state()``,
render and the oracle use the drawn ``scenario``; agents observe only the market signals
(as without jitter).

Arguments
---------
``scenario`` (name or :class:`Scenario`), ``n_agents``, ``trust`` ("ed25519" |
"hmac"), ``shadow``, ``render_mode`` ("ansi" | "human" | None), ``limits`` (dict,
TOML path or :class:`Limits`), ``config`` (:class:`EnvConfig`), ``audit_path``,
``adversary`` (a callable that may tamper with contracts on the bus, for tests and
demos; trusted test code: it receives the environment, so it could mint valid contracts
with ``env.ledger``; it models an attacker on the bus who holds no keys).

Version History
---------------
v0: first release.
"""

from __future__ import annotations

import gc
import math
import warnings
from collections.abc import Callable, Mapping
from numbers import Integral
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from gridswarm_env import market
from gridswarm_env.actions import MaskedMultiDiscrete, decode_actions
from gridswarm_env.audit_seal import (  # noqa: F401 (a constant of env.py before the split)
    AUDIT_ENTRIES_IN_MEMORY,
    AuditSealer,
)
from gridswarm_env.bus import AgentMessageBus, Delivery, Lane, TopicBatch
from gridswarm_env.config import EnvConfig, check_choice
from gridswarm_env.contract_flow import ContractFlow, contract_power_at, joined_price
from gridswarm_env.dispatch import Execution, activation_share, balancing_bounds, execute
from gridswarm_env.fleet import (
    agent_names,
    apply_energy,
    baseline_mw,
    build_fleet,
    depart_evs,
    energy_change_mwh,
    fast_count_nonzero,
    kinds_left_out,
    snap_departures,
    update_solar,
)
from gridswarm_env.grid import GridModel
from gridswarm_env.grid_operator import GridOperator
from gridswarm_env.kernel import ExecutionChecker, Kernel, as_limits, check_limits_names
from gridswarm_env.messages import (
    BID_DTYPE,
    DISPATCHER,
    EMERGENCY_DTYPE,
    OPERATOR,
    SIGNAL_DTYPE,  # noqa: F401 (a constant of env.py before the split)
    TOPIC_BIDS,
    TOPIC_CONTRACTS,
    TOPIC_EMERGENCY,
    TOPIC_FORECAST,
    TOPIC_PRICE,
)
from gridswarm_env.metrics import MetricsAccumulator
from gridswarm_env.observations import (  # noqa: F401 (OBS_FIELDS: the package's name)
    OBS_DIM,
    OBS_FIELDS,
    OBS_LIMIT,
    ObservationBuilder,
    agent_infos,
)
from gridswarm_env.reserve import ReserveBook
from gridswarm_env.scenarios import (
    PRODUCT_RESERVE,
    Scenario,
    check_reserve_timing,
    episode_profiles,
    get_scenario,
)
from gridswarm_env.settlement import Settlement
from gridswarm_env.signals import AgentSignals
from gridswarm_env.trust import (
    ContractLedger,
    IdentityRegistry,
    check_new_audit_file,
)


def _caller_stacklevel() -> int:
    """``warnings.warn`` stacklevel of the first frame outside this package, counted from
    the function that calls this one: a warning raised while building the environment
    points at the user's ``parallel_env(...)`` / ``env(...)`` / ``GridSwarmEnv(...)``
    line, not at the package's own wrappers (Python 3.12's ``skip_file_prefixes``)."""
    import os
    import sys

    package_dir = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame = sys._getframe(2)   # the caller's caller: level 2 of warnings.warn
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package_dir):
        frame = frame.f_back
        level += 1
    return level


#: agents listed per ``action_blocked`` audit entry (``count`` is always exact; an entry
#: that lists fewer carries ``listed``)
AUDIT_BLOCKED_LISTED = 100


#: spawn key of the episode scenario's generator, ``SeedSequence(seed, spawn_key=(key,))``:
#: no other stream of the environment or of the trainer's copies
#: (``train.adapter.copy_seed_sequence``, keys 0..n_envs − 1) uses it.
SCENARIO_SPAWN_KEY = 0x5CE7A210


def _scenario_rng(seed: int | None) -> np.random.Generator:
    """The generator episode scenarios are drawn from (see the module docstring)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SCENARIO_SPAWN_KEY,)))


def _checked_seed(seed: Any) -> int | None:
    """``seed`` as a Python int (or None); raises ``ValueError`` for anything else."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int or None")
    return int(seed)


class GridSwarmEnv(ParallelEnv):
    """The gridswarm PettingZoo parallel environment (see the module docstring)."""

    metadata = {"name": "gridswarm_v0", "render_modes": ["ansi", "human"],
                "is_parallelizable": True, "render_fps": 4}

    def __init__(self, scenario: str | Scenario = "price_spike", n_agents: int | None = None,
                 trust: str | None = None, shadow: bool | None = None,
                 render_mode: str | None = None, limits: Any = None,
                 config: EnvConfig | None = None, audit_path: str | None = None,
                 adversary: Callable[..., Any] | None = None, seed: int | None = None) -> None:
        if config is not None and not isinstance(config, EnvConfig):
            raise ValueError(
                f"GridSwarmEnv config = {config!r}: expected an EnvConfig, got "
                f"{type(config).__name__} (e.g. config=EnvConfig(n_agents=7, dt_s=0.5, "
                "fleet=FleetConfig(...)); from a dict: EnvConfig(**d) for its top-level "
                "fields)")
        if adversary is not None and not callable(adversary):
            raise ValueError(f"GridSwarmEnv adversary = {adversary!r}: expected a callable "
                             "(env, signed, owners) -> (signed, owners), or None")
        cfg = config or EnvConfig()
        seed = _checked_seed(seed)
        changes: dict[str, Any] = {}
        if n_agents is not None:
            changes["n_agents"] = n_agents
        if trust is not None:
            changes["trust"] = trust
        if shadow is not None:
            changes["shadow"] = shadow
        if audit_path is not None:
            changes["audit_path"] = audit_path   # EnvConfig checks it is a path
        if changes:
            from gridswarm_env.config import override

            cfg = override(cfg, **changes)
        if render_mode is not None:
            check_choice("GridSwarmEnv", "render_mode", render_mode,
                         tuple(self.metadata["render_modes"]))
        if cfg.audit_path is not None:
            check_new_audit_file(cfg.audit_path, "EnvConfig.audit_path =")
        self.config = cfg
        # the scenario given, and the one the current episode plays (drawn at reset when
        # the base has jitter; the base itself until the first reset)
        self.base_scenario = self.scenario = get_scenario(scenario)
        check_reserve_timing(self.scenario, cfg.dt_s)
        self.render_mode = render_mode
        self.limits = as_limits(limits)
        self.adversary = adversary
        self.possible_agents = agent_names(cfg.n_agents, cfg.fleet)
        left_out = kinds_left_out(cfg.n_agents, cfg.fleet)
        if left_out:
            warnings.warn(
                f"n_agents={cfg.n_agents} is fewer than the fleet's DER kinds: "
                + ", ".join(f"{k} ({mw:g} MW)" for k, mw in left_out.items())
                + ": no agent, left out of the fleet, so the scenario does not "
                "behave as at larger fleets; use n_agents >= 3", UserWarning,
                stacklevel=_caller_stacklevel())
        check_limits_names(self.limits, self.possible_agents,   # now, not at the first reset
                           cfg.fleet.ev_departure_soc)
        self.agents: list[str] = []
        self.agent_index = {a: i for i, a in enumerate(self.possible_agents)}
        # agents are all live until the episode ends (then step() refuses to run)
        self._live_agent_set = frozenset(self.possible_agents)
        self.n_agents = cfg.n_agents
        self.grid = self._grid_before_trip = GridModel(cfg.grid, cfg.dt_s)
        self.n_substeps = self.grid.n_substeps
        # Scenario.contingency_unit_share > 0: the grid without the tripped unit's inertia
        # and governor, switched to at the trip instant (None: the system keeps them)
        share = self.scenario.contingency_unit_share
        self._grid_after_trip = (GridModel(cfg.grid.after_unit_trip(share), cfg.dt_s)
                                 if share > 0.0 else None)
        self._trip_at: tuple[int, int, float] | None = None
        self.price_levels_per_mwh = self.scenario.price_levels_per_mwh(cfg.market.n_price_levels)
        # one space object per env instance (the same object on every call; seeding one
        # env's spaces never affects another's)
        self._obs_space = spaces.Box(-OBS_LIMIT, OBS_LIMIT, (OBS_DIM,), np.float32)
        self._act_space = MaskedMultiDiscrete([cfg.market.n_power_levels,
                                               cfg.market.n_price_levels])
        self._nvec_u64 = self._act_space.nvec.astype(np.uint64)
        self._state_space = spaces.Box(-np.inf, np.inf, (8 + 3 * cfg.n_agents,), np.float64)
        self._seed = seed
        self._np_random = np.random.default_rng(seed)
        self._scenario_rng = _scenario_rng(seed)
        self.registry = self._contract_keys(seed)
        # one audit chain for the env's lifetime (streamed to a file, or in memory keeping
        # at most audit_seal.AUDIT_ENTRIES_IN_MEMORY entries); episodes start with
        # "episode_start"
        self._audit = AuditSealer(cfg.audit_path, cfg.audit_keep_entries, cfg.trust,
                                  self.registry.operator_id)
        self.audit_log = self._audit.log
        self._episode = -1
        self._ready = False
        self._failed: str | None = None   # why the last step stopped half-way (if it did)

    def __reduce__(self):
        """Pickling and copying (``pickle``, ``cloudpickle``, ``copy.deepcopy``: how
        SuperSuit's and other vector-env builders make copies) of an environment that was
        never reset give a *new* environment built from the same arguments (scenario,
        config, limits, render mode, adversary, constructor seed), with its own contract
        keys (from ``os.urandom``, or the same derived ones with
        ``contract_keys="seeded"``): the keys never leave the process, and trajectories do
        not depend on them. A reset environment (its episode state, ledger and audit
        chain) or one writing an audit file is refused: build copies with a factory
        instead, e.g. ``lambda: gridswarm_env.parallel_env(...)``."""
        why = None
        if self.config.audit_path is not None:
            why = (f"it writes the audit file {str(self.config.audit_path)!r}, which a copy "
                   "would write too")
        elif self._episode >= 0 or self._audit.closed is not None:
            why = ("it has been reset or closed: its episode state, ledger and audit chain "
                   "hold private keys and cannot be copied")
        if why is not None:
            raise TypeError(f"this GridSwarmEnv cannot be pickled or copied: {why}; copy it "
                            "before its first reset(), or build copies with a factory, e.g. "
                            "lambda: gridswarm_env.parallel_env(...)")
        return (_rebuild_env, (type(self), self.base_scenario, self.config, self.limits,
                               self.render_mode, self.adversary, self._seed))

    def _contract_keys(self, seed: int | None) -> IdentityRegistry:
        """Every agent's and the operator's contract keys: from ``os.urandom`` with
        ``EnvConfig(contract_keys="random")`` (the default), or derived from ``seed``
        with ``"seeded"``."""
        cfg = self.config
        if cfg.contract_keys == "random":
            seed = None
        return IdentityRegistry(self.possible_agents, mode=cfg.trust, seed=seed,
                                crypto_threads=cfg.crypto_threads)

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.MultiDiscrete:
        return self._act_space

    @property
    def observation_spaces(self) -> dict[str, spaces.Box]:
        """Every possible agent's observation space (the one cached object), as the
        PettingZoo attribute some wrappers read; a new dict per call, built on demand."""
        return dict.fromkeys(self.possible_agents, self._obs_space)

    @property
    def action_spaces(self) -> dict[str, spaces.MultiDiscrete]:
        """Every possible agent's action space (the one cached object); see
        :attr:`observation_spaces`."""
        return dict.fromkeys(self.possible_agents, self._act_space)

    @property
    def state_space(self) -> spaces.Box:
        return self._state_space

    @property
    def unwrapped(self) -> GridSwarmEnv:
        return self

    @property
    def price_levels(self) -> np.ndarray:
        """The bid price levels, $/MWh: the earlier name of :attr:`price_levels_per_mwh`,
        kept for policies written against it (the same array)."""
        return self.price_levels_per_mwh

    # ------------------------------------------------------------------ reset
    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        cfg = self.config
        if self._audit.closed is not None:
            raise RuntimeError(f"reset() after close(): {self._audit.closed}")
        if options is not None and not isinstance(options, Mapping):
            # a dict is accepted and read from for nothing (PettingZoo's API test passes
            # one); anything else is a mistake, refused rather than ignored
            raise ValueError(f"reset(options={options!r}): expected a dict or None; this "
                             "environment reads no reset options (set the scenario, fleet "
                             "and limits at construction: scenario=, config=, limits=)")
        if options and "seed" in options:   # a likely mistake for reset(seed=...): say so
            warnings.warn(f"reset(options={{'seed': {options['seed']!r}, ...}}): reset options "
                          "are read for nothing and do not seed this reset (it uses "
                          + ("its seed= argument" if seed is not None else
                             "the constructor's seed or the stream of the last seeded reset")
                          + f"); pass reset(seed={options['seed']!r}) to seed it",
                          UserWarning, stacklevel=_caller_stacklevel())
        if seed is not None:
            seed = _checked_seed(seed)
            self._np_random = np.random.default_rng(seed)
            self._scenario_rng = _scenario_rng(seed)
            if seed != self._seed:
                self._seed = seed
                if self.config.contract_keys == "seeded":
                    self.registry = self._contract_keys(seed)
        # the episode's scenario, from its own stream (no draw without jitter)
        self.scenario = sc = self.base_scenario.draw_episode(self._scenario_rng)
        rng = self._np_random
        self._episode += 1
        self.rng = np.random.default_rng(rng.integers(2**63))
        n, dt = self.n_agents, cfg.dt_s
        self.t_s = 0.0
        self.step_index = 0
        self.duration_s = sc.episode_steps * dt
        self.fleet = build_fleet(n, cfg.fleet, float(sc.irradiance(0.0)),
                                 self.rng)
        # t_0 = 0, t_{k+1} = t_k + dt: the times the steps reach as _step accumulates its
        # clock (not k·dt), for the departures and the irradiance read at each step
        times = [0.0]
        for _ in range(sc.episode_steps + 2):
            times.append(times[-1] + dt)
        self._step_times_s = np.array(times)
        # EV departures inside the episode move to the start of their step
        self._unmet_at_reset = snap_departures(self.fleet,
                                               self._step_times_s[:sc.episode_steps + 1])
        self.kernel = Kernel(self.limits, self.possible_agents, self.fleet,
                             cfg.market.n_power_levels, dt,
                             cfg.market.reserve_full_activation_s)
        # step_s: CONTROL/MARKET messages deferred longer than one agent step are obsolete
        # (rounds are per step, contracts cover the next step) and dropped by the bus
        self.bus = AgentMessageBus(cfg.bus, rng=np.random.default_rng(rng.integers(2**63)),
                                   step_s=dt)
        self.bus.subscribe_many(TOPIC_PRICE, np.arange(n))
        self.bus.subscribe_many(TOPIC_EMERGENCY, np.arange(n))
        self.bus.subscribe(TOPIC_BIDS, OPERATOR)
        self.bus.subscribe(TOPIC_FORECAST, OPERATOR)
        self.bus.subscribe(TOPIC_CONTRACTS, DISPATCHER)
        # a ledger per episode, its nonce epoch drawn from the episode's seed stream: the same
        # seed gives the same contracts; contracts of earlier episodes fail as replayed
        self.ledger = ContractLedger(
            self.registry, rng=np.random.default_rng([int(rng.integers(2**63)), self._episode]),
            audit=self.audit_log)
        self._ledger_at_reset = self.ledger.counters()
        self._audit_at_reset = self.audit_log.n_entries
        # a drawn episode records what it drew (nothing is added without jitter)
        drawn = {"drawn": sc.drawn_values()} if self.base_scenario.randomized else {}
        self.audit_log.append("episode_start", episode=self._episode, scenario=sc.name,
                              n_agents=n, trust=cfg.trust, shadow=cfg.shadow, **drawn)
        # the episode's requirement, shortage, round forecasts and irradiance
        prof = episode_profiles(sc, self.n_substeps, cfg.grid.physics_dt_s, dt,
                                self._step_times_s, rng)
        self.requirement_sub_mw, self.shortage_sub_mw = (prof.requirement_sub_mw,
                                                         prof.shortage_sub_mw)
        self._requirement_mean_mw = prof.requirement_mean_mw
        self._irradiance = prof.irradiance
        # the grid starts in the steady state of the load noise's first sample (drawn from
        # its stationary distribution): the balance the system held before t = 0, with no
        # DER dispatched yet and no disturbance (a trip or load step at t = 0 happens in
        # the episode). Started at rest, every episode opened with a step of that sample.
        self.grid = self._grid_before_trip   # the system before the trip
        self._trip_at = self._trip_substep(sc, cfg.grid.physics_dt_s)
        self.grid.reset_steady(-float(prof.shortage_sub_mw[0, 0] - prof.requirement_sub_mw[0, 0])
                               / cfg.grid.system_base_mw)
        f0_hz = self.grid.freq_hz   # the steady start (reset_steady above)
        self.metrics = MetricsAccumulator(
            costs=cfg.costs, dt_s=dt, physics_dt_s=cfg.grid.physics_dt_s,
            disturbance_time_s=sc.disturbance_time_s,
            event_time_s=sc.event_time_s if sc.has_event else None,
            rocof_window_s=cfg.rocof_window_s, last_freq_hz=f0_hz,
            nadir_hz=f0_hz, zenith_hz=f0_hz)   # the t = 0 sample counts, not 60 Hz
        # dispatcher and market state (arrays over agents, shape (n,))
        z = np.zeros(n)
        self.scheduled_p_mw = z.copy()       # contracted balancing power, current window
        self.awarded_next = z.copy()         # contracted balancing power, next window
        # reserve contracts: awarded, held, activated, paid (gridswarm_env.reserve)
        self.reserve_book = ReserveBook(n)
        # the signed contracts from issue to dispatch (gridswarm_env.contract_flow)
        self.contract_flow = ContractFlow(
            self.possible_agents, self.ledger, self.bus, self.reserve_book, self.audit_log,
            self.metrics, shadow=cfg.shadow, reserve_traded=sc.reserve_target_mw > 0,
            contingency_mw=sc.contingency_mw, ramp_mw_per_s=self.kernel.arrays.ramp_mw_per_s)
        self.event_detected = False
        self.last_p_mw = z.copy()
        # under a finite ramp limit: the last step's executed power per sub-step (None
        # otherwise) and its last sub-step
        self.last_p_path_mw: np.ndarray | None = None
        self.last_p_end_mw = z.copy()
        self._plan_end_mw = z.copy()      # the ramp-followable plan's last sub-step
        self._would_p_end_mw = z.copy()   # shadow mode: the would-be path's last sub-step
        self.blocked_per_agent = np.zeros(n, dtype=np.int64)
        self.stale_bids = 0
        # what agents know (from delivered messages): the last round announcement each
        # received and the emergency broadcast (gridswarm_env.signals); sig_* are views of
        # its fields, emergency_seen and emergency_arrival_s its arrays. Announcements
        # are made at reset (t = 0) and at each gate closure: the first two are only
        # gate_s apart, so a newer one can overtake an older one once latencies can
        # differ by more than gate_s (at gate_s, the tie is delivered in publish order)
        sig = self.signals = AgentSignals(
            n, price_per_mwh=float(self.price_levels_per_mwh.mean()),
            nominal_freq_hz=cfg.grid.nominal_freq_hz,
            reorder=cfg.bus.latency_max_s > cfg.market.gate_s)
        self.sig_round, self.sig_request_mw = sig.round, sig.request_mw
        self.sig_price_per_mwh, self.sig_product = sig.price_per_mwh, sig.product
        self.sig_freq_hz, self.sig_rocof_hz_per_s = sig.freq_hz, sig.rocof_hz_per_s
        self.sig_clearing_price_per_mwh = sig.clearing_price_per_mwh
        self.sig_age_steps = sig.age_steps
        self.emergency_seen, self.emergency_arrival_s = sig.emergency_seen, sig.emergency_arrival_s
        self.backpressure = np.zeros(n, dtype=bool)
        # share of each agent's last bid awarded by the contracts it received (see
        # ContractFlow.file_arrived)
        self.accepted_share = z.copy()
        self._bid_mw = z.copy()              # the bids published this step
        self.freq_trace_hz = np.full(self.n_substeps, self.grid.freq_hz)
        self.last_rocof_hz_per_s = 0.0
        self.last_info: dict[str, Any] = {}
        self.shadow_dispatch_mwh = 0.0
        self._would_dispatch_mw = z.copy()   # shadow mode: per agent, last step
        self.dispatch_clamped = 0
        self._emergency_in_flight = False    # emergency broadcast not fully delivered yet
        self._precompute_constants(prof.round_forecast_mw)
        self._baseline_next = baseline_mw(self.fleet)
        # round 0 (delivery [dt, 2dt)) is announced at t = 0
        self.round_index = 0
        self.round_request_mw, self.round_product = self._operator_request(0)
        self._announce(self.round_index, self.round_request_mw, self.round_product, 0.0)
        self.agents = list(self.possible_agents)
        self._ready = True
        self._failed = None
        self._update_feasible()
        return self._observations(), self._infos()

    def _trip_substep(self, sc: Scenario, pdt: float) -> tuple[int, int, float] | None:
        """Where the grid switches to the system without the tripped unit
        (``Scenario.contingency_unit_share`` > 0): ``(step, sub-step in it, offset_s into
        it)``, on the sub-step grid ``j·physics_dt_s`` the episode's profiles use, in the
        first sub-step the trip's mean counts in (:func:`episode_profiles`: the first
        ``j`` with ``(j + 1)·pdt > event_time_s``; offset 0 when the trip is on its
        start). None without a switch: no share, no trip, or a trip after the episode."""
        if self._grid_after_trip is None or not sc.has_event:
            return None
        event, total = sc.event_time_s, sc.episode_steps * self.n_substeps
        j = max(int(event // pdt) - 1, 0)
        while j < total and (j + 1) * pdt <= event:
            j += 1
        if j >= total:
            return None
        offset = min(max(event - j * pdt, 0.0), math.nextafter(pdt, 0.0))
        return j // self.n_substeps, j % self.n_substeps, offset

    def _precompute_constants(self, round_forecast_mw: np.ndarray) -> None:
        """Per-episode constants and buffers (no RNG use): what every step would recompute,
        and the episode's operator (with its forecast of each round, ``round_forecast_mw``)."""
        f, cfg, sc, n = self.fleet, self.config, self.scenario, self.n_agents
        c = self._const = self.kernel.constants
        self._checker = ExecutionChecker(f.kind, f.energy_capacity_mwh, self.kernel.arrays,
                                         cfg.dt_s, eta_charge=f.eta_charge,
                                         eta_discharge=f.eta_discharge)
        self._agent_ids = np.arange(n)
        self._solar_idx = np.flatnonzero(c.is_solar)
        self._sub_ends = np.arange(1, self.n_substeps + 1, dtype=float)
        self._sub_end_offsets_s = cfg.grid.physics_dt_s * self._sub_ends
        self._bid_rows = np.empty(n, dtype=BID_DTYPE)
        # reserve contracts cover delivery until the episode's end (their window end)
        self._reserve_until_s = self.duration_s + cfg.dt_s
        # the operator: its forecasts, the fleet flexibility it prices with (refreshed
        # when EVs leave) and its announcements. The observation's scale stays the reset's.
        self.operator = GridOperator(
            self.bus, f, c, self.kernel.arrays, round_forecast_mw, self.metrics,
            price_floor_per_mwh=sc.price_floor_per_mwh, price_cap_per_mwh=sc.price_cap_per_mwh,
            reserve_target_mw=sc.reserve_target_mw, contingency_mw=sc.contingency_mw,
            market_config=cfg.market, latency_max_s=cfg.bus.latency_max_s, dt_s=cfg.dt_s)
        self._flex_scale = max(self.operator.flexible_mw(1.0), 1e-6)
        # masks: price levels are all allowed; the power part is refreshed every step
        n_power = cfg.market.n_power_levels
        self._mask_buf = np.ones((n, n_power + cfg.market.n_price_levels), dtype=bool)
        self._mask_price = self._mask_buf[:, n_power:]
        # kinds are contiguous (fleets are built sorted by kind): slices, written in place
        sel = (c.battery, c.solar, c.ev)
        if not all(isinstance(x, slice) for x in sel):
            raise RuntimeError("fleet agents must be grouped by kind (build_fleet sorts them)")
        self._kind_sel = sel
        # the observation builder: static rows, scales and the agents' signal arrays
        self._obs = ObservationBuilder(
            f, sel[2], c.zero, request_mw=self.sig_request_mw, price_per_mwh=self.sig_price_per_mwh,
            product=self.sig_product, freq_hz=self.sig_freq_hz, rocof_hz_per_s=self.sig_rocof_hz_per_s,
            clearing_price_per_mwh=self.sig_clearing_price_per_mwh, signal_age=self.sig_age_steps,
            emergency_seen=self.emergency_seen, nominal_freq_hz=cfg.grid.nominal_freq_hz,
            request_scale_mw=self._flex_scale, price_floor_per_mwh=sc.price_floor_per_mwh,
            price_cap_per_mwh=sc.price_cap_per_mwh, start_hour=sc.start_hour,
            duration_s=self.duration_s)
        self._settlement = Settlement(cfg, n, sel, c.zero, f.kind, self.metrics)

    # ------------------------------------------------------------------ operator
    def _operator_request(self, round_index: int, now_s: float = 0.0) -> tuple[float, int]:
        """Request (MW) and product of round ``round_index``, announced at ``now_s``
        (:meth:`GridOperator.request <gridswarm_env.grid_operator.GridOperator.request>`):
        the operator knows of the trip only once it detected it
        (``Scenario.detection_time_s <= now_s``), not for the whole step."""
        return self.operator.request(
            round_index, trip_known=self._trip_known(now_s),
            reserve_awarded_mw=self.reserve_book.awarded_mw,
            standing_reserve_mw=self.reserve_book.standing_mw)

    def _trip_known(self, now_s: float) -> bool:
        """Whether the operator knows of the trip at ``now_s`` (detected by then)."""
        return self.event_detected and self.scenario.detection_time_s <= now_s

    def _announce(self, round_index: int, request_mw: float, product: int, now_s: float) -> None:
        """The operator announces round ``round_index`` to every agent (see
        :meth:`GridOperator.announce <gridswarm_env.grid_operator.GridOperator.announce>`)
        with the grid's state and the last clearing price."""
        self.round_price_signal_per_mwh = self.operator.announce(
            round_index, request_mw, product, now_s, float(self.freq_trace_hz[-1]),
            self.last_rocof_hz_per_s)

    # ------------------------------------------------------------------ step
    def step(self, actions: Mapping[str, Any]):
        """PettingZoo step: ``actions`` maps every live agent to ``[power level, price level]``."""
        self._check_running()
        level, price_idx = self._decode(actions)
        return self._step_paused(level, price_idx, as_dicts=True)

    def step_arrays(self, power_level: np.ndarray, price_level: np.ndarray):
        """Step with integer action arrays over agents (the fast path of the SB3 adapter).

        :returns: ``(obs (n, OBS_DIM) float32, rewards (n,), truncated: bool, info dict)``;
            masks are in :meth:`action_masks`.
        """
        self._check_running()
        p = np.asarray(power_level)
        q = np.asarray(price_level)
        nvec = self._act_space.nvec
        if p.shape != (self.n_agents,) or q.shape != (self.n_agents,):
            raise ValueError(f"power_level and price_level must have shape ({self.n_agents},), "
                             f"one level per agent; got {p.shape} and {q.shape}")
        if p.dtype.kind not in "iu" or q.dtype.kind not in "iu":
            raise ValueError("power_level and price_level must be integer arrays (the fast "
                             "path takes level indices as ints, no conversion: the dict API "
                             "step() also accepts whole-valued floats); got dtypes "
                             f"{p.dtype} and {q.dtype}")
        p64, q64 = p.astype(np.int64), q.astype(np.int64)
        # one unsigned comparison per array catches both < 0 and >= n (negatives wrap)
        bad = p64.view(np.uint64) >= self._nvec_u64[0]
        bad |= q64.view(np.uint64) >= self._nvec_u64[1]
        if fast_count_nonzero(bad):
            i = int(bad.nonzero()[0][0])
            raise ValueError(f"action of {self.possible_agents[i]} = [{p[i]}, {q[i]}] is outside "
                             f"the action space [0..{nvec[0] - 1}, 0..{nvec[1] - 1}]")
        return self._step_paused(p64, q64, as_dicts=False)

    def _step_paused(self, power_level: np.ndarray, price_level: np.ndarray, *,
                     as_dicts: bool):
        """:meth:`_step` with the cyclic garbage collector paused (``EnvConfig.pause_gc``;
        left alone when it is already disabled) and resumed afterwards, also on errors
        and interrupts (``gc.disable()`` is inside the ``try``: an interrupt arriving
        just after it cannot leave the collector off for good)."""
        try:
            if not (self.config.pause_gc and gc.isenabled()):
                return self._step(power_level, price_level, as_dicts=as_dicts)
            try:
                gc.disable()
                return self._step(power_level, price_level, as_dicts=as_dicts)
            finally:
                gc.enable()
        except BaseException as exc:   # stopped half-way (e.g. Ctrl-C): only reset() helps
            # (reading the KPIs so far, e.g. to report an interrupted run, still works)
            self._failed = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise

    def _check_reset(self, what: str) -> None:
        if not self._ready:
            raise RuntimeError(f"{what} called before reset(); call reset() first")

    def _check_running(self) -> None:
        if self._audit.closed is not None:
            raise RuntimeError(f"step() after close(): {self._audit.closed}")
        if self._failed is not None:
            raise RuntimeError(f"the last step stopped half-way ({self._failed}); the "
                               "episode cannot go on: call reset()")
        if not self._ready or not self.agents:
            raise RuntimeError("step() called before reset() or after the episode ended; "
                               "call reset() first")

    def _step(self, power_level: np.ndarray, price_level: np.ndarray, *, as_dicts: bool):
        """DESIGN §2: kernel → bus → clear → sign → verify → dispatch → fleet → grid → reward."""
        cfg, sc = self.config, self.scenario
        dt, pdt = cfg.dt_s, cfg.grid.physics_dt_s
        k, t0 = self.step_index, self.t_s
        t1, gate = t0 + dt, t0 + cfg.market.gate_s
        flow = self.contract_flow
        flow.events = []   # the step's event list (env.events)
        self.bus.begin_step()
        n_blocked, bid_mw, bid_price = self._kernel_filter(power_level, price_level, k)
        self._publish_bids(bid_mw, bid_price, t0)
        self._maybe_broadcast_emergency(t0, t1)
        d1 = self.bus.deliver(gate)
        congested = self._bus_congested(d1, gate)
        self.operator.receive_forecasts(d1)
        clearing = self._clear(d1.topic(TOPIC_BIDS), t1, gate)
        self.round_index += 1
        self.round_request_mw, self.round_product = self._operator_request(self.round_index,
                                                                           gate)
        if flow.trip_round is None and self._trip_known(gate):
            flow.trip_round = self.round_index   # the first request that covers the trip
            flow.awaiting_energy_response = True
        self._announce(self.round_index, self.round_request_mw, self.round_product, gate)
        d2 = self.bus.deliver(t1)
        self.operator.receive_forecasts(d2)   # for the next round's price signal
        if self._bus_congested(d2, t1) or congested:
            # the agents' lanes could not deliver everything due this step, or were past
            # their high-water mark after a delivery: every agent sees it (observation
            # field ``backpressure``), besides its own bid's flag
            self.backpressure = np.ones(self.n_agents, dtype=bool)
        late = d2.topic(TOPIC_BIDS)   # delivered after gate closure: they missed the round
        if len(late.senders):
            self.stale_bids += len(late.senders)
        flow.receive((d1, d2), t1)
        contract_mw, contract_price = flow.verify_pending(t0)
        # contracts for this window that reached their holders after it began: they
        # execute from their delivery on (None in the usual step: none arrived late)
        joined = flow.verify_joined(t0)
        if self._emergency_in_flight:   # the broadcast's copies not all delivered before
            self.signals.receive_emergency((d1, d2))
            self._emergency_in_flight = self.bus.queue_depth(Lane.EMERGENCY) > 0
        flow.activate_reserve(self.emergency_arrival_s, t1, self.event_detected)
        book = self.reserve_book
        ex = execute(self.fleet, self.kernel, baseline_mw=self._baseline_now,
                     contract_mw=contract_mw, reserve_mw=book.active_mw,
                     activation_s=book.activation_s, t0_s=t0, dt_s=dt,
                     n_substeps=self.n_substeps, physics_dt_s=pdt, p_prev_mw=self.last_p_mw,
                     late_reserve=book.late,
                     p_start_mw=self._would_p_end_mw if cfg.shadow else self.last_p_end_mw,
                     q_start_mw=self._plan_end_mw,
                     joined=None if joined is None else joined[:3])
        self.dispatch_clamped += int(fast_count_nonzero(ex.clamped))
        if self.metrics.close_window_if_ends_in(t0, t1, last=k + 1 >= sc.episode_steps):
            # the emergency's 100 ms window ends in this step: the reserve activated in it
            # counts as far as its holders' bounds let them deliver it (before _physics
            # moves the fleet's state on)
            self.metrics.record_window_end(
                contract_mw if joined is None else contract_power_at(
                    contract_mw, joined, self.metrics.window_end_s),
                *balancing_bounds(self.fleet, self.kernel, self._baseline_now, dt))
        freq, p_exec, viol = self._physics(ex, k, t0)
        if joined is not None:   # paid pro rata: the step's mean contracted power, and
            # each contract's price weighted by the energy it was contracted for this step
            contract_price = joined_price(
                contract_mw, contract_price, joined,
                activation_share(joined[2], t0, self.n_substeps, pdt).mean(axis=1))
            contract_mw = ex.contract_mean_mw
        if ex.contract_followable_mw is not None:   # under a ramp limit: _execute_ramped
            self.last_p_end_mw = self.last_p_path_mw[:, -1].copy()
            if cfg.shadow:   # the would-be dispatch ramps on from its own last sub-step
                self._would_p_end_mw = ex.p_path_mw[:, -1].copy()
            self._plan_end_mw = ex.plan_end_mw
            contract_mw = ex.contract_followable_mw
        rewards = self._settle(ex, contract_mw, contract_price, p_exec, k, freq)
        # advance time and exogenous state; prepare the next round
        self.last_p_mw = p_exec
        self.t_s, self.step_index = t1, k + 1
        # irradiance at t1 and t1 + dt (precomputed on the same time grid)
        update_solar(self.fleet, self._irradiance[k + 1], self._irradiance[k + 2], cfg.fleet,
                     dt, self.rng, self._const)
        self._update_signals((d1, d2))
        self.scheduled_p_mw = self.awarded_next   # contracts for the step about to run (a
        # new array every step, never written in place)
        self._update_feasible()
        truncated = self.step_index >= sc.episode_steps
        would_mw = ex.p_mean_sum_mw
        self.last_info = {
            "step": k, "t_s": t1, "freq_hz": float(freq[-1]),
            "freq_min_hz": self.metrics.step_min_hz,   # of freq, from record_frequency
            "freq_max_hz": self.metrics.step_max_hz,
            "requirement_mw": float(self._requirement_mean_mw[k]),
            "request_mw": float(clearing.request_mw),
            "delivered_mw": would_mw if p_exec is ex.p_mean_mw else float(np.add.reduce(p_exec)),
            "would_dispatch_mw": would_mw,
            "clearing_price_per_mwh": clearing.clearing_price_per_mwh,
            "accepted_mw": clearing.accepted_total_mw, "consensus": clearing.consensus,
            "negotiations": int(clearing.n_accepted), "blocked": n_blocked,
            "executed_violations": viol, "events": list(flow.events),
            "product": ("reserve" if self.operator.cleared_product == PRODUCT_RESERVE
                        else "energy"),
            "shadow": cfg.shadow,
        }
        if truncated:
            self.agents = []
            self._audit.seal()
        if self.render_mode == "human":
            self.render()
        if not as_dicts:
            return self.observations_array(), rewards, truncated, self.last_info
        names = self.possible_agents
        obs = self._observations(names)
        infos = self._infos(names)
        return (obs, dict(zip(names, rewards.tolist(), strict=True)),
                dict.fromkeys(names, False), dict.fromkeys(names, truncated), infos)

    # ------------------------------------------------------------------ step parts
    def _decode(self, actions: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Actions dict → (power level, price level) arrays; errors name the agent."""
        if not isinstance(actions, Mapping):
            raise ValueError(f"actions must be a dict of agent -> action, got "
                             f"{type(actions).__name__}")
        if actions.keys() != self._live_agent_set:
            missing = [a for a in self.agents if a not in actions]
            unknown = [a for a in actions if a not in self.agent_index]
            raise ValueError(f"actions must name every live agent once: missing {missing[:5]}"
                             f"{' …' if len(missing) > 5 else ''}, unknown {unknown[:5]}")
        return decode_actions(self._act_space.nvec, self.agents,
                              [actions[a] for a in self.agents])

    def _kernel_filter(self, power_level: np.ndarray, price_level: np.ndarray, k: int):
        # int64 levels in [0, n_power_levels): step_arrays and _decode checked them
        level, bid_mw, blocked = self.kernel.enforce_in_range(power_level, self._mask_power,
                                                              self._lo, self._hi)
        n_blocked = int(fast_count_nonzero(blocked))
        if n_blocked:
            self.blocked_per_agent += blocked
            self.metrics.blocked_attempts += n_blocked
            idx = np.flatnonzero(blocked)
            listed = idx[:AUDIT_BLOCKED_LISTED]   # count is exact; the lists say if cut
            extra = {"listed": int(listed.size)} if listed.size < n_blocked else {}
            self.audit_log.append(
                "action_blocked", step=k, count=n_blocked,
                agents=[self.possible_agents[i] for i in listed],
                requested_mw=self.kernel.level_power_mw[listed, power_level[listed]],
                executed_mw=bid_mw[listed], **extra)
        return n_blocked, bid_mw, self.price_levels_per_mwh[price_level]

    def _publish_bids(self, bid_mw: np.ndarray, bid_price: np.ndarray, t0: float) -> None:
        self._bid_mw = bid_mw      # what each agent bid (it knows its own bid)
        rows = self._bid_rows      # the bus copies published rows: the buffer is reused
        rows["round"] = self.round_index
        rows["power_mw"] = bid_mw
        rows["price_per_mwh"] = bid_price
        self.backpressure = np.asarray(self.bus.publish_batch(
            TOPIC_BIDS, rows, lane=Lane.MARKET, senders=self._agent_ids,
            recipients=None, now_s=t0), dtype=bool)   # recipients None: the operator
        solar = self._solar_idx
        if solar.size:
            self.bus.publish_batch(TOPIC_FORECAST, self.fleet.solar_forecast_mw[self._const.solar],
                                   lane=Lane.TELEMETRY, senders=solar, recipients=None,
                                   now_s=t0)

    def _bus_congested(self, delivery, now_s: float) -> bool:
        """After a delivery: settle the contracts the bus dropped as obsolete (deferred
        past ``max_deferral_s``, one agent step by default) and tell whether the lanes the
        agents use (MARKET: bids and price signals; CONTROL: contracts) were congested
        (:meth:`AgentMessageBus.congested`: short of capacity, an obsolete message dropped,
        or the queue past its high-water mark)."""
        expired = delivery.expired(TOPIC_CONTRACTS)
        if len(expired.payloads):
            self.contract_flow.lose(expired.payloads.tolist(), now_s, reason="bus_expired")
        return self.bus.congested(Lane.MARKET) or self.bus.congested(Lane.CONTROL)

    def _maybe_broadcast_emergency(self, t0: float, t1: float) -> None:
        """The operator detects the trip after ``detection_delay_s`` and broadcasts it."""
        sc, n = self.scenario, self.n_agents
        if not sc.has_event or self.event_detected:
            return
        t_pub = sc.detection_time_s
        if not (t0 <= t_pub < t1):
            return
        self.event_detected = True
        self._emergency_in_flight = True
        row = np.array([(sc.event_time_s, sc.contingency_mw)], dtype=EMERGENCY_DTYPE)
        self.bus.publish_batch(TOPIC_EMERGENCY, np.repeat(row, n), lane=Lane.EMERGENCY,
                               senders=OPERATOR, recipients=self._agent_ids,
                               now_s=t_pub)
        self.audit_log.append("emergency", event_s=sc.event_time_s, lost_mw=sc.contingency_mw,
                              broadcast_s=t_pub)
        self.events.append(f"EMERGENCY: {sc.contingency_mw:.0f} MW lost at "
                           f"t = {sc.event_time_s:.1f} s")

    def _clear(self, bids: TopicBatch, window_start_s: float, now_s: float
               ) -> market.ClearingResult:
        """The operator clears this round on the bids that arrived by gate closure
        (:meth:`GridOperator.clear <gridswarm_env.grid_operator.GridOperator.clear>`); the
        awards are signed and published (:meth:`ContractFlow.issue
        <gridswarm_env.contract_flow.ContractFlow.issue>`: energy for the window starting
        at ``window_start_s``, reserve until the episode's end)."""
        result, stale = self.operator.clear(bids, self.round_index, self.round_request_mw,
                                            self.round_product, self._award_cap)
        self.stale_bids += stale
        if not result.n_accepted:   # nothing accepted: accepted_mw is all zeros
            return result
        is_reserve = self.round_product == PRODUCT_RESERVE
        window_end_s = (self._reserve_until_s if is_reserve
                        else window_start_s + self.config.dt_s)
        self.contract_flow.issue(result, self.round_index, window_start_s, window_end_s,
                                 is_reserve, now_s, self.adversary, self)
        return result

    def _physics(self, ex, k: int, t0: float):
        """Fleet energy and grid frequency over the step (nothing dispatched in shadow mode)."""
        cfg, pdt, f = self.config, self.config.grid.physics_dt_s, self.fleet
        shadow = cfg.shadow
        if shadow:
            u_pu = np.subtract(0.0, self.shortage_sub_mw[k])
        else:
            u_pu = np.subtract(ex.p_total_sub_mw, self.shortage_sub_mw[k])
        u_pu /= cfg.grid.system_base_mw
        trip = self._trip_at
        if trip is None or trip[0] != k:
            freq = self.grid.advance_unchecked(u_pu)   # finite: from finite dispatch and profiles
        else:   # the unit trips in this step, taking its inertia and governor with it
            after = self._grid_after_trip
            freq = self.grid.advance_switching(
                after, u_pu, trip[1], trip[2],
                -self.scenario.contingency_mw / cfg.grid.system_base_mw)
            self.grid = after
        self._dev_sum_hz = self.metrics.record_frequency(t0 + self._sub_end_offsets_s, freq)
        # the last sub-step's change (with one sub-step per step: from the previous step's
        # last sample, the initial frequency before the first)
        before = freq[-2] if freq.size > 1 else self.freq_trace_hz[-1]
        self.last_rocof_hz_per_s = (float(freq[-1]) - float(before)) / pdt
        self.freq_trace_hz = freq
        energy_before = f.energy_mwh.copy()
        if shadow:
            p_exec = np.zeros(self.n_agents)
            net_min = net_max = ex.baseline_mw
            apply_energy(f, energy_change_mwh(f, ex.baseline_mw, cfg.dt_s / 3600.0,
                                              self._const))
            self.shadow_dispatch_mwh += float(np.abs(ex.p_mean_mw).sum()) * cfg.dt_s / 3600.0
            self._would_dispatch_mw = ex.p_mean_mw
        else:
            p_exec, net_min, net_max = ex.p_mean_mw, ex.net_min_mw, ex.net_max_mw
            apply_energy(f, ex.energy_delta_mwh)
        path = None if ex.p_path_mw is None else (
            np.zeros_like(ex.p_path_mw) if shadow else ex.p_path_mw)
        # independent check of what was executed (kernel.check_executed, thresholds cached;
        # under a ramp limit the ramp is checked on the sub-step path), and of the stored
        # energy against the executed power (kernel.energy_mismatch: the sub-step power
        # the frequency integrated when it varied inside the step)
        count = self._checker.count(
            net_min_mw=net_min, net_max_mw=net_max, p_now_mw=p_exec,
            p_prev_mw=self.last_p_mw, energy_before_mwh=energy_before,
            energy_after_mwh=f.energy_mwh, solar_available_mw=f.solar_available_mw,
            plugged=f.plugged, p_path_mw=path, p_start_mw=self.last_p_end_mw,
            physics_dt_s=pdt, departure_s=f.departure_s, step_end_s=t0 + cfg.dt_s,
            baseline_mw=ex.baseline_mw, p_sub_mw=None if shadow else ex.p_sub_mw,
            split_levels=None if shadow else ex.split_levels)
        if path is not None:
            self.last_p_path_mw = path
        self.metrics.executed_violations += count
        return freq, p_exec, count

    def _settle(self, ex: Execution, contract_mw: np.ndarray,
                contract_price_per_mwh: np.ndarray, p_exec_mw: np.ndarray, k: int,
                freq_hz: np.ndarray) -> np.ndarray:
        """Payments, true costs, penalties and rewards of the step (DESIGN §3; the
        formulas are :mod:`gridswarm_env.market`'s settlement functions, see
        RewardConfig): gathers their inputs (EVs leaving at the step's end, the reserve
        books, the frequency deviation) and hands them to
        :meth:`Settlement.rewards <gridswarm_env.settlement.Settlement.rewards>`, which
        calls them and records the KPIs (in shadow mode nothing is paid or charged)."""
        cfg, f = self.config, self.fleet
        unmet = depart_evs(f, self.t_s + cfg.dt_s)
        if self._unmet_at_reset is not None:   # EVs that left at 0 (snap_departures)
            unmet = unmet + self._unmet_at_reset
            self._unmet_at_reset = None
        self.operator.refresh_after_departures()
        # Σ|f − 60| from record_frequency, over the sub-steps
        return self._settlement.rewards(
            ex, contract_mw, contract_price_per_mwh, p_exec_mw, unmet, self.reserve_book,
            self.t_s, float(self._requirement_mean_mw[k]), self._dev_sum_hz / freq_hz.size)

    def reserve_standing_mw(self) -> np.ndarray:
        """Reserve capacity each agent holds: under a contract it received and
        authenticated, or activated (see :meth:`ReserveBook.refresh_standing`)."""
        return self.reserve_book.standing_mw.copy()

    # the reserve books' arrays under the environment's names (gridswarm_env.reserve)
    @property
    def reserve_awarded_mw(self) -> np.ndarray:
        """Reserve awarded per agent, MW (the operator's books; reserve rounds are sized
        by it)."""
        return self.reserve_book.awarded_mw

    @property
    def reserve_held_mw(self) -> np.ndarray:
        """Reserve per agent under contracts received and authenticated, MW."""
        return self.reserve_book.held_mw

    @property
    def reserve_mw(self) -> np.ndarray:
        """Reserve per agent verified and activated, MW."""
        return self.reserve_book.active_mw

    @reserve_mw.setter
    def reserve_mw(self, value: np.ndarray) -> None:
        self.reserve_book.active_mw = value

    @property
    def activation_s(self) -> np.ndarray:
        """Each agent's first reserve activation, s (``inf`` before it)."""
        return self.reserve_book.activation_s

    @property
    def reserve_contracts(self) -> list:
        """``(signed reserve contract, owner)`` held and not yet activated."""
        return self.reserve_book.contracts

    @property
    def pending(self) -> list:
        """``(signed energy contract, owner)`` received for the next window (verified at
        its dispatch; :attr:`ContractFlow.pending <gridswarm_env.contract_flow.ContractFlow>`)."""
        return self.contract_flow.pending

    @property
    def operator_forecast_mw(self) -> np.ndarray:
        """The PV forecast the operator holds per agent (solar agents' matter), MW: each
        solar agent's newest forecast that reached it over the bus (see
        :meth:`GridOperator.receive_forecasts
        <gridswarm_env.grid_operator.GridOperator.receive_forecasts>`)."""
        return self.operator.forecast_mw

    @property
    def events(self) -> list[str]:
        """The step's events (contracts agreed, lost or rejected, the emergency): the
        contract flow's list, the one the environment adds the emergency to."""
        return self.contract_flow.events

    @property
    def reserve_short(self) -> bool:
        """Whether the last reserve round cleared short of its request (the operator's
        next rounds buy the forecast shortage as energy first; held by
        :class:`~gridswarm_env.grid_operator.GridOperator`)."""
        return self.operator.reserve_short

    @property
    def last_clearing_price_per_mwh(self) -> float:
        """The last clearing price, $/MWh (NaN before any round cleared at a price), which
        agents learn from the round announcements (``sig_clearing_price_per_mwh``; held
        by :class:`~gridswarm_env.grid_operator.GridOperator`)."""
        return self.operator.last_clearing_price_per_mwh

    @property
    def contracts_lost(self) -> int:
        """Contracts the bus refused (CONTROL lane full) or dropped as obsolete."""
        return self.contract_flow.lost

    def _update_signals(self, deliveries: tuple[Delivery, ...]) -> None:
        """What each agent learned from the messages delivered this step: the round
        announcements (:meth:`AgentSignals.receive
        <gridswarm_env.signals.AgentSignals.receive>`) and the contracts that reached it
        (:meth:`ContractFlow.file_arrived
        <gridswarm_env.contract_flow.ContractFlow.file_arrived>`: its schedule for the
        next window and the share of its bid awarded). It joins two owners, so it stays
        here (and is one of the profiler's phases)."""
        self.signals.receive(deliveries)
        # the contracts delivered this step: for dispatch, and what the agents learn
        self.awarded_next, self.accepted_share = self.contract_flow.file_arrived(
            self.round_index - 1, self.t_s, self._bid_mw)

    # ------------------------------------------------------------------ kernel and observations
    def _update_feasible(self) -> None:
        """Feasible intervals and masks for the round agents bid in next."""
        self._baseline_now = self._baseline_next
        book = self.reserve_book
        standing = book.standing_mw
        # The kernel bounds a bid by the reserve the agent holds (received). A reserve award
        # still on the bus (latencies beyond dt_s − gate_s) would activate on top of this
        # round's award: the operator, which knows its awards, accepts from such an agent
        # at most the same bound computed with that reserve counted too (_clear), so no
        # agent is awarded reserve, or energy on top of its reserve, past what it can
        # deliver. With every award received (the default bus) nothing is computed or capped.
        flying = book.in_flight_mw()
        self._award_cap = None
        if flying is not None:
            self._award_cap = (flying > 0.0, self._bid_interval(standing + flying)[1])
        lo, hi = self._bid_interval(standing)   # last: its side effects are the agents'
        self._baseline_next = self.kernel.planned_baseline_mw
        self._lo, self._hi = lo, hi
        self._mask_power = self.kernel.power_mask(lo, hi, self.kernel.limit_edges)
        self._mask_buf[:, :self._mask_power.shape[1]] = self._mask_power

    def _bid_interval(self, reserve_mw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The kernel's interval for the round bid next, counting ``reserve_mw`` as the
        reserve the agents hold (sets the kernel's ``planned_baseline_mw`` and
        ``limit_edges``)."""
        return self.kernel.bid_interval(
            self.fleet, now_s=self.t_s, committed_p_mw=self.scheduled_p_mw,
            reserve_mw=reserve_mw,
            reserve_round=self.round_product == PRODUCT_RESERVE,
            # a reserve bid must be deliverable over its contract's whole window: the
            # trip may come at any time in it (the agents do not know when)
            reserve_duration_s=max(self._reserve_until_s - (self.t_s + self.config.dt_s),
                                   self.config.dt_s),
            pending_reserve_mw=(reserve_mw - self.reserve_book.active_mw
                                if self.kernel.has_ramp else None),
            reserve_until_s=self._reserve_until_s,
            # only activated reserve executes on top of an energy bid (its absorption
            # bound): standing reserve before a trip does not
            active_reserve_mw=self.reserve_book.active_mw)

    def action_masks(self) -> np.ndarray:
        """``(n_agents, n_power_levels + n_price_levels)`` bool: the concatenated masks."""
        if not self._ready:
            self._check_reset("action_masks()")
        return self._mask_buf.copy()

    def observations_array(self) -> np.ndarray:
        """``(n_agents, OBS_DIM)`` float32 observations (see :data:`OBS_FIELDS`; built by
        :class:`~gridswarm_env.observations.ObservationBuilder`)."""
        if not self._ready:
            self._check_reset("observations_array()")
        book = self.reserve_book
        return self._obs.build(self.t_s, self._lo, self._hi, self._baseline_next,
                               self.scheduled_p_mw, self.last_p_mw, book.standing_mw,
                               book.activation_s, self.backpressure, self.accepted_share)

    def _observations(self, names: list[str] | None = None) -> dict[str, np.ndarray]:
        arr = self.observations_array()
        return dict(zip(names or self.possible_agents, arr, strict=True))

    def _infos(self, names: list[str] | None = None) -> dict[str, dict]:
        """Per agent: the action mask and feasible interval; in shadow mode also
        ``would_dispatch_mw``, the mean power the agent would have been dispatched in the
        step just taken (DESIGN §6; see :func:`~gridswarm_env.observations.agent_infos`)."""
        return agent_infos(names or self.possible_agents, self._mask_buf, self._lo, self._hi,
                           self._would_dispatch_mw if self.config.shadow else None)

    # ------------------------------------------------------------------ views
    def state(self) -> np.ndarray:
        """Global view: time, frequency, request, price, product, event flags, then per
        agent SoC, scheduled power (MW) and standing reserve (MW)."""
        self._check_reset("state()")
        head = np.array([
            self.t_s, float(self.freq_trace_hz[-1]), self.round_request_mw,
            self.round_price_signal_per_mwh, float(self.round_product), float(self.event_detected),
            float(self.reserve_book.active_mw.sum()), float(self.step_index)])
        return np.concatenate([head, self.fleet.soc, self.scheduled_p_mw,
                               self.reserve_standing_mw()])

    def episode_metrics(self) -> dict[str, Any]:
        """The KPIs of DESIGN §8 for the episode so far (see :mod:`gridswarm_env.metrics`)."""
        self._check_reset("episode_metrics()")
        now = self.ledger.counters()
        base = self._ledger_at_reset
        reasons = {k: v - base["rejected_by_reason"].get(k, 0)
                   for k, v in now["rejected_by_reason"].items()}
        contracts = {"signed": now["signed"] - base["signed"],
                     "verified": now["verified"] - base["verified"],
                     "rejected": now["rejected"] - base["rejected"],
                     "rejected_by_reason": {k: v for k, v in reasons.items() if v},
                     "lost": self.contract_flow.lost}
        totals = self.bus.stats()["totals"]
        self.metrics.extra.update({
            "scenario": self.scenario.name, "n_agents": self.n_agents,
            "trust": self.config.trust, "shadow": self.config.shadow,
            "steps": self.step_index, "stale_bids": self.stale_bids,
            "dispatch_clamped": self.dispatch_clamped,
            "shadow_dispatch_energy_mwh": self.shadow_dispatch_mwh,
            # shadow mode: when the first reserve activation would have come (nothing
            # was dispatched, so emergency_response_latency_ms stays None)
            "shadow_response_latency_ms": self.metrics.latency_ms(
                self.contract_flow.would_response_s),
            "audit_entries": self.audit_log.n_entries - self._audit_at_reset,   # this episode
        })
        return self.metrics.result(contracts=contracts, bus_totals=totals)

    def render(self) -> str | None:
        """A compact text frame (``ansi`` returns it, ``human`` prints it)."""
        if self.render_mode is None:
            import gymnasium

            gymnasium.logger.warn("render() called without render_mode; pass render_mode="
                                  "'ansi' or 'human'")
            return None
        self._check_reset("render()")
        frame = self._frame()
        if self.render_mode == "human":
            print(frame)
            return None
        return frame

    def _frame(self) -> str:
        i = self.last_info
        price = i.get("clearing_price_per_mwh", float("nan"))
        price_s = "   -   " if price is None or math.isnan(price) else f"{price:7.1f}"
        return (f"t={self.t_s:7.1f}s f={float(self.freq_trace_hz[-1]):8.4f}Hz "
                f"load={float(self.scenario.net_load_mw(self.t_s)):7.1f}MW "
                f"need={i.get('requirement_mw', 0.0):+7.2f}MW "
                f"request={i.get('request_mw', self.round_request_mw):+7.2f}MW "
                f"deliv={i.get('delivered_mw', 0.0):+7.2f}MW price={price_s}$/MWh "
                f"contracts={self.ledger.signed - self._ledger_at_reset['signed']:5d} "
                f"blocked={self.metrics.blocked_attempts:4d}"
                + (" [SHADOW]" if self.config.shadow else ""))

    def close(self) -> None:
        """Finish the audit file and flush it (see :meth:`AuditSealer.seal
        <gridswarm_env.audit_seal.AuditSealer.seal>`).

        With ``audit_path`` set and Ed25519 identities the file ends with the operator's
        closing head, so the environment cannot be reset or stepped afterwards (a
        ``RuntimeError`` says so; build a new environment with a new ``audit_path``);
        closing again does nothing. In hmac mode and without ``audit_path`` it only
        flushes, as before.
        """
        self._audit.seal(final=True)

    def operator_public_key_hex(self) -> str | None:
        """The raw Ed25519 public key (64 hex digits) with which the operator signs the
        streamed audit file's heads (``verify FILE --public-key HEX``).

        ``None`` without ``audit_path``: the key exists only to sign a streamed file's
        heads (the in-memory chain gets none, so nothing would verify with it); ``None``
        in hmac mode, whose keys are secret (no public key exists; there only
        ``audit_log.verify()`` in the writing process detects a cut tail).

        It is not a contract-signing key (those are the registry's: drawn at random by
        default, derived from the reset seed with ``contract_keys="seeded"``, when anyone
        who knows the seed could sign with them). The audit key is drawn from
        ``os.urandom`` when the environment is built and kept for its lifetime, so one
        key checks the whole file, whatever seeds its episodes used.
        """
        return self._audit.public_key_hex()


def _rebuild_env(cls: type, scenario: Scenario, config: EnvConfig, limits: Any,
                 render_mode: str | None, adversary: Any, seed: int | None) -> GridSwarmEnv:
    """A never-reset environment rebuilt from its arguments (:meth:`GridSwarmEnv.__reduce__`)."""
    return cls(scenario=scenario, config=config, limits=limits, render_mode=render_mode,
               adversary=adversary, seed=seed)

