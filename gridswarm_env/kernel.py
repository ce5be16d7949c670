"""Kernel limits layer: declarative discharge limits, feasible sets, masks, blocking.

"Policy" elsewhere means a *bidding* policy; the rules here are called **limits**.

Limits (:class:`DerLimits`) are declared per DER kind, with per-agent overrides,
from a dict or a TOML file::

    [battery]
    max_discharge_mw = 2.0      # cap on net injection per agent (default: rated power)
    max_charge_mw = 2.0         # cap on net absorption per agent (default: rated power)
    soc_min = 0.10              # SoC reserve floor
    soc_max = 0.95              # SoC ceiling
    ramp_mw_per_s = 1.0         # moves away from baseline, MW/s (default: unlimited)
    [ev]
    departure_soc = 0.8         # overrides each EV's own requirement
    [agents.battery_003]
    soc_min = 0.3

Each step the kernel computes, for every agent, the feasible interval of balancing
power for the delivery window of the round being bid (the next step), from the
worst case of the current step's outcome (its contract executed or not):

    battery: net ∈ [−min(C, (s_max·E_cap − E_hi)/(η_c·h)),  min(P, (E_lo − s_min·E_cap)·η_d/h)]
    ev:      net ∈ [−min(C, (s_max·E_cap − E_hi)/(η_c·h)),  min(0, −(E_req − E_lo)/(η_c·h))]
             E_req = departure_soc·E_cap − C·η_c·(t_dep − t_end)/3600   (must still be reachable)
    solar:   net ∈ [0, min(P, forecast)]
    p = net − baseline − reserve_active,
        then p ∈ [min(p_now, 0) − ramp·dt, max(p_now, 0) + ramp·dt]
    (a ramp limit bounds moves away from the baseline; returning to it is always
    allowed, so stopping is always feasible — see :func:`ramp_interval`)

with h = dt_s/3600, P/C the discharge/charge caps. Reserve rounds bid upward
capacity sustainable for the reserve duration. The action mask allows the power levels
inside the interval and, where a ramp limit sets a bound, the first level at or past
that bound, bid as the bound itself (levels are 0.1·rated apart, a ramp step may be
smaller: :meth:`Kernel.power_mask`); so too where a power limit (P, C, an EV's or a PV
plant's 0 MW) of an agent under a cap below its rating or a ramp limit sets it. An
action the mask does not allow is *blocked*: replaced by the nearest allowed power
level, counted and audited; a bid is clipped to the interval.

At dispatch the executor clamps every agent's net power to the physical limits
of its actual state (:meth:`Kernel.execution_bounds`), and
:func:`check_executed` — which shares none of this arithmetic — counts executed
violations after every step (it must stay 0), with :func:`energy_mismatch`: each store's
energy change against what its executed power implies (not the dispatcher's booking).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from gridswarm_env.config import (
    DER_KINDS,
    MarketConfig,
    check_non_negative,
    check_positive,
    check_range,
    check_real,
    read_toml_bytes,
    store,
)
from gridswarm_env.fleet import (
    KIND_BATTERY,
    KIND_EV,
    KIND_SOLAR,
    SECONDS_PER_HOUR,
    ZERO,
    FleetConstants,
    FleetState,
    energy_change_of,
    fast_clip,
    fast_count_nonzero,
    fleet_constants,
    kind_selector,
    scalar_array,
)

_TOL_MW = 1e-9


@dataclass(frozen=True)
class DerLimits:
    """Limits of one kind (or one agent). ``None`` caps mean "rated power".

    :param max_discharge_mw: cap on net injection (MW, per agent).
    :param max_charge_mw: cap on net absorption (MW, per agent).
    :param soc_min: SoC reserve floor in [0, 1].
    :param soc_max: SoC ceiling in [0, 1], >= soc_min.
    :param ramp_mw_per_s: cap on moving balancing power away from the baseline, MW/s.
    :param departure_soc: EV SoC that must be reachable at departure (None: the EV's own).
    """

    max_discharge_mw: float | None = None
    max_charge_mw: float | None = None
    soc_min: float = 0.0
    soc_max: float = 1.0
    ramp_mw_per_s: float = math.inf
    departure_soc: float | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for f in fields(self):
            store(self, f.name, check_limit_field(owner, f.name, getattr(self, f.name)))
        check_soc_order(owner, self.soc_min, self.soc_max, self.departure_soc)


def check_soc_order(owner: str, soc_min: float, soc_max: float,
                    departure_soc: float | None) -> None:
    """``soc_min <= soc_max``, and ``departure_soc <= soc_max`` when given (an EV cannot
    be charged above its ceiling).

    :raises ValueError: naming ``owner`` and both values.
    """
    if soc_min > soc_max:
        raise ValueError(f"{owner}: soc_min ({soc_min}) must be <= soc_max ({soc_max})")
    if departure_soc is not None and departure_soc > soc_max:
        raise ValueError(f"{owner}: departure_soc ({departure_soc}) must be <= soc_max "
                         f"({soc_max}): an EV cannot be charged above its ceiling")


_LIMIT_FIELDS = tuple(f.name for f in fields(DerLimits))


def check_limit_field(owner: str, name: str, value: Any) -> float | None:
    """Check one :class:`DerLimits` field on its own; return it normalized (float or None).

    :raises ValueError: naming ``owner.name``, the bad value and what is allowed.
    """
    if name not in _LIMIT_FIELDS:
        raise ValueError(f"{owner}: unknown field {name!r}; allowed: "
                         f"{', '.join(sorted(_LIMIT_FIELDS))}")
    if name in ("max_discharge_mw", "max_charge_mw"):
        return None if value is None else check_non_negative(owner, name, value)
    if name == "ramp_mw_per_s":
        if value is None:   # as in JSON (Limits.to_dict): unlimited
            return math.inf
        v = check_real(owner, name, value, allow_inf=True)
        if not v > 0.0:
            raise ValueError(f"{owner}.{name} = {value!r}: must be > 0 (inf = unlimited)")
        return v
    if name == "departure_soc" and value is None:
        return None
    return check_range(owner, name, value, 0.0, 1.0)


def _check_limit_table(owner: str, table: Mapping[str, Any]) -> dict[str, float | None]:
    """A table of :class:`DerLimits` fields (a kind's ``[battery]``, an agent's
    ``[agents.battery_003]``), each checked by :func:`check_limit_field`.

    :raises ValueError: naming ``owner`` and every unknown field, then the first bad value.
    """
    bad = sorted(map(str, set(table) - set(_LIMIT_FIELDS)))
    if bad:
        raise ValueError(f"{owner}: unknown field(s) {', '.join(bad)}; "
                         f"allowed: {', '.join(sorted(_LIMIT_FIELDS))}")
    return {name: check_limit_field(owner, name, value) for name, value in table.items()}


def _name_kind(agent: str) -> str:
    """The kind part of an agent name ``<kind>_<index>`` (``battery_003`` -> ``battery``)."""
    return agent.rsplit("_", 1)[0]


#: per kind, the fields its limits may not change from their defaults, why, and the fields
#: it takes: solar stores no energy and cannot absorb power (its balancing power lies
#: between 0 and its available output), an EV never injects power (no V2G), so these
#: would be accepted and do nothing
_NOT_FOR_KIND: Mapping[str, tuple[Mapping[str, Any], str, str]] = {
    "solar": ({"soc_min": 0.0, "soc_max": 1.0, "max_charge_mw": None},
              "solar stores no energy and cannot absorb power (it can only lower its output, "
              "between 0 and its available power), so soc_min, soc_max and max_charge_mw do "
              "nothing for it", "max_discharge_mw, ramp_mw_per_s"),
    "ev": ({"max_discharge_mw": None},
           "an EV never injects power (no V2G: its net power lies between its full charging "
           "and 0 MW), so max_discharge_mw does nothing for it",
           "max_charge_mw, soc_min, soc_max, ramp_mw_per_s, departure_soc"),
}


def _check_kind_fields(owner: str, kind: str, values: Mapping[str, Any]) -> None:
    """Refuse a solar or EV limit that cannot apply (see :data:`_NOT_FOR_KIND`); the
    default values pass (:meth:`Limits.to_dict` writes them for every kind).

    :raises ValueError: naming the field, its value, why and the fields the kind takes.
    """
    if kind not in _NOT_FOR_KIND:
        return
    defaults, why, allowed = _NOT_FOR_KIND[kind]
    for name, default in defaults.items():
        if name in values and values[name] != default:
            raise ValueError(f"{owner}.{name} = {values[name]!r}: {why}; allowed for {kind}: "
                             f"{allowed}")


def _ev_only(owner: str, kind: str, departure_soc: float) -> str:
    """The message refusing a ``departure_soc`` given to a solar or battery agent."""
    return (f"{owner}.departure_soc = {departure_soc!r}: an EV-only field (the SoC an EV "
            f"must still reach at departure), a {kind} agent has no departure; allowed "
            "only in [ev] and [agents.ev_<n>]")


class ReadOnlyDict(dict):
    """A dict that cannot be changed once built (item assignment, deletion and the
    mutating methods raise ``TypeError``): what :class:`Limits` stores, so a frozen
    ``Limits`` is immutable and does not follow later changes to the dicts it was built
    from. Hashable when its values are; it pickles and copies as a new ``ReadOnlyDict``
    of the same items (``pickle`` would otherwise refill it item by item); being a dict,
    it compares equal to a dict of the same items and ``json`` and
    ``dataclasses.asdict`` take it as one."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> ReadOnlyDict:
        self = super().__new__(cls)
        dict.__init__(self, *args, **kwargs)    # filled once, here
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Filled by ``__new__``: calling ``__init__`` again changes nothing."""

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is read-only: build a new one (e.g. "
                        "Limits.from_dict or dataclasses.replace for limits)")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self) -> int:   # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[type[ReadOnlyDict], tuple[dict[Any, Any]]]:
        return type(self), (dict(self),)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


#: each kind's default limits (read-only; :meth:`Limits.from_dict` merges changes on them)
DEFAULT_KIND_LIMITS: Mapping[str, DerLimits] = ReadOnlyDict({
    "solar": DerLimits(),
    "battery": DerLimits(soc_min=0.10, soc_max=0.95),   # typical vendor reserve / top margin
    "ev": DerLimits(soc_min=0.05, soc_max=1.0),
})


@dataclass(frozen=True)
class Limits:
    """Limits per kind plus per-agent overrides (field dicts merged on the kind's limits).

    Immutable and hashable: both mappings (and each agent's fields) are stored as
    :class:`ReadOnlyDict` copies of those given, so changing the given dicts afterwards
    changes nothing here.
    """

    per_kind: Mapping[str, DerLimits] = field(default_factory=lambda: DEFAULT_KIND_LIMITS)
    per_agent: Mapping[str, Mapping[str, Any]] = field(default_factory=ReadOnlyDict)

    def __post_init__(self) -> None:
        if not isinstance(self.per_kind, Mapping):
            raise ValueError("limits: per_kind must be a mapping of DER kind to DerLimits, got "
                             f"{type(self.per_kind).__name__}")
        for kind, lim in self.per_kind.items():
            if kind not in DER_KINDS:
                raise ValueError(f"limits: unknown DER kind {kind!r}; allowed: "
                                 f"{', '.join(DER_KINDS)}")
            if not isinstance(lim, DerLimits):
                raise ValueError(f"limits[{kind!r}] must be DerLimits, got {type(lim).__name__}")
            if kind != "ev" and lim.departure_soc is not None:
                raise ValueError(_ev_only(f"limits[{kind!r}]", kind, lim.departure_soc))
            _check_kind_fields(f"limits[{kind!r}]", kind,
                               {f.name: getattr(lim, f.name) for f in fields(lim)})
        if not isinstance(self.per_agent, Mapping):
            raise ValueError("limits: per_agent (the [agents] section) must be a table of agent "
                             f"names, got {type(self.per_agent).__name__}")
        # every value is checked (and normalized) here, and soc_min <= soc_max when both
        # are given; one of them against the other's kind default needs the agent's kind,
        # so that is checked when the limits are compiled against the fleet
        per_agent: dict[str, ReadOnlyDict] = {}
        for agent, changes in self.per_agent.items():
            owner = f"limits.agents[{agent!r}]"
            if not isinstance(agent, str) or not agent.strip():
                got = repr(agent) if isinstance(agent, str) else type(agent).__name__
                raise ValueError(f"{owner}: agent names must be non-empty strings such as "
                                 f"battery_003 ([agents.battery_003]), got {got}")
            if not isinstance(changes, Mapping):
                raise ValueError(f"{owner} = {changes!r}: expected a table of limit fields "
                                 f"({', '.join(_LIMIT_FIELDS)}), e.g. "
                                 f"[agents.{agent}] soc_min = 0.3")
            checked = _check_limit_table(owner, changes)
            kind = _name_kind(agent)
            if kind in ("solar", "battery") and checked.get("departure_soc") is not None:
                raise ValueError(_ev_only(owner, kind, checked["departure_soc"]))
            _check_kind_fields(owner, kind, checked)
            check_soc_order(owner, checked.get("soc_min", 0.0), checked.get("soc_max", 1.0),
                            checked.get("departure_soc"))
            per_agent[agent] = ReadOnlyDict(checked)
        store(self, "per_kind", ReadOnlyDict(self.per_kind))
        store(self, "per_agent", ReadOnlyDict(per_agent))

    def for_kind(self, kind: str) -> DerLimits:
        return self.per_kind.get(kind, DEFAULT_KIND_LIMITS[kind])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limits:
        """Build from ``{"battery": {...}, "ev": {...}, "agents": {"battery_003": {...}}}``.

        Kinds not given keep their defaults; given fields override the defaults.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"limits must be a mapping, got {type(data).__name__}")
        per_kind = dict(DEFAULT_KIND_LIMITS)
        for key, value in data.items():
            if key == "agents":
                continue
            if key not in DER_KINDS:
                raise ValueError(f"limits: unknown section {key!r}; allowed: "
                                 f"{', '.join(DER_KINDS)}, agents")
            if not isinstance(value, Mapping):
                raise ValueError(f"limits[{key!r}] = {value!r}: must be a table of fields "
                                 f"({', '.join(_LIMIT_FIELDS)})")
            owner = f"limits[{key!r}]"
            checked = _check_limit_table(owner, value)
            try:
                per_kind[key] = replace(DEFAULT_KIND_LIMITS[key], **checked)
            except ValueError as exc:       # soc_min > soc_max (with the kind's defaults)
                raise ValueError(f"{owner}: {exc}") from None
        agents = data.get("agents", {})
        if not isinstance(agents, Mapping):
            raise ValueError(f"limits['agents'] = {agents!r}: must be a table of agent names, "
                             "e.g. [agents.battery_003]")
        return cls(per_kind=per_kind, per_agent=agents)

    def to_dict(self) -> dict[str, Any]:
        """The inverse of :meth:`from_dict`, JSON-safe: every kind's limits (all fields) and
        every per-agent override given, an unlimited ramp (inf) written as None, which
        :func:`check_limit_field` reads back as unlimited (an uncapped power and an EV's
        own departure SoC are None already). ``Limits.from_dict(limits.to_dict()) ==
        limits``."""
        def safe(value: Any) -> Any:
            return None if isinstance(value, float) and math.isinf(value) else value
        out: dict[str, Any] = {
            kind: {f.name: safe(getattr(self.for_kind(kind), f.name))
                   for f in fields(DerLimits)}
            for kind in DER_KINDS}
        out["agents"] = {agent: {name: safe(value) for name, value in changes.items()}
                         for agent, changes in self.per_agent.items()}
        return out

    @classmethod
    def from_toml(cls, path: str | Path) -> Limits:
        """Load limits from a TOML file (see the module docstring for the layout).

        :raises ValueError: naming the file: an empty path (which ``Path`` reads as the
            current directory), a directory, a missing or unreadable file, bad TOML or a
            bad limit.
        """
        return cls.read_toml(path)[0]

    @classmethod
    def read_toml(cls, path: str | Path) -> tuple[Limits, bytes]:
        """:meth:`from_toml`, and the bytes the limits were parsed from (the file is read
        once: hash these to name the file, :func:`~gridswarm_env.config.read_toml_bytes`).

        :raises ValueError: as :meth:`from_toml`.
        """
        p = Path(path)
        data, raw, _text = read_toml_bytes(path, "limits file")
        try:
            return cls.from_dict(data), raw
        except ValueError as exc:
            raise ValueError(f"limits file {str(p)!r}: {exc}") from None


def as_limits(limits: Limits | Mapping[str, Any] | str | Path | None) -> Limits:
    """Accept a :class:`Limits`, a dict, a TOML path or None (defaults)."""
    if limits is None:
        return Limits()
    if isinstance(limits, Limits):
        return limits
    if isinstance(limits, str | Path):
        return Limits.from_toml(limits)
    return Limits.from_dict(limits)


@dataclass(frozen=True)
class LimitArrays:
    """Limits compiled to arrays over agents (shape ``(n_agents,)`` each)."""

    max_discharge_mw: np.ndarray
    max_charge_mw: np.ndarray
    soc_min: np.ndarray
    soc_max: np.ndarray
    ramp_mw_per_s: np.ndarray
    departure_soc: np.ndarray


def agent_limits(limits: Limits, agent: str, kind: str) -> DerLimits:
    """``agent``'s overrides merged on its kind's limits.

    :raises ValueError: naming the agent, when the merge is inconsistent (e.g. an agent's
        ``soc_min`` above its kind's ``soc_max``).
    """
    try:
        return replace(limits.for_kind(kind), **limits.per_agent.get(agent, {}))
    except ValueError as exc:
        raise ValueError(f"limits.agents[{agent!r}] ({kind}): {exc}") from None


def _describe_names(names: list[str]) -> str:
    """``solar_000…solar_029, battery_000…battery_039, ev_000`` (first…last per kind)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(_name_kind(name), []).append(name)
    return ", ".join(g[0] if len(g) == 1 else f"{g[0]}…{g[-1]}" for g in groups.values())


def check_limits_names(limits: Limits, names: list[str],
                       ev_departure_soc: float | None = None) -> None:
    """Every per-agent override must name one of ``names`` (``<kind>_<index>``) and merge
    consistently on its kind's limits (:func:`agent_limits`); with ``ev_departure_soc``
    (the fleet's, ``FleetConfig.ev_departure_soc``), every EV's departure SoC (its limits'
    ``departure_soc``, else the fleet's) must also be at most its ``soc_max``.

    :raises ValueError: naming the unknown agents and the fleet's names, or the agent
        whose merged limits are inconsistent.
    """
    unknown = sorted(set(limits.per_agent) - set(names))
    if unknown:
        more = " …" if len(unknown) > 5 else ""
        raise ValueError(f"limits name agent(s) {', '.join(unknown[:5])}{more} that a fleet "
                         f"of {len(names)} agents does not have (its agents: "
                         f"{_describe_names(names)})")
    merged = {}
    for agent in limits.per_agent:
        kind = _name_kind(agent)
        if kind in DER_KINDS:
            merged[agent] = agent_limits(limits, agent, kind)
    if ev_departure_soc is None:
        return
    ev_limits = [("limits['ev']", limits.for_kind("ev"))] if any(
        _name_kind(name) == "ev" and name not in merged for name in names) else []
    ev_limits += [(f"limits.agents[{agent!r}]", lim) for agent, lim in merged.items()
                  if _name_kind(agent) == "ev"]
    for owner, lim in ev_limits:
        if lim.departure_soc is None:
            _check_departure(owner, ev_departure_soc, "FleetConfig.ev_departure_soc",
                             lim.soc_max)
        else:
            _check_departure(owner, lim.departure_soc, "departure_soc", lim.soc_max)


def _check_departure(owner: str, departure: float, source: str, soc_max: float) -> None:
    """An EV asked to leave fuller than its ceiling would be charged to the ceiling and
    leave with unmet energy every time: refuse the contradiction."""
    if departure > soc_max:
        raise ValueError(
            f"{owner}: the EVs' departure SoC {departure:g} ({source}) is above their "
            f"soc_max {soc_max:g}; an EV cannot be charged above its ceiling: lower the "
            f"departure SoC (FleetConfig.ev_departure_soc or the ev limits' departure_soc) "
            f"or raise soc_max")


def compile_limits(limits: Limits, names: list[str], fleet: FleetState) -> LimitArrays:
    """Resolve kind limits and per-agent overrides into arrays (once per episode)."""
    check_limits_names(limits, names)
    n = fleet.n_agents
    cols = {f.name: np.empty(n) for f in fields(LimitArrays)}
    index = {name: i for i, name in enumerate(names)}
    for k, kind in enumerate(DER_KINDS):
        lim = limits.for_kind(kind)
        sel = fleet.kind == k
        _fill(cols, sel, lim, fleet)
    for agent in limits.per_agent:
        i = index[agent]
        lim = agent_limits(limits, agent, DER_KINDS[int(fleet.kind[i])])
        sel = np.zeros(n, dtype=bool)
        sel[i] = True
        _fill(cols, sel, lim, fleet)
    # the same rule for a fleet built elsewhere (its own departure SoC per EV)
    above = np.flatnonzero((fleet.kind == KIND_EV) & (cols["departure_soc"] > cols["soc_max"]))
    if above.size:
        i = int(above[0])
        _check_departure(f"limits for {names[i]}", float(cols["departure_soc"][i]),
                         "the fleet's or the limits' departure SoC", float(cols["soc_max"][i]))
    return LimitArrays(**cols)


def _fill(cols: dict[str, np.ndarray], sel: np.ndarray, lim: DerLimits,
          fleet: FleetState) -> None:
    rated = fleet.rated_power_mw[sel]
    cols["max_discharge_mw"][sel] = rated if lim.max_discharge_mw is None else np.minimum(
        rated, lim.max_discharge_mw)
    cols["max_charge_mw"][sel] = rated if lim.max_charge_mw is None else np.minimum(
        rated, lim.max_charge_mw)
    cols["soc_min"][sel] = lim.soc_min
    cols["soc_max"][sel] = lim.soc_max
    cols["ramp_mw_per_s"][sel] = lim.ramp_mw_per_s
    cols["departure_soc"][sel] = (fleet.departure_soc[sel] if lim.departure_soc is None
                                  else lim.departure_soc)


class Kernel:
    """Feasible sets, masks and blocking for one fleet (arrays over agents).

    :param limits: the declared limits.
    :param names: agent names (for per-agent overrides).
    :param fleet: the fleet at reset (kinds and ratings).
    :param n_power_levels: power levels ``linspace(-1, 1, n) · rated``.
    :param dt_s: agent step.
    :param reserve_full_activation_s: the reserve product's full activation time
        (:class:`~gridswarm_env.config.MarketConfig`): under a finite ramp ``r`` a reserve
        bid is at most ``r·reserve_full_activation_s``.
    """

    def __init__(self, limits: Limits, names: list[str], fleet: FleetState,
                 n_power_levels: int, dt_s: float,
                 reserve_full_activation_s: float = MarketConfig.reserve_full_activation_s
                 ) -> None:
        self.limits = limits
        self.arrays = compile_limits(limits, names, fleet)
        self.dt_s = float(dt_s)
        self.level_fraction = np.linspace(-1.0, 1.0, n_power_levels)
        self.level_power_mw = fleet.rated_power_mw[:, None] * self.level_fraction[None, :]
        self._h = self.dt_s / 3600.0
        self.is_solar = fleet.kind == KIND_SOLAR
        self.is_battery = fleet.kind == KIND_BATTERY
        self.is_ev = fleet.kind == KIND_EV
        self._rows = np.arange(fleet.n_agents)
        self.planned_baseline_mw = np.zeros(fleet.n_agents)
        # (lo side, hi side) bool over agents: where the last bid_interval's bound is a ramp
        # limit's or a power limit's (_power_limit_edges; None without either); see power_mask
        self.limit_edges: tuple[np.ndarray, np.ndarray] | None = None
        # per-episode constants (limits and the fleet's static fields), computed once
        self._level_tol_mw = _TOL_MW * (1.0 + np.abs(self.level_power_mw))
        # the level table and its tolerances transposed (levels × agents): the mask's
        # comparisons then broadcast lo/hi along contiguous rows
        self._level_power_t = np.ascontiguousarray(self.level_power_mw.T)
        self._level_tol_t = np.ascontiguousarray(self._level_tol_mw.T)
        # the mask's scratch (levels × agents): bounds and comparisons written in place (a
        # fresh array this size is page-faulted in every call at 10 000 agents)
        self._mask_bound = np.empty(self._level_tol_t.shape)
        self._mask_inside = np.empty(self._level_tol_t.shape, dtype=bool)
        self._mask_below = np.empty(self._level_tol_t.shape, dtype=bool)
        # a ufunc broadcasting an (n,) operand over the rows takes a slower path (at 100
        # agents 1.6 µs, against 1.3 µs for copying it into the rows and a plain call);
        # once the table outgrows the caches (measured: from ~4 000 agents) the extra pass costs
        # more; the bound below (512 KiB, ~3 100 agents at 21 levels) keeps under that
        self._mask_rows_first = self._mask_bound.nbytes <= 1 << 19
        # the mask is never empty when one level row is all inside: the level nearest to
        # 0 MW, inside any interval holding 0 (the bid intervals do), is checked first
        self._probe_level = int(np.argmin(np.abs(self.level_fraction)))
        # (agent, level) -> index into the flattened (n, levels) tables: i·levels + level
        self._row_offsets = self._rows * n_power_levels
        self._level_power_flat = self.level_power_mw.reshape(-1)
        self.ramp_step_mw = self.arrays.ramp_mw_per_s * self.dt_s
        self.has_ramp = bool(np.isfinite(self.ramp_step_mw).any())
        # the most reserve a DER can deliver within the full activation time (inf: no ramp)
        full_s = check_positive("Kernel", "reserve_full_activation_s", reserve_full_activation_s)
        self.reserve_ramp_cap_mw = self.arrays.ramp_mw_per_s * full_s
        # agents under a cap below their rating (a battery's or PV plant's
        # max_discharge_mw, a battery's or EV's max_charge_mw) or a ramp limit: where one
        # of their power limits sets a bound (not their stored energy or an EV's
        # departure), a bound that is no whole number of levels (a cap, or the limit less
        # a reserve the ramp cut, less an EV's or PV plant's baseline) would strand what
        # lies past the last level inside it (power_mask, _power_limit_edges).
        # Without such limits the rule is not applied: the shipped runs stay bit-identical
        a, rated = self.arrays, fleet.rated_power_mw
        limited = np.isfinite(a.ramp_mw_per_s)
        limited |= (self.is_battery | self.is_solar) & (a.max_discharge_mw < rated)
        limited |= (self.is_battery | self.is_ev) & (a.max_charge_mw < rated)
        #: bool over agents, those the limit-edge rule applies to (None: no agent)
        self.limit_edge_agents = limited if fast_count_nonzero(limited) else None
        # the net limits that set a bound there: hi a battery's discharge limit, an EV's
        # 0 MW (no V2G; a departure's forced charging lies below it); lo a battery's or
        # EV's charge limit (the room to the SoC ceiling lies above it), a PV plant's
        # 0 MW output (full curtailment: lo_net is always 0 for solar); a PV plant's upper
        # bound, its forecast output less its baseline, is 0: none
        hi_limit = np.where(self.is_battery, a.max_discharge_mw, 0.0)
        lo_limit = np.where(self.is_solar, 0.0, -a.max_charge_mw)
        self._edge_hi_at = np.where(self.is_solar, np.inf,
                                    hi_limit - _TOL_MW * (1.0 + np.abs(hi_limit)))
        self._edge_lo_at = lo_limit + _TOL_MW * (1.0 + np.abs(lo_limit))
        self._fleet = fleet
        self._statics = _Statics.of(fleet, self.arrays)

    def _statics_for(self, fleet: FleetState) -> _Statics:
        """Constants of ``fleet`` (cached for the fleet the kernel was built with)."""
        return self._statics if fleet is self._fleet else _Statics.of(fleet, self.arrays)

    @property
    def constants(self) -> FleetConstants:
        """Kind masks, selectors and safe efficiencies of the kernel's fleet."""
        return self._statics.fleet

    # ------------------------------------------------------------------ feasible sets
    def net_bounds(self, fleet: FleetState, energy_lo_mwh: np.ndarray,
                   energy_hi_mwh: np.ndarray, solar_available_mw: np.ndarray,
                   duration_h: float, window_end_s: float, plugged: np.ndarray,
                   departure_rule: bool) -> tuple[np.ndarray, np.ndarray]:
        """Net-injection interval over a window of ``duration_h`` (module equations)."""
        lo, hi = self._bounds(self._statics_for(fleet), fleet, energy_lo_mwh, energy_hi_mwh,
                              solar_available_mw, duration_h, window_end_s, plugged,
                              departure_rule)
        return lo, hi

    def _bounds(self, st: _Statics, fleet: FleetState, energy_lo_mwh: np.ndarray,
                energy_hi_mwh: np.ndarray, solar_available_mw: np.ndarray, duration_h: float,
                window_end_s: float, plugged: np.ndarray, departure_rule: bool,
                all_plugged: bool | None = None) -> np.ndarray:
        """:meth:`net_bounds` as one ``(2, n)`` array, rows ``lo`` and ``hi`` (same arithmetic,
        both rows in one ufunc call where the formulas are alike). ``all_plugged``: whether
        every entry of ``plugged`` is True, if the caller knows (None: counted here)."""
        c = st.fleet
        div, charge_h_ev, _ = st.per_duration(fleet, duration_h)
        b = np.empty((2, fleet.n_agents))
        lo, hi = b[0], b[1]
        np.subtract(st.ceil_mwh, energy_hi_mwh, out=lo)     # room up
        np.subtract(energy_lo_mwh, st.floor_mwh, out=hi)    # room down
        np.maximum(b, st.zero2, out=b)
        hi *= c.eta_discharge_safe
        b /= div                                            # rows: / (η_c·h), / h
        np.minimum(st.charge_discharge_mw, b, out=b)        # rows: min(C, ·), min(P, ·)
        np.negative(lo, out=lo)
        # EV: no V2G; departure energy must stay reachable; unplugged moves nothing
        ev = c.ev
        if departure_rule:
            after_h = fleet.departure_s[ev] - window_end_s
            np.maximum(after_h, st.ev_zero, out=after_h)
            after_h /= SECONDS_PER_HOUR
            if st.ev_no_charge is not None:   # 0 MW for any time, inf (never leaves) too
                np.copyto(after_h, 0.0, where=st.ev_no_charge)
            e_req = st.ev_departure_energy_mwh - st.ev_charge_rate_mw * after_h
            need = np.subtract(e_req, energy_lo_mwh[ev], out=e_req)
            np.maximum(need, st.ev_zero, out=need)
            need /= charge_h_ev
            np.negative(need, out=need)
            np.maximum(need, lo[ev], out=need)
            if isinstance(ev, slice):   # hi[ev] is a view: written in place
                np.minimum(need, st.ev_zero, out=hi[ev])
            else:
                hi[ev] = np.minimum(need, st.ev_zero, out=need)
        else:
            hi[ev] = ZERO
        if all_plugged is None:
            all_plugged = fast_count_nonzero(plugged) == plugged.shape[0]
        if not all_plugged:
            ev_off = c.is_ev > plugged                      # is_ev & ~plugged
            if fast_count_nonzero(ev_off):
                lo[ev_off] = 0.0
                hi[ev_off] = 0.0
        # solar: between 0 and its available output (export cap applies)
        solar = c.solar
        lo[solar] = ZERO
        if isinstance(solar, slice):   # a view: written in place
            np.minimum(solar_available_mw[solar], st.solar_max_discharge_mw, out=hi[solar])
        else:
            hi[solar] = np.minimum(solar_available_mw[solar], st.solar_max_discharge_mw)
        np.maximum(hi, lo, out=hi)
        return b

    def bid_interval(self, fleet: FleetState, *, now_s: float, committed_p_mw: np.ndarray,
                     reserve_mw: np.ndarray, reserve_round: bool,
                     reserve_duration_s: float,
                     pending_reserve_mw: np.ndarray | None = None,
                     reserve_until_s: float | None = None,
                     active_reserve_mw: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Feasible balancing power for the round being bid (delivery next step).

        ``committed_p_mw`` is the balancing power scheduled for the current step and
        ``reserve_mw`` the agent's standing (or active) reserve, which stays on top of
        any energy dispatch; a battery holding it keeps ``R·(reserve_until_s − end of the
        window bid for)/η_d`` of its energy out of an energy round's discharge bound, so
        energy sold now cannot leave the reserve contract undelivered later.
        ``pending_reserve_mw``, the part of it not activated yet,
        may activate on top of the bid in the window bid for, so under a ramp limit the
        bid keeps that much of the ramp free: ``hi <= max(max(C, 0) + ramp − pending, 0)``
        (the dispatcher ramps from the power executed now, which does not include it).
        ``active_reserve_mw``, the part of ``reserve_mw`` already activated (None: all of
        it): an energy round's absorption bound counts only that part,
        ``lo = min(lo_net − base − active, 0)``, as only activated reserve is executed
        on top of the bid; reserve not activated yet (standing before a trip: the
        operator's energy rounds once its target is met or a reserve round cleared
        short) may not activate in the window,
        so the bid alone must be deliverable (else the dispatcher clips it, and a trip
        then finds the reserve filling that gap instead of answering).
        """
        h = self._h
        st = self._statics_for(fleet)
        c = st.fleet
        # the next step starts from an energy between "nothing executed" and "all executed"
        # (both cases evaluated as the two rows of one array)
        n = fleet.n_agents
        net = np.empty((2, n))
        base_now = net[0]
        # −(EV charging) where plugged, −0.0 elsewhere (as the formula gives)
        if fast_count_nonzero(fleet.plugged) == n:
            base_now[...] = st.base_now_template
        else:
            base_now[...] = st.neg_zero
            np.copyto(base_now, st.base_now_template, where=fleet.plugged)
        solar = c.solar
        base_now[solar] = fleet.solar_available_mw[solar]
        np.add(base_now, committed_p_mw, out=net[1])
        net[1] += reserve_mw
        # energy_change_mwh(fleet, net, h, c) with (2, n) operands (no broadcasting)
        e = energy_change_of(net, st.zero2, st.eta_charge2, st.eta_discharge_safe2,
                             st.per_duration(fleet, h)[2], solar)
        e += fleet.energy_mwh
        e_lo, e_hi = np.minimum(e[0], e[1]), np.maximum(e[0], e[1])
        t1 = now_s + self.dt_s
        plugged_next = fleet.departure_s > t1
        plugged_next &= fleet.plugged
        all_plugged_next = fast_count_nonzero(plugged_next) == n
        if all_plugged_next:
            base_next = st.base_next_template.copy()
        else:
            base_next = np.zeros(n)
            np.copyto(base_next, st.base_next_template, where=plugged_next)
        base_next[solar] = fleet.solar_forecast_mw[solar]
        rest_h = (0.0 if reserve_round or reserve_until_s is None
                  else max(reserve_until_s - (t1 + self.dt_s), 0.0) / 3600.0)
        if rest_h > 0.0 and fast_count_nonzero(reserve_mw):
            # a battery holding reserve keeps the energy that reserve needs after this
            # window: R × the rest of its period / η_d out of the discharge bound
            keep = reserve_mw * rest_h
            keep /= c.eta_discharge_safe
            keep[~self.is_battery] = ZERO
            e_lo = e_lo - keep
        b = self._bounds(st, fleet, e_lo, e_hi, fleet.solar_forecast_mw, h, t1 + self.dt_s,
                         plugged_next, True, all_plugged_next)
        lo_net, hi_net = b[0], b[1]
        # the schedule the DER follows at p = 0, made feasible (an EV that must charge
        # faster to make its departure does so; a full one stops)
        base_eff = fast_clip(base_next, lo_net, hi_net)
        self.planned_baseline_mw = base_eff
        if reserve_round:
            dur_h = max(reserve_duration_s, self.dt_s) / 3600.0
            lo_res, hi_res = self._bounds(st, fleet, e_lo, e_hi, fleet.solar_forecast_mw,
                                          dur_h, t1 + reserve_duration_s, plugged_next, True)
            top = np.minimum(hi_res, hi_net)
            at_limit = self._power_limit_edges(None, top)
            hi = np.maximum(top - base_eff - reserve_mw, 0.0)
            # an EV leaving before the reserve period ends cannot hold reserve, nor can
            # one whose baseline charging fills it (to its ceiling) before the period
            # ends: its reserve is that charging, deferred, and a full EV's stops anyway,
            # so a trip after that finds nothing to defer (its baseline charging over the
            # period, −base_eff, is more than its room sustains, −lo_res); under a
            # ramp limit the activated reserve ramps in at the DER's rate
            # (dispatch._execute_ramped), so a DER holds at most what it reaches within
            # the product's full activation time (its first level past that bound is
            # bid as the bound, as with energy bids: power_mask)
            leaves = self.is_ev & (fleet.departure_s < t1 + reserve_duration_s)
            leaves |= self.is_ev & (base_eff < lo_res)
            hi = np.where(self.is_solar | leaves, 0.0, hi)
            self.limit_edges = None
            if self.has_ramp:
                cap = np.maximum(self.reserve_ramp_cap_mw - reserve_mw, 0.0)
                by_ramp = cap < hi
                np.minimum(hi, cap, out=hi)
                self.limit_edges = (np.zeros(n, dtype=bool), by_ramp)
            lo = np.zeros_like(hi)
            self._add_power_limit_edges(at_limit, lo, hi)
            return lo, hi
        # lo = min(lo_net − base − active, 0), hi = max(hi_net − base − reserve, 0)
        at_limit = self._power_limit_edges(lo_net, hi_net)
        lo, hi = lo_net, hi_net
        lo -= base_eff
        lo -= reserve_mw if active_reserve_mw is None else active_reserve_mw
        hi -= base_eff
        hi -= reserve_mw
        np.minimum(lo, c.zero, out=lo)
        np.maximum(hi, c.zero, out=hi)
        if not all_plugged_next:
            gone = c.is_ev > plugged_next           # an unplugged EV moves nothing
            if fast_count_nonzero(gone):
                lo[gone] = 0.0
                hi[gone] = 0.0
        if self.has_ramp:
            r_lo, r_hi = ramp_interval(committed_p_mw, self.ramp_step_mw)
            if pending_reserve_mw is not None:
                r_hi -= pending_reserve_mw
                np.maximum(r_hi, 0.0, out=r_hi)
            self.limit_edges = (r_lo >= lo, r_hi <= hi)   # where the ramp sets the bound
            np.maximum(lo, r_lo, out=lo)
            np.minimum(hi, r_hi, out=hi)
        else:
            self.limit_edges = None
        self._add_power_limit_edges(at_limit, lo, hi)
        return lo, hi

    def _power_limit_edges(self, lo_net_mw: np.ndarray | None, hi_net_mw: np.ndarray
                           ) -> tuple[np.ndarray | None, np.ndarray] | None:
        """Over agents, ``(lo side, hi side)``: the :attr:`limit_edge_agents` whose net
        bound ``lo_net_mw`` / ``hi_net_mw`` a power limit sets, not their stored energy or
        an EV's departure (hi: a battery's discharge limit, an EV's 0 MW; lo: a battery's
        or EV's charge limit, a PV plant's 0 MW). ``lo_net_mw`` None: no lo side (None);
        None without such agents."""
        if self.limit_edge_agents is None:
            return None
        hi_side = hi_net_mw >= self._edge_hi_at
        hi_side &= self.limit_edge_agents
        if lo_net_mw is None:
            return None, hi_side
        lo_side = lo_net_mw <= self._edge_lo_at
        lo_side &= self.limit_edge_agents
        return lo_side, hi_side

    def _add_power_limit_edges(self, at_limit: tuple[np.ndarray | None, np.ndarray] | None,
                               lo_mw: np.ndarray, hi_mw: np.ndarray) -> None:
        """Mark in :attr:`limit_edges` the bounds ``lo_mw`` (< 0) and ``hi_mw`` (> 0) a power
        limit sets (``at_limit``, :meth:`_power_limit_edges`): one that is no whole number of
        levels (a cap between levels, a limit less a reserve the ramp cut to 1 MW, less an
        EV's or PV plant's baseline) would otherwise strand what lies past the last level
        inside it (:meth:`power_mask`)."""
        if at_limit is None:
            return
        lo_side, hi_side = at_limit
        hi_side = hi_side & (hi_mw > _TOL_MW)
        lo_side = (np.zeros(hi_mw.shape[0], dtype=bool) if lo_side is None
                   else lo_side & (lo_mw < -_TOL_MW))
        if not (fast_count_nonzero(hi_side) or fast_count_nonzero(lo_side)):
            return
        if self.limit_edges is not None:
            lo_side |= self.limit_edges[0]
            hi_side |= self.limit_edges[1]
        self.limit_edges = (lo_side, hi_side)

    def execution_bounds(self, fleet: FleetState, duration_h: float
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Physical net-injection bounds ``(lo, hi)`` for the actual state over the current
        step (no departure rule, no window end): the clip of dispatch (:mod:`dispatch`)."""
        return self.net_bounds(fleet, fleet.energy_mwh, fleet.energy_mwh,
                               fleet.solar_available_mw, duration_h, math.inf,
                               fleet.plugged, False)

    def fleet_constants(self, fleet: FleetState) -> FleetConstants:
        """Kind masks, selectors and safe efficiencies of ``fleet`` (:attr:`constants` when it
        is the kernel's own fleet, cached; computed otherwise)."""
        return self._statics_for(fleet).fleet

    # ------------------------------------------------------------------ masks and blocking
    def power_mask(self, lo_mw: np.ndarray, hi_mw: np.ndarray,
                   limit_edges: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """``(n, n_power_levels)`` bool: levels inside ``[lo, hi]``; never an empty row.

        A row with no level inside its interval allows the level nearest to it (the
        executed bid is then clipped into the interval).

        ``limit_edges`` (:attr:`limit_edges` after :meth:`bid_interval`): ``(lo side, hi
        side)`` bool over agents, where that bound is a ramp limit's or a power limit's
        (below). There the mask also allows the first level at or beyond the bound (the one
        past it when no level lies on it), and :meth:`enforce` clips that level's power to
        the bound. The levels are 0.1·rated apart, while a ramp step
        (``ramp_mw_per_s·dt_s``) may be smaller: with only the levels inside, a DER at rest
        whose ramp step is below one level could never move (with 0.2 MW/s, 27 of the 40
        batteries of ``price_spike`` at ``dt_s`` = 1, all at 0.5), and the usable ramp was
        rounded down to whole levels. A bound at 0 allows nothing more (the first level at
        it is level 0). Where a power limit of an agent under a cap below its rating or a
        ramp limit (:attr:`limit_edge_agents`) sets a bound, that bound is such an edge too:
        a battery's discharge and charge limits (its caps, else its rating), an EV's 0 MW
        (its deferrable baseline, capped by its charge cap) and its charge cap, a PV plant's
        0 MW (full curtailment of its forecast or its export cap), each less a reserve. A
        cap between levels, or a limit less a reserve a ramp cut to 1 MW, stranded what lies
        past the last level inside it (``[battery] max_discharge_mw = 2.0``, ``emergency``,
        100 agents, seed 0: 3.47 MW of the fleet's 100.75 MW, so 97.28 MW answered the
        100 MW trip; ``[ev] max_charge_mw = 1.0``: 0.95 MW of deferral and 1.1-1.25 MW of
        extra charging per step, 100 agents, each scenario).
        Bounds the stored energy or an EV's departure set are not passed, nor any bound
        of an agent under neither a cap nor a ramp.
        """
        mask = self._levels_inside(lo_mw, hi_mw)
        if limit_edges is None:
            return mask
        lv_t, tol_t = self._level_power_t, self._level_tol_t
        top = lv_t.shape[0] - 1
        ext_lo, ext_hi = limit_edges
        if fast_count_nonzero(ext_hi):
            rows = np.flatnonzero(ext_hi)
            # the first level >= hi (within tolerance): the count of levels below it
            k = np.count_nonzero(lv_t[:, rows] < hi_mw[rows] - tol_t[:, rows], axis=0)
            mask[rows, np.minimum(k, top)] = True
        if fast_count_nonzero(ext_lo):
            rows = np.flatnonzero(ext_lo)
            # the last level <= lo (within tolerance)
            k = np.count_nonzero(lv_t[:, rows] <= lo_mw[rows] + tol_t[:, rows], axis=0) - 1
            mask[rows, np.maximum(k, 0)] = True
        return mask

    def _levels_inside(self, lo_mw: np.ndarray, hi_mw: np.ndarray) -> np.ndarray:
        """:meth:`power_mask` without ``limit_edges``."""
        lv_t, tol_t = self._level_power_t, self._level_tol_t
        # transposed (levels × agents): lv >= lo − tol and lv <= hi + tol
        bound, inside = self._mask_bound, self._mask_inside
        rows_first = self._mask_rows_first   # lo, hi copied into every row, then plain calls
        if rows_first:
            bound[...] = lo_mw
        np.subtract(bound if rows_first else lo_mw, tol_t, out=bound)
        np.greater_equal(lv_t, bound, out=inside)
        if rows_first:
            bound[...] = hi_mw
        np.add(bound if rows_first else hi_mw, tol_t, out=bound)
        inside &= np.less_equal(lv_t, bound, out=self._mask_below)
        mask = inside.T.copy()
        n = inside.shape[1]
        if fast_count_nonzero(inside[self._probe_level]) == n:
            return mask   # one level inside every interval: no row is empty
        any_level = np.logical_or.reduce(inside, axis=0)
        if fast_count_nonzero(any_level) < n:
            empty = ~any_level
            lv = self.level_power_mw
            dist = np.maximum(lo_mw[empty, None] - lv[empty], lv[empty] - hi_mw[empty, None])
            mask[np.flatnonzero(empty), np.argmin(dist, axis=1)] = True
        return mask

    def enforce(self, level_index: np.ndarray, mask: np.ndarray, lo_mw: np.ndarray,
                hi_mw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Replace masked-out levels by the nearest feasible one.

        :returns: (executed level index, bid power in MW clipped to [lo, hi], blocked flags)
        :raises IndexError: ``level_index`` is not an integer array over the agents or holds
            a level outside ``[0, n_power_levels)`` (a negative level is refused, not
            counted from the end).
        """
        idx = np.asarray(level_index)
        n_levels = self.level_fraction.size
        if idx.dtype.kind not in "iu" or idx.shape != self._rows.shape:
            raise IndexError(f"level_index must be an integer array of shape "
                             f"{self._rows.shape}, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64, copy=False)
        # one unsigned comparison catches both < 0 and >= n_levels (negatives wrap)
        if fast_count_nonzero(idx.view(np.uint64) >= n_levels):
            raise IndexError(f"level indices must be in [0, {n_levels})")
        return self.enforce_in_range(idx, mask, lo_mw, hi_mw)

    def enforce_in_range(self, level_index: np.ndarray, mask: np.ndarray, lo_mw: np.ndarray,
                         hi_mw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`enforce` for int64 level indices the caller has checked are in
        ``[0, n_power_levels)`` (the environment's actions are): no range check. The
        ``(agent, level)`` entries are read from the flattened tables at
        ``agent·n_levels + level`` (one ``take``, the same values as 2-D indexing)."""
        flat = self._row_offsets + level_index
        blocked = mask.reshape(-1).take(flat)
        np.logical_not(blocked, out=blocked)
        if fast_count_nonzero(blocked):
            rows = np.flatnonzero(blocked)
            dist = np.abs(self.level_fraction[None, :] - self.level_fraction[level_index[rows],
                                                                             None])
            dist = np.where(mask[rows], dist, np.inf)
            level_index = level_index.copy()
            level_index[rows] = np.argmin(dist, axis=1)
            flat = self._row_offsets + level_index
        power = self._level_power_flat.take(flat)
        return level_index, fast_clip(power, lo_mw, hi_mw, out=power), blocked


def ramp_interval(p_prev_mw: np.ndarray, ramp_mw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Balancing power reachable from ``p_prev`` under a ramp limit of ``ramp_mw`` per step.

    ``[min(p_prev, 0) − ramp, max(p_prev, 0) + ramp]``: a ramp limit bounds how fast a DER
    moves *away* from its baseline (the ramp-up limits of IEEE 1547-2018 §4.6.2 and
    grid codes); returning to the baseline is always allowed, so stopping — and the
    null dispatch of a rejected contract — never breaks it.
    """
    return np.minimum(p_prev_mw, 0.0) - ramp_mw, np.maximum(p_prev_mw, 0.0) + ramp_mw


@dataclass(frozen=True, eq=False)
class _Statics:
    """Per-episode constants of one fleet under one set of limit arrays."""

    fleet: FleetConstants
    floor_mwh: np.ndarray             # soc_min · E_cap
    ceil_mwh: np.ndarray              # soc_max · E_cap
    departure_energy_mwh: np.ndarray  # departure_soc · E_cap
    charge_rate_mw: np.ndarray        # C · η_c (stored-energy rate at full charge)
    neg_ev_rate_mw: np.ndarray        # −(EV baseline charging rate)

    charge_discharge_mw: np.ndarray   # (2, n): rows C (charge cap) and P (discharge cap)
    zero2: np.ndarray                 # (2, n) zeros (full shape: no broadcasting)
    eta_charge2: np.ndarray           # (2, n) η_c in both rows
    eta_discharge_safe2: np.ndarray   # (2, n) safe η_d in both rows
    neg_zero: np.ndarray              # −0.0 everywhere
    base_now_template: np.ndarray     # −(EV baseline rate) for EVs, −0.0 elsewhere
    base_next_template: np.ndarray    # −(EV baseline rate) for EVs, +0.0 elsewhere
    ev_zero: np.ndarray               # zeros over the EVs
    ev_departure_energy_mwh: np.ndarray   # departure_energy_mwh over the EVs
    ev_charge_rate_mw: np.ndarray         # charge_rate_mw over the EVs
    # over the EVs, those whose charge rate is 0 (None: none): their departure requirement
    # is not lowered by charging, also when they never leave (departure inf: 0·inf is NaN)
    ev_no_charge: np.ndarray | None
    solar_max_discharge_mw: np.ndarray    # discharge caps over the solar agents
    durations: dict                   # duration_h -> (divisors (2, n), η_c·h over the EVs)

    @classmethod
    def of(cls, fleet: FleetState, a: LimitArrays) -> _Statics:
        cap = fleet.energy_capacity_mwh
        c = fleet_constants(fleet)
        neg_rate = -fleet.ev_baseline_rate_mw
        charge_rate = a.max_charge_mw * fleet.eta_charge
        departure_energy = a.departure_soc * cap
        ev = c.ev
        return cls(fleet=c, floor_mwh=a.soc_min * cap,
                   ceil_mwh=a.soc_max * cap, departure_energy_mwh=departure_energy,
                   charge_rate_mw=charge_rate, neg_ev_rate_mw=neg_rate,
                   charge_discharge_mw=np.stack([a.max_charge_mw, a.max_discharge_mw]),
                   zero2=np.zeros((2, fleet.n_agents)),
                   eta_charge2=np.stack([fleet.eta_charge] * 2),
                   eta_discharge_safe2=np.stack([c.eta_discharge_safe] * 2),
                   neg_zero=np.full(fleet.n_agents, -0.0),
                   base_now_template=np.where(c.is_ev, neg_rate, -0.0),
                   base_next_template=np.where(c.is_ev, neg_rate, 0.0),
                   ev_zero=np.zeros(fast_count_nonzero(c.is_ev)),
                   ev_departure_energy_mwh=departure_energy[ev],
                   ev_charge_rate_mw=charge_rate[ev],
                   ev_no_charge=(charge_rate[ev] == 0.0
                                 if fast_count_nonzero(charge_rate[ev] == 0.0) else None),
                   solar_max_discharge_mw=a.max_discharge_mw[c.solar],
                   durations={})

    def per_duration(self, fleet: FleetState, duration_h: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``((2, n) rows [η_c·h, h], η_c·h over the EVs, (2, n) h)`` for a window of
        ``duration_h`` (cached per duration: η_c is a static field, like the others used
        here)."""
        got = self.durations.get(duration_h)
        if got is None:
            if len(self.durations) >= 8:    # a few durations per episode; stay bounded
                self.durations.clear()
            charge_h = fleet.eta_charge * duration_h
            h = np.full((2, charge_h.shape[0]), duration_h)
            div = np.stack([charge_h, h[0]])
            got = self.durations[duration_h] = (div, charge_h[self.fleet.ev], h)
        return got


@dataclass(frozen=True)
class ViolationReport:
    """What :func:`check_executed` found, per agent (bool arrays) and in total."""

    power: np.ndarray
    soc: np.ndarray
    unplugged: np.ndarray
    ramp: np.ndarray
    energy: np.ndarray | None = None   # with the executed power given: energy_mismatch

    @property
    def any(self) -> np.ndarray:
        flags = self.power | self.soc | self.unplugged | self.ramp
        return flags if self.energy is None else flags | self.energy

    @property
    def count(self) -> int:
        return int(self.any.sum())


class ExecutionChecker:
    """:func:`check_executed` with its per-episode thresholds computed once.

    The thresholds depend only on the kinds, capacities and limits, so the environment
    builds one checker per episode and calls :meth:`check` after every step; the
    arithmetic is exactly that of :func:`check_executed`.

    :param kinds: (n,) DER kinds.
    :param capacity_mwh: (n,) storage capacities.
    :param arrays: the compiled limits.
    :param dt_s: agent step, s.
    :param tol_mw: power tolerance, MW.
    :param tol_mwh: energy tolerance, MWh.
    :param eta_charge: (n,) charge efficiencies; with ``eta_discharge``, the stored energy
        is also checked against the executed power (:func:`energy_mismatch`) when
        :meth:`check` and :meth:`count` are given the step's baseline.
    :param eta_discharge: (n,) discharge efficiencies (0 where there is none: solar).
    """

    def __init__(self, kinds: np.ndarray, capacity_mwh: np.ndarray, arrays: LimitArrays,
                 dt_s: float, tol_mw: float = 1e-7, tol_mwh: float = 1e-9,
                 eta_charge: np.ndarray | None = None,
                 eta_discharge: np.ndarray | None = None) -> None:
        self.tol_mw, self.tol_mwh = tol_mw, tol_mwh
        self.step_h = dt_s / 3600.0
        self.eta_charge = None if eta_charge is None else np.array(eta_charge, dtype=float)
        self.eta_discharge = None if eta_discharge is None else np.where(
            np.asarray(eta_discharge) > 0, eta_discharge, 1.0)
        self._energy_factors = None if self.eta_charge is None or self.eta_discharge is None \
            else (self.eta_charge * self.step_h, self.step_h / self.eta_discharge)
        self.is_solar = kinds == KIND_SOLAR
        self.is_ev = kinds == KIND_EV
        self.not_solar = kinds != KIND_SOLAR
        self.discharge_hi_mw = arrays.max_discharge_mw + tol_mw
        self.charge_lo_mw = -arrays.max_charge_mw - tol_mw
        self.floor_lo_mwh = arrays.soc_min * capacity_mwh - tol_mwh
        self.ceil_hi_mwh = arrays.soc_max * capacity_mwh + tol_mwh
        self.step_mw = arrays.ramp_mw_per_s * dt_s
        self.ramp_mw_per_s = arrays.ramp_mw_per_s
        # with no finite ramp limit the ramp test is False for every value (x > inf)
        self.has_ramp = bool(np.isfinite(self.step_mw).any())
        # fused thresholds: "x > a or x > b" is "x > fmin(a, b)" and "x < a or x < b" is
        # "x < fmax(a, b)" (fmin/fmax ignore a NaN bound, as the "or" does); "x < a and
        # x < b" is "x < minimum(a, b)" (a NaN bound fails both). Solar's SoC bounds are
        # ±inf, so its SoC test is False (as "& not_solar" made it).
        n = kinds.shape[0]
        self._solar = kind_selector(kinds, KIND_SOLAR)
        self._solar_discharge_hi_mw = self.discharge_hi_mw[self._solar]
        self._net_hi_mw = np.where(self.is_ev, np.fmin(self.discharge_hi_mw, tol_mw),
                                   self.discharge_hi_mw)
        self._net_lo_mw = np.where(self.is_solar, np.fmax(self.charge_lo_mw, -tol_mw),
                                   self.charge_lo_mw)
        self._floor_mwh = np.where(self.not_solar, self.floor_lo_mwh, -np.inf)
        self._ceil_mwh = np.where(self.not_solar, self.ceil_hi_mwh, np.inf)
        self._not_ev = ~self.is_ev
        self._tol_mw_arr = np.full(n, tol_mw)
        self._tol_mwh_arr = np.full(n, tol_mwh)

    def check(self, *, net_min_mw: np.ndarray, net_max_mw: np.ndarray, p_now_mw: np.ndarray,
              p_prev_mw: np.ndarray, energy_before_mwh: np.ndarray,
              energy_after_mwh: np.ndarray, solar_available_mw: np.ndarray,
              plugged: np.ndarray, departure_s: np.ndarray | None = None,
              step_end_s: float = math.inf, baseline_mw: np.ndarray | None = None,
              p_sub_mw: np.ndarray | None = None, split_levels: tuple | None = None,
              physics_dt_s: float = 0.0) -> ViolationReport:
        """Check one step (see :func:`check_executed` for the arguments; with
        ``baseline_mw``, and the efficiencies given to the constructor, the stored energy
        too: :meth:`energy_flags`)."""
        power, soc, unplugged, ramp = self._flags(
            net_min_mw, net_max_mw, p_now_mw, p_prev_mw, energy_before_mwh, energy_after_mwh,
            solar_available_mw, _plugged_all_step(plugged, departure_s, step_end_s))
        if unplugged is None:
            unplugged = np.zeros(p_now_mw.shape, dtype=bool)
        if ramp is None:
            ramp = np.zeros(p_now_mw.shape, dtype=bool)
        energy = self.energy_flags(baseline_mw, p_now_mw, p_sub_mw, split_levels,
                                   physics_dt_s, energy_before_mwh, energy_after_mwh)
        return ViolationReport(power=power, soc=soc, unplugged=unplugged, ramp=ramp,
                               energy=energy)

    def energy_flags(self, baseline_mw: np.ndarray | None, p_now_mw: np.ndarray,
                     p_sub_mw: np.ndarray | None, split_levels: tuple | None,
                     physics_dt_s: float, energy_before_mwh: np.ndarray,
                     energy_after_mwh: np.ndarray) -> np.ndarray | None:
        """Per agent: :func:`energy_mismatch` of the step (None without ``baseline_mw`` or
        without the efficiencies: not checked)."""
        if baseline_mw is None or self.eta_charge is None or self.eta_discharge is None:
            return None
        if p_sub_mw is None:   # the usual step: one power level throughout
            charge_h, discharge_h = self._energy_factors
            stored = _stored_mwh(baseline_mw + p_now_mw, charge_h, discharge_h)
            return _beyond_rounding(stored, np.abs(stored), 1, energy_before_mwh,
                                    energy_after_mwh, self.not_solar)
        return energy_mismatch(
            baseline_mw, p_now_mw, energy_before_mwh, energy_after_mwh, self.eta_charge,
            self.eta_discharge, self.step_h, self.not_solar, p_sub_mw=p_sub_mw,
            split_levels=split_levels, substep_h=physics_dt_s / 3600.0)

    def count(self, *, net_min_mw: np.ndarray, net_max_mw: np.ndarray, p_now_mw: np.ndarray,
              p_prev_mw: np.ndarray, energy_before_mwh: np.ndarray,
              energy_after_mwh: np.ndarray, solar_available_mw: np.ndarray,
              plugged: np.ndarray, p_path_mw: np.ndarray | None = None,
              p_start_mw: np.ndarray | None = None, physics_dt_s: float = 0.0,
              departure_s: np.ndarray | None = None, step_end_s: float = math.inf,
              baseline_mw: np.ndarray | None = None, p_sub_mw: np.ndarray | None = None,
              split_levels: tuple | None = None) -> int:
        """``check(...).count``: the number of agents with a violation (no report built).

        With ``p_path_mw`` (``(n, n_substeps)`` executed power, under a finite ramp limit)
        the ramp test is :func:`ramp_path_broken` of it from ``p_start_mw`` (the previous
        step's last sub-step) at ``ramp·physics_dt_s`` per sub-step, not the step means'.
        With ``baseline_mw`` the stored energy is checked against the executed power
        (:meth:`energy_flags`; ``p_sub_mw`` and ``split_levels`` as in
        :func:`energy_mismatch`)."""
        power, soc, unplugged, ramp = self._flags(
            net_min_mw, net_max_mw, p_now_mw, p_prev_mw, energy_before_mwh, energy_after_mwh,
            solar_available_mw, _plugged_all_step(plugged, departure_s, step_end_s))
        if p_path_mw is not None:
            ramp = ramp_path_broken(p_path_mw, p_start_mw,
                                    self.ramp_mw_per_s * physics_dt_s, self.tol_mw)
        energy = self.energy_flags(baseline_mw, p_now_mw, p_sub_mw, split_levels,
                                   physics_dt_s, energy_before_mwh, energy_after_mwh)
        if energy is not None:
            power |= energy
        power |= soc
        if unplugged is not None:
            power |= unplugged
        if ramp is not None:
            power |= ramp
        return int(fast_count_nonzero(power))

    def _flags(self, net_min_mw: np.ndarray, net_max_mw: np.ndarray, p_now_mw: np.ndarray,
               p_prev_mw: np.ndarray, energy_before_mwh: np.ndarray,
               energy_after_mwh: np.ndarray, solar_available_mw: np.ndarray,
               plugged: np.ndarray) -> tuple:
        """Per-agent ``(power, soc, unplugged, ramp)`` violation flags (fresh bool arrays;
        ``unplugged`` is None when every agent is plugged in and ``ramp`` None without a
        finite ramp limit: no agent can break them)."""
        tol_mw = self._tol_mw_arr
        # power: above the discharge cap (solar: its available output; EV: tol, no V2G),
        # below the charge cap (solar: −tol)
        net_hi = self._net_hi_mw.copy()
        solar = self._solar
        if isinstance(solar, slice):   # net_hi[solar] is a view: written in place
            x = np.add(solar_available_mw[solar], tol_mw[solar], out=net_hi[solar])
            np.fmin(self._solar_discharge_hi_mw, x, out=x)
        else:
            net_hi[solar] = np.fmin(self._solar_discharge_hi_mw, solar_available_mw[solar]
                                    + tol_mw[solar])
        power = net_max_mw > net_hi
        power |= net_min_mw < self._net_lo_mw
        # soc: outside its band and moved further out
        bound = energy_before_mwh - self._tol_mwh_arr
        soc = energy_after_mwh < np.minimum(self._floor_mwh, bound, out=bound)
        bound = energy_before_mwh + self._tol_mwh_arr
        soc |= energy_after_mwh > np.maximum(self._ceil_mwh, bound, out=bound)
        # unplugged: an unplugged EV that moved (fmax: a NaN side does not hide the other)
        if fast_count_nonzero(plugged) == plugged.shape[0]:
            unplugged = None
        else:
            if net_min_mw is net_max_mw:
                moved = np.abs(net_max_mw) > tol_mw
            else:
                moved = np.fmax(np.abs(net_min_mw), np.abs(net_max_mw)) > tol_mw
            unplugged = moved > (plugged | self._not_ev)   # moved & is_ev & ~plugged
        if self.has_ramp:
            step_mw, tol_mw = self.step_mw, self.tol_mw
            ramp = (p_now_mw > np.maximum(p_prev_mw, 0.0) + step_mw + tol_mw) | (
                p_now_mw < np.minimum(p_prev_mw, 0.0) - step_mw - tol_mw)
        else:
            ramp = None
        return power, soc, unplugged, ramp


def _plugged_all_step(plugged: np.ndarray, departure_s: np.ndarray | None,
                      step_end_s: float) -> np.ndarray:
    """``plugged``, less the agents whose departure time falls before the step's end
    (``departure_s < step_end_s``; non-EVs have ``inf``): an EV is plugged in over the
    whole step only if it was at its start and leaves at its end or later. Read from the
    departure times themselves, not from the step-granular ``plugged`` flag the executor
    follows, so an EV that moves after leaving inside a step is counted."""
    if departure_s is None:
        return plugged
    return plugged & (departure_s >= step_end_s)


def ramp_path_broken(p_path_mw: np.ndarray, p_start_mw: np.ndarray, sub_ramp_mw: np.ndarray,
                     tol_mw: float = 1e-7) -> np.ndarray:
    """Per agent: did its executed power path ``(n, n_substeps)`` move away from the
    baseline faster than ``sub_ramp_mw`` per sub-step, from ``p_start_mw`` (the power of
    the sub-step before the first)? :func:`ramp_interval` applied to every sub-step::

        x(s) > max(x(s−1), 0) + r·physics_dt + tol  or  x(s) < min(x(s−1), 0) − r·physics_dt − tol
    """
    prev = np.concatenate((p_start_mw[:, None], p_path_mw[:, :-1]), axis=1)
    r = sub_ramp_mw[:, None]
    return ((p_path_mw > np.maximum(prev, 0.0) + r + tol_mw)
            | (p_path_mw < np.minimum(prev, 0.0) - r - tol_mw)).any(axis=1)


#: float64's machine epsilon (2^-52): the energy check's tolerance is a multiple of it
_EPS = float(np.finfo(float).eps)
#: float64's smallest normal number (2^-1022): below it a rounding is off by up to 2^-1075
#: absolute (subnormals), not ε/2 relative, so the energy check's tolerance has a floor of
#: a few of those per term (:func:`energy_mismatch`)
_TINY = float(np.finfo(float).tiny)
#: 8·tiny and 2·eps, as :func:`~gridswarm_env.fleet.scalar_array` operands
_TOL_FLOOR, _TWO_EPS = scalar_array(8.0 * _TINY), scalar_array(2.0 * _EPS)


def _stored_mwh(net_mw: np.ndarray, charge_h: np.ndarray | float,
                discharge_h: np.ndarray | float) -> np.ndarray:
    """Energy leaving the store (+) or entering it (−), MWh, for a constant net injection
    ``net_mw`` (+ into the grid): ``net·h/η_d`` discharging, ``net·η_c·h`` charging
    (``discharge_h`` = h/η_d, ``charge_h`` = η_c·h)."""
    return net_mw * np.where(net_mw > ZERO, discharge_h, charge_h)


#: elements of the energy check's (n, n_substeps) work done at once (256 kB of rows): a
#: temporary of the whole array is fresh memory every step at 10 000 agents (page
#: faults: 2.1 ms a step at 20 sub-steps, against 0.4 ms in blocks the allocator reuses)
_NET_BLOCK_ELEMENTS = 1 << 15


def _net_sums(baseline_mw: np.ndarray, p_sub_mw: np.ndarray,
              skip: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per agent, ``(Σ_s max(net_s, 0), Σ_s min(net_s, 0))`` of ``net_s = b + p_s`` over the
    columns of ``p_sub_mw``, the ``(agents, sub-steps)`` entries of ``skip`` left out (or
    None); in blocks of rows (:data:`_NET_BLOCK_ELEMENTS`)."""
    n, n_sub = p_sub_mw.shape
    rows = max(1, _NET_BLOCK_ELEMENTS // n_sub)
    discharge, charge = np.empty(n), np.empty(n)
    for i in range(0, n, rows):
        net = baseline_mw[i:i + rows, None] + p_sub_mw[i:i + rows]
        if skip is not None:
            agents, subs = skip
            inside = (agents >= i) & (agents < i + rows)
            net[agents[inside] - i, subs[inside]] = 0.0
        pos = np.maximum(net, 0.0)
        np.einsum("ij->i", pos, out=discharge[i:i + rows])
        np.subtract(net, pos, out=net)   # min(net, 0), exactly
        np.einsum("ij->i", net, out=charge[i:i + rows])
    return discharge, charge


def _beyond_rounding(stored_mwh: np.ndarray, magnitude_mwh: np.ndarray, n_terms: int,
                     energy_before_mwh: np.ndarray, energy_after_mwh: np.ndarray,
                     is_store: np.ndarray) -> np.ndarray:
    """Stores whose ``|E' − E + stored|`` exceeds :func:`energy_mismatch`'s tolerance (or is
    NaN)."""
    mismatch = energy_after_mwh - energy_before_mwh
    mismatch += stored_mwh
    np.abs(mismatch, out=mismatch)
    tol = magnitude_mwh + _TOL_FLOOR   # the floor: 32 subnormal half-units a term
    tol *= n_terms + 8.0
    tol += np.abs(energy_before_mwh)
    tol += np.abs(energy_after_mwh)
    tol *= _TWO_EPS
    return is_store > (mismatch <= tol)   # is_store & ~(mismatch <= tol): NaN is flagged


def energy_mismatch(baseline_mw: np.ndarray, p_mw: np.ndarray, energy_before_mwh: np.ndarray,
                    energy_after_mwh: np.ndarray, eta_charge: np.ndarray,
                    eta_discharge: np.ndarray, step_h: float, is_store: np.ndarray, *,
                    p_sub_mw: np.ndarray | None = None, split_levels: tuple | None = None,
                    substep_h: float = 0.0) -> np.ndarray:
    """Per agent: does the change of its stored energy differ from what its executed power
    implies? Recomputed from the power, not read from the dispatcher's booking::

        E' − E = Σ_s h_s·(η_c·max(−net_s, 0) − max(net_s, 0)/η_d),   net_s = b + p_s

    with ``b`` the baseline the DER followed and ``p_s`` the balancing power of each
    stretch of the step at a constant level: ``p_mw`` over the whole step (``h_s =
    step_h``) or, when the power varied inside it, each sub-step of ``p_sub_mw`` (``(n,
    n_substeps)``, the dispatcher's power per sub-step; ``h_s = substep_h``), an activation
    sub-step of ``split_levels`` ``(agents, sub-steps, p0, p1, a)`` as ``p0`` for ``1 − a``
    of it then ``p1`` (whose mean must be that sub-step's power, else it is flagged too).
    ``eta_discharge`` must be positive (1 where there is none). Only stores (``is_store``:
    batteries and EVs) are checked; a NaN mismatch is flagged.

    The tolerance is the float rounding of the two sums, not a physical margin::

        |E' − E − expected| > 2·ε·((S + 8)·(Σ_s |h_s·stored_s| + 8·τ) + |E| + |E'|)

    ``ε`` float64's epsilon, ``S`` the number of terms summed (1 or ``n_substeps``): the
    dispatcher books each term as a product of three rounded factors (``net/η_d·h``) and
    sums them, this sums each agent's discharging and charging ``net`` and multiplies each
    sum by its factor (``(h/η_d)·Σ net``); a sum of ``S`` terms is off by at most
    ``(S − 1)·ε/2`` of their magnitudes (the two-level correction a few more), and booking
    ``E' = E + ΔE`` and reading back ``E' − E`` round at ``|E'|``. ``τ`` is float64's
    smallest normal number: below it (subnormal energies, from MW or durations allowed down
    to any positive float) a rounding is off by up to 2⁻¹⁰⁷⁵ absolute rather than ε/2
    relative, so ``8·τ`` a term (2·ε·8·τ = 32 such half-units) is the floor: 2·10⁻³²¹ MWh
    at ``S`` = 20, far below any real store's flows. A bookkeeping error of
    a percent (an efficiency left out, a level ignored) is ~10¹¹ times larger at ``S`` =
    20; the largest mismatch seen in the sweeps is 0.12 of the tolerance.
    """
    if p_sub_mw is None:
        stored = _stored_mwh(baseline_mw + p_mw, eta_charge * step_h, step_h / eta_discharge)
        return _beyond_rounding(stored, np.abs(stored), 1, energy_before_mwh,
                                energy_after_mwh, is_store)
    charge_h, discharge_h = eta_charge * substep_h, substep_h / eta_discharge
    # the activation sub-steps of split_levels are added at their two levels below
    discharge, charge = _net_sums(baseline_mw, p_sub_mw,
                                  None if split_levels is None else split_levels[:2])
    discharge *= discharge_h
    charge *= charge_h
    stored = discharge + charge
    magnitude = discharge - charge
    if split_levels is not None:
        agents, subs, p0, p1, after = split_levels
        b, c_h, d_h = baseline_mw[agents], charge_h[agents], discharge_h[agents]
        t0, t1 = _stored_mwh(b + p0, c_h, d_h), _stored_mwh(b + p1, c_h, d_h)
        both = (1.0 - after) * t0 + after * t1
        np.add.at(stored, agents, both)
        # the levels may cancel: both their magnitudes count
        np.add.at(magnitude, agents, np.abs(both) + np.abs(t0) + np.abs(t1))
    bad = _beyond_rounding(stored, magnitude, p_sub_mw.shape[1], energy_before_mwh,
                           energy_after_mwh, is_store)
    if split_levels is None:
        return bad
    # the levels must average to the sub-step's power (p_sub_mw's)
    seen = p_sub_mw[agents, subs]
    off = ~(np.abs((1.0 - after) * p0 + after * p1 - seen)
            <= 8.0 * _EPS * (np.abs(p0) + np.abs(p1) + np.abs(seen) + 2.0 * _TINY))
    if fast_count_nonzero(off):
        bad[agents[off]] |= is_store[agents[off]]
    return bad


def check_executed(*, kinds: np.ndarray, net_min_mw: np.ndarray, net_max_mw: np.ndarray,
                   p_now_mw: np.ndarray, p_prev_mw: np.ndarray, energy_before_mwh: np.ndarray,
                   energy_after_mwh: np.ndarray, capacity_mwh: np.ndarray,
                   solar_available_mw: np.ndarray, plugged: np.ndarray,
                   arrays: LimitArrays, dt_s: float, tol_mw: float = 1e-7,
                   tol_mwh: float = 1e-9, departure_s: np.ndarray | None = None,
                   step_end_s: float = math.inf) -> ViolationReport:
    """Independent post-step check of what was *executed* against the declared limits.

    Uses only executed net power (its min and max over the step's sub-steps), the
    stored energy before and after, and the limits — none of the kernel's interval
    arithmetic. A SoC outside its band counts only when the step moved it further out::

        power:     net_max > P_dis + tol  or  net_min < −P_ch − tol;  solar: net_min < −tol
                   or net_max > available + tol;  EV: net_max > tol (no V2G)
        soc:       E' < s_min·E_cap − tol and E' < E − tol,  or  E' > s_max·E_cap + tol
                   and E' > E + tol (not solar)
        unplugged: an EV not plugged in over the whole step (``plugged`` false at its
                   start, or with ``departure_s``: a departure before ``step_end_s``)
                   with |net| > tol
        ramp:      p > max(p_prev, 0) + ramp·dt + tol  or  p < min(p_prev, 0) − ramp·dt − tol

    The environment's :class:`ExecutionChecker` (given the efficiencies, and each step's
    baseline) adds the *energy* kind: :func:`energy_mismatch`.
    """
    return ExecutionChecker(kinds, capacity_mwh, arrays, dt_s, tol_mw, tol_mwh).check(
        net_min_mw=net_min_mw, net_max_mw=net_max_mw, p_now_mw=p_now_mw, p_prev_mw=p_prev_mw,
        energy_before_mwh=energy_before_mwh, energy_after_mwh=energy_after_mwh,
        solar_available_mw=solar_available_mw, plugged=plugged, departure_s=departure_s,
        step_end_s=step_end_s)
