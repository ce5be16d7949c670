"""Frozen, validated configuration for every part of gridswarm.

Every setting lives in a frozen dataclass whose ``__post_init__`` checks it and
raises :class:`ValueError` naming the field, the bad value and what is allowed,
then stores the value normalized: integer fields as ``int`` (numpy integers accepted;
floats, even ``21.0``, and bools refused), real-number fields as ``float`` (numpy
scalars accepted; strings, ``None``, bools, ``Decimal`` and ``Fraction`` refused, NaN and
±inf too unless the field documents ``inf``).
Physics parameters (:class:`~gridswarm_env.grid.GridParams`), bus settings
(:class:`~gridswarm_env.bus.BusConfig`) and discharge limits
(:class:`~gridswarm_env.kernel.Limits`) live beside the code that uses them;
this module holds the fleet, market, cost, reward and environment settings and
the small ``check_*`` helpers every config uses.

Sign convention (everywhere): positive power = more injection into the grid.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from gridswarm_env.trust.identities import TRUST_MODES

#: the largest fleet and agent step an EnvConfig accepts (beyond them memory, not
#: correctness, is the limit: a clear error instead of an allocation that never ends)
MAX_AGENTS = 1_000_000
#: why :data:`MAX_AGENTS` (appended to the messages that state the bound)
AGENT_LIMIT_WHY = " (~10 kB of state each; 10 000 is the benchmarked scale)"
MAX_DT_S = 3600.0
#: default RoCoF measurement window, s (``EnvConfig.rocof_window_s``: why 500 ms there)
ROCOF_WINDOW_S = 0.5
#: "a whole multiple of the physics sub-step": ``|value/step − round(value/step)|`` at
#: most this (absorbs the binary representation of e.g. 0.1 / 0.05; nothing is rounded)
WHOLE_MULTIPLE_TOL = 1e-9
MAX_SUBSTEPS = 2400   # physics sub-steps per agent step (GridModel's tables are O(n^2))
MAX_LEVELS = 1001     # power or price levels of the action space
MAX_EPISODE_STEPS = 1_000_000   # reset precomputes the episode's profiles per sub-step
#: the most ``crypto_threads`` an EnvConfig accepts (catches typos such as 1000). A
#: config may move between machines, so it is not bounded by this machine's cores: the
#: environment runs at most as many threads as the process has usable cores (a shared
#: pool of cores - 1 workers plus the calling thread), whatever the setting.
MAX_CRYPTO_THREADS = 256
#: where contract keys come from: derived from the reset seed, or drawn from os.urandom
CONTRACT_KEY_SOURCES = ("seeded", "random")
#: how bids tied at the marginal price share the rest of the request
#: (:func:`gridswarm_env.market.clear_market`)
TIE_BREAKS = ("index", "pro_rata")
DER_KINDS = ("solar", "battery", "ev")
#: the lowest efficiency a FleetConfig takes: real converters and cells keep well over
#: half; 1 % still allows studies of extreme losses, while a denormal one (5e-324) made
#: 1/eta overflow to inf and the episode crash
MIN_EFFICIENCY = 0.01
#: the smallest fleet rating (MW) and energy-to-power ratio (h) a FleetConfig takes,
#: besides a rating of 0 (no such DERs): 1 W and 3.6 ms. Far below any real DER, while
#: the per-agent energies stay normal float64 numbers (a 1e-310 MW fleet went subnormal:
#: its stored energy lost its relative precision, then turned NaN)
MIN_FLEET_POWER_MW = 1e-6
MIN_DURATION_H = 1e-6
#: Upper bounds of physical magnitudes. Finite values beyond them are refused because a
#: product or sum of them (power x duration, price x energy, reward scale x $) would
#: overflow to inf or NaN within an episode; each bound is far above any real system:
#: a power in MW (fleet ratings, loads, reserve): 10 TW, more than all the generating
#: capacity installed in the world
MAX_POWER_MW = 1e7
MAX_POWER_WHY = "10 TW, more than all the generating capacity installed in the world"
#: an energy-to-power ratio in hours (battery or EV pack / charger): about 14 months, longer
#: than any storage's, seasonal storage included (Li-ion 1-8 h, an EV pack on a 1.4 kW
#: outlet ~150 h)
MAX_DURATION_H = 1e4
MAX_DURATION_WHY = "about 14 months, longer than any storage's energy-to-power ratio"
#: a time or time span in s (EV departure times, a scenario's event times,
#: delays and ramps): the same 1e4 h; beyond it a product with a power (an EV charger's MW
#: x the hours to its departure) or a quotient by a physics sub-step overflowed to inf
MAX_TIME_S = MAX_DURATION_H * 3600.0
MAX_TIME_WHY = "1e4 h, about 14 months; the shipped episodes last minutes"
#: a price, cost or penalty in $/MWh (and the reward's grid weight in $): $10 000 per kWh,
#: about 1 100 x ERCOT's former 9 000 $/MWh offer cap (CostConfig.voll_per_mwh's source)
MAX_PRICE_PER_MWH = 1e7
MAX_PRICE_WHY = "$10 000 per kWh, about 1 100 x ERCOT's former 9 000 $/MWh offer cap"
#: RewardConfig.scale, reward units per $: the default 100 gives rewards of order 0.1-10 per
#: step; 10 000 x more is past any useful normalisation
MAX_REWARD_SCALE = 1e6
#: the grid's nominal frequency, Hz: the environment's KPIs and rewards are defined on a
#: 60 Hz grid (``metrics.NOMINAL_HZ`` is this one, defined here as BAND_HZ below)
NOMINAL_HZ = 60.0
#: the NERC frequency band, ±0.05 Hz around 60 Hz (59.95-60.05 Hz): the KPIs' band
#: (``metrics.BAND_HZ`` is this one: metrics imports config, so it is defined here) and
#: the default of RewardConfig.band_hz, the grid term's unit of deviation
BAND_HZ = 0.05
#: RewardConfig.band_hz: 1 µHz, a thousand times finer than grid frequency is measured
#: (PMUs resolve about 1 mHz); the grid term divides by it
MIN_BAND_HZ = 1e-6


# --------------------------------------------------------------------------- checks
#: what a real-number field accepts (numpy scalars included; ``bool`` is excluded below)
REAL_TYPES = (int, float, np.integer, np.floating)
#: :data:`REAL_TYPES` in words, for the messages refusing another type
REAL_TYPES_TEXT = "an int or float, numpy's too"
#: what an integer field accepts (``bool`` is excluded below; floats, even 3.0, are not)
INT_TYPES = (int, np.integer)


def is_int(value: Any) -> bool:
    """True for a Python or numpy integer, not a bool (Python's or numpy's) or a float."""
    return isinstance(value, INT_TYPES) and not isinstance(value, bool | np.bool_)


def is_real(value: Any) -> bool:
    """True for an int or float (numpy scalars too), not a bool, str or None."""
    return isinstance(value, REAL_TYPES) and not isinstance(value, bool | np.bool_)


def wrong_type_text(value: Any) -> str:
    """What a message says of a value that is no int or float: ``"got Decimal; pass
    float(value) (it is stored as a float)"`` (the hint for ``Decimal`` and ``Fraction``,
    numbers whose exact value a float field would round), ``"got str"`` otherwise."""
    exact = isinstance(value, Decimal | Fraction)
    return (f"got {type(value).__name__}"
            + ("; pass float(value) (it is stored as a float)" if exact else ""))


def check_real(owner: str, name: str, value: Any, *, allow_inf: bool = False) -> float:
    """Return ``value`` as float or raise ``ValueError`` unless it is a real number.

    NaN is always rejected; ``inf`` and ``-inf`` unless ``allow_inf``. Strings, ``None`` and
    bools are rejected even when ``float()`` would convert them, and so are ``Decimal``
    and ``Fraction``: a field is stored as a float, so their exact value would be rounded
    silently; the message says to pass ``float(value)``.
    """
    expected = "a number (inf allowed)" if allow_inf else "a finite number"
    if not is_real(value):
        raise ValueError(f"{owner}.{name} = {value!r}: expected {expected} ({REAL_TYPES_TEXT}), "
                         + wrong_type_text(value))
    as_float = float(value)
    if math.isnan(as_float) or (not allow_inf and math.isinf(as_float)):
        raise ValueError(f"{owner}.{name} = {value!r}: expected {expected}")
    return as_float


def check_finite(owner: str, name: str, value: Any) -> float:
    """Return ``value`` as float or raise ``ValueError`` if it is not a finite number."""
    return check_real(owner, name, value)


def check_positive(owner: str, name: str, value: Any) -> float:
    """Return ``value`` as float; raise ``ValueError`` unless it is a finite number > 0."""
    v = check_finite(owner, name, value)
    if v <= 0.0:
        raise ValueError(f"{owner}.{name} = {value!r}: must be > 0")
    return v


def check_non_negative(owner: str, name: str, value: Any) -> float:
    """Return ``value`` as float; raise ``ValueError`` unless it is a finite number >= 0.

    ``-0.0`` passes ``>= 0`` and is returned as ``0.0``: numpy's samplers refuse a
    negative-zero scale (``rng.normal(0, -0.0)``: "scale < 0").
    """
    v = check_finite(owner, name, value)
    if v < 0.0:
        raise ValueError(f"{owner}.{name} = {value!r}: must be >= 0")
    return v + 0.0   # -0.0 -> 0.0, every other value unchanged


def check_range(owner: str, name: str, value: Any, lo: float, hi: float, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """Return ``value`` as float (``-0.0`` as ``0.0``); raise ``ValueError`` unless it lies
    in lo..hi (open ends as asked)."""
    v = check_finite(owner, name, value)
    bad_lo = v <= lo if lo_open else v < lo
    bad_hi = v >= hi if hi_open else v > hi
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ValueError(f"{owner}.{name} = {value!r}: must lie in {left}{lo}, {hi}{right}")
    return v + 0.0   # -0.0 -> 0.0 (see check_non_negative), every other value unchanged


def check_int_at_least(owner: str, name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as a Python int; raise ``ValueError`` unless it is an integer >= ``minimum``.

    Python and numpy integers are accepted; bools and floats (even ``3.0``) are not, so a
    count never silently comes from a float.
    """
    if not is_int(value):
        raise ValueError(f"{owner}.{name} = {value!r}: expected an integer >= {minimum}, "
                         f"got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{owner}.{name} = {value!r}: must be an integer >= {minimum}")
    return int(value)


def check_bool(label: str, value: Any, sep: str = " = ") -> bool:
    """Return ``value``; raise ``ValueError`` unless it is ``True`` or ``False`` (not 1, not
    ``"yes"``): ``"<label><sep><value!r>: expected True or False"`` (``label`` names the
    field, e.g. ``"EnvConfig.shadow"``, or the command-line flag with ``sep=" "``)."""
    if not isinstance(value, bool):
        raise ValueError(f"{label}{sep}{value!r}: expected True or False")
    return value


def check_choice(owner: str, name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{owner}.{name} = {value!r}: allowed values are {', '.join(allowed)}")
    return value


def check_at_most(owner: str, name: str, value: float, bound: float, unit: str, why: str,
                  *, signed: bool = False) -> None:
    """Raise ``ValueError`` unless ``value <= bound`` (``|value| <= bound`` when ``signed``):
    ``"<owner>.<name> = <value>: at most <bound> <unit> (<why>)"``."""
    if (abs(value) if signed else value) > bound:
        allowed = f"from {-bound:g} to {bound:g}" if signed else f"at most {bound:g}"
        raise ValueError(f"{owner}.{name} = {value!r}: {allowed} {unit} ({why})")


def check_int_at_most(owner: str, name: str, value: int, maximum: int, why: str) -> None:
    """Raise ``ValueError`` for a count above ``maximum`` (``why`` says what bounds it)."""
    if value > maximum:
        raise ValueError(f"{owner}.{name} = {value!r}: at most {maximum:,} ({why})")


def check_whole_multiple(owner: str, name: str, value: float, step_name: str,
                         step: float) -> int:
    """Return ``round(value / step)``; raise ``ValueError`` unless ``value`` is a finite
    number and a whole multiple (1 or more) of ``step`` within :data:`WHOLE_MULTIPLE_TOL`
    (not rounded to one: a value between two multiples is refused, not moved).
    ``step_name`` names ``step`` in the message."""
    ratio = check_positive(owner, name, value) / step
    if math.isinf(ratio):   # round() would raise OverflowError
        raise ValueError(f"{owner}.{name} = {value!r}: too many steps of {step_name} = "
                         f"{step!r} to count (the ratio overflows a float)")
    if ratio < 1 or abs(ratio - round(ratio)) > WHOLE_MULTIPLE_TOL:
        raise ValueError(f"{owner}.{name} = {value!r}: must be a whole multiple of "
                         f"{step_name} = {step!r} (1 or more times; not rounded)")
    return round(ratio)


def check_substeps(owner: str, dt_s: float, step_name: str, physics_dt_s: float) -> int:
    """Physics sub-steps per agent step: ``dt_s`` must be a whole multiple of
    ``physics_dt_s`` (:func:`check_whole_multiple`) and at most :data:`MAX_SUBSTEPS` of
    them (``step_name`` names ``physics_dt_s`` in the messages)."""
    n = check_whole_multiple(owner, "dt_s", dt_s, step_name, physics_dt_s)
    if n > MAX_SUBSTEPS:
        count = f"{n:,}" if n < 10**9 else f"{n:.3g}"
        raise ValueError(
            f"{owner}.dt_s = {dt_s!r}: {count} physics sub-steps of {physics_dt_s!r} s per "
            f"step; at most {MAX_SUBSTEPS:,} (the frequency model precomputes an (n+3) x n "
            f"response table per step length: e.g. dt_s <= 120 s at 50 ms sub-steps; raise "
            f"{step_name} for longer steps)")
    return n


def rocof_window_substeps(owner: str, window_s: float | None, physics_dt_s: float,
                          step_name: str) -> int:
    """Physics sub-steps in the RoCoF window: ``window_s`` must be a whole multiple of
    ``physics_dt_s`` (:func:`check_whole_multiple`); ``None`` is :data:`ROCOF_WINDOW_S`
    in the nearest whole number of sub-steps, at least one (exactly 0.5 s for sub-steps
    that divide it, such as the default 50 ms)."""
    if window_s is None:
        return max(1, round(ROCOF_WINDOW_S / physics_dt_s))
    return check_whole_multiple(owner, "rocof_window_s", window_s, step_name, physics_dt_s)


def check_agent_limit(label: str, n_agents: int, sep: str = " = ") -> None:
    """Raise ``ValueError`` for a fleet larger than :data:`MAX_AGENTS` (``label`` names
    the setting or flag in the message, ``sep`` joins it to the value: ``" = "`` for a
    setting, ``" "`` for a flag)."""
    if n_agents > MAX_AGENTS:
        raise ValueError(f"{label}{sep}{n_agents}: at most {MAX_AGENTS:,} agents"
                         f"{AGENT_LIMIT_WHY}")


def check_path(owner: str, name: str, value: Any, what: str) -> str:
    """A path setting: a non-empty ``str`` or :class:`os.PathLike` (a :class:`~pathlib.Path`),
    returned as a str (so the config stays hashable and its record plain JSON).

    :raises ValueError: ``"<owner>.<name> = <value>: expected <what>"``.
    """
    path = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(path, str) or not path:
        raise ValueError(f"{owner}.{name} = {value!r}: expected {what}")
    return path


def store(config: Any, name: str, value: Any) -> None:
    """Store a checked, normalized ``value`` on a frozen dataclass: for the configs' own
    ``__post_init__`` only. It bypasses both the freeze and the validation, so calling it
    on a built config (``store(EnvConfig(), "n_agents", -5)``) breaks the config's
    guarantees; build a new config instead (``dataclasses.replace`` validates again)."""
    object.__setattr__(config, name, value)


def read_toml_file(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """The table of the TOML file ``path`` (:func:`read_toml_bytes` without the bytes and
    text)."""
    return read_toml_bytes(path, what)[0]


#: byte-order marks a TOML file may start with when an editor saved it so (UTF-32 before
#: UTF-16: FF FE starts both little-endian marks)
_BYTE_ORDER_MARKS = ((b"\xef\xbb\xbf", "UTF-8"), (b"\xff\xfe\x00\x00", "UTF-32"),
                     (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
                     (b"\xfe\xff", "UTF-16"))


class _OutsideFloatRange(float):
    """A TOML number outside the float range: too large (``1e400``, read as ``±inf``)
    or too small (``1e-400``, read as ``0.0``). That float still (a field taking inf or
    0 takes it as before), but its ``repr`` shows what the file says, so a field refusing
    the value names it: ``max_discharge_mw = 1e400 (beyond the float range, read as
    inf): expected a finite number``, ``ev_eta_charge = 1e-400 (below the float
    range, read as 0.0): must lie in [0.01, 1.0]``, not ``= inf`` or ``= 0.0``."""

    text: str
    where: str

    def __new__(cls, text: str, where: str) -> _OutsideFloatRange:
        number = super().__new__(cls, text)
        number.text = text
        number.where = where
        return number

    def __repr__(self) -> str:
        return f"{self.text} ({self.where} the float range, read as {float.__repr__(self)})"


_OutsideFloatRange.__name__ = "float"   # messages naming the type ("got float") as before


def _toml_float(text: str) -> float:
    """``parse_float`` of the TOML files: ``float(text)``, as :mod:`tomllib` reads it, but
    a finite number written beyond the float range, or a non-zero one below it, is an
    :class:`_OutsideFloatRange`."""
    number = float(text)
    if math.isinf(number) and text.lstrip("+-") != "inf":
        return _OutsideFloatRange(text, "beyond")
    mantissa = text.lower().partition("e")[0]
    if number == 0.0 and mantissa.strip("+-0._"):   # a non-zero digit read as 0.0
        return _OutsideFloatRange(text, "below")
    return number


def _beyond_toml_ints(value: Any, where: str = "") -> tuple[str, int] | None:
    """(dotted key, value) of the first integer in a parsed TOML table outside TOML's
    64-bit range, or None: :mod:`tomllib` reads integers of any length, and an EnvConfig
    or limits check's ``float()`` of one beyond the float range raised OverflowError."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = _beyond_toml_ints(item, f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _beyond_toml_ints(item, f"{where}[{i}]")
            if found is not None:
                return found
    elif isinstance(value, int) and not isinstance(value, bool) and not (
            -2**63 <= value < 2**63):
        return where, value
    return None


def read_toml_bytes(path: str | os.PathLike[str], what: str
                    ) -> tuple[dict[str, Any], bytes, str]:
    """The table of the TOML file ``path``, the bytes it was parsed from and their text
    (decoded once, as UTF-8).

    The file is read once, so a caller that names the file by a hash hashes the bytes
    that were parsed, not a second read that a rewrite in between would change. Every
    failure is a ``ValueError`` naming ``what`` (e.g. ``"limits file"``) and the path: an
    empty path (which ``Path`` reads as the current directory), a missing file, a
    directory, an unreadable file or bad TOML (TOML is UTF-8; a file starting with a
    byte-order mark is refused saying so).
    """
    if not str(path):
        raise ValueError(f"{what} '': empty path; expected a TOML file")
    p = Path(path)
    try:
        raw = p.read_bytes()
        for mark, encoding in _BYTE_ORDER_MARKS:
            if raw.startswith(mark):   # tomllib: "Invalid statement (at line 1, column 1)"
                raise ValueError(
                    f"{what} {str(p)!r} is not valid TOML: it starts with a {encoding} "
                    f"byte-order mark (bytes {mark.hex(' ').upper()}), as some Windows "
                    "editors save; TOML is UTF-8 without one: save it as UTF-8 (no BOM)")
        text = raw.decode("utf-8")
        data = tomllib.loads(text, parse_float=_toml_float)
        huge = _beyond_toml_ints(data)
        if huge is not None:   # tomllib reads any length; the checks' float() overflowed
            where, value = huge
            digits = str(value)
            raise ValueError(
                f"{what} {str(p)!r} is not valid TOML: {where} = "
                f"{digits if len(digits) <= 24 else digits[:20] + '...'} "
                f"({len(digits.lstrip('-'))} digits) is beyond TOML's 64-bit integers "
                f"({-2**63} to {2**63 - 1}); write a float for a larger number")
        return data, raw, text
    except FileNotFoundError:
        raise ValueError(f"{what} {str(p)!r} does not exist") from None
    except IsADirectoryError:   # not "not valid TOML: [Errno 21] Is a directory"
        raise ValueError(f"{what} {str(p)!r} is a directory; expected a TOML file") from None
    except OSError as exc:   # not "not valid TOML: [Errno 36] File name too long"
        raise ValueError(f"{what} {str(p)!r} cannot be read: "
                         f"{exc.strerror or type(exc).__name__}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{what} {str(p)!r} is not valid TOML: {exc}") from None


def override(config: Any, **changes: Any) -> Any:
    """Return a copy of a frozen config with ``changes`` applied (validated again).

    Unknown field names raise ``ValueError`` listing the known ones.
    """
    known = {f.name for f in fields(config) if f.init}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(
            f"{type(config).__name__} has no field(s) {', '.join(unknown)}; "
            f"known fields: {', '.join(sorted(known))}"
        )
    return replace(config, **changes)


def field_changes(value: Any, reference: Any, skip: Sequence[str] = (),
                  prefix: str = "") -> list[str]:
    """``name = value (reference's)`` for every constructor field of the dataclass
    ``value`` that differs from ``reference``'s (nested dataclasses as ``fleet.share_ev``),
    leaving out the fields ``skip``."""
    changes = []
    for f in fields(value):
        mine, theirs = getattr(value, f.name), getattr(reference, f.name)
        if not f.init or f.name in skip or mine == theirs:
            continue
        if is_dataclass(mine) and type(mine) is type(theirs):
            changes += field_changes(mine, theirs, skip, f"{prefix}{f.name}.")
        else:
            changes.append(f"{prefix}{f.name} = {mine!r} ({theirs!r})")
    return changes


# --------------------------------------------------------------------------- fleet
@dataclass(frozen=True)
class FleetConfig:
    """The DER fleet: how many agents of each kind and how big each portfolio is.

    The fleet is sized in MW for the whole system and shared among the agents of
    each kind, so a scenario behaves alike at 10 or 10 000 agents. Each agent's
    portfolio gets a random share (uniform in ``1 ± size_spread``, renormalized so
    kind totals are exact).

    Defaults and sources:

    * home battery 5 kW / 13.5 kWh, 90 % round trip (Tesla Powerwall 2 datasheet):
      ``battery_duration_h = 13.5 / 5 = 2.7`` and one-way efficiencies
      ``sqrt(0.90) = 0.949``;
    * EV level-2 charger 7.2 kW (SAE J1772, 240 V x 30 A), 60 kWh pack, 90 %
      charging efficiency (Apostolaki-Iosifidou et al., Energy 127, 2017);
      baseline "smart" charging at half the charger rating, no V2G;
    * PV inverter efficiency 0.96 (CEC weighted efficiency of typical string
      inverters); forecast error 5 % of output, a per-agent bias drawn normal
      when the fleet is built (every reset): an assumption of this project, not a
      sourced figure (the agents forecast one step, seconds, ahead, where persistence
      errors are far smaller than day-ahead ones; the bias stands for a mis-rated or
      shaded array).

    Assumptions of this project (no single source; sized to DESIGN §3's "flexible
    capacity of the order of 10–20 % of system load"):

    * fleet sizes: batteries 100 MW and EV chargers 50 MW give 125 MW of upward
      flexibility (full battery discharge plus stopping the EVs' 25 MW of baseline
      charging), ~15 % of the scenarios' 850 MW base load; PV 120 MW (DC) can curtail;
    * initial SoC uniform in 0.25–0.9 (batteries) and 0.3–0.7 (EVs), EV departure
      target 0.8, departures drawn in 60–3600 s: spreads so the agents start in
      different states, not measured distributions;
    * portfolio sizes ``1 ± 0.5`` (``size_spread``) and solar variability of 1 % with a
      60 s AR(1) time constant (``solar_variability_std``): assumptions.

    :param share_solar: fraction of agents that are solar portfolios.
    :param share_battery: fraction of agents that are battery portfolios.
    :param share_ev: fraction of agents that are EV fleets.
    """

    share_solar: float = 0.3
    share_battery: float = 0.4
    share_ev: float = 0.3
    battery_power_mw: float = 100.0       # fleet total rated power of batteries
    battery_duration_h: float = 2.7       # energy / power (13.5 kWh / 5 kW)
    battery_eta_charge: float = 0.949     # sqrt(0.90) one-way
    battery_eta_discharge: float = 0.949
    battery_soc_init_low: float = 0.25
    battery_soc_init_high: float = 0.9
    ev_power_mw: float = 50.0             # fleet total charger rating
    ev_duration_h: float = 60.0 / 7.2     # pack energy / charger power, h (60 kWh / 7.2 kW)
    ev_eta_charge: float = 0.90
    ev_baseline_fraction: float = 0.5     # baseline charging rate / rated
    ev_soc_init_low: float = 0.3
    ev_soc_init_high: float = 0.7
    ev_departure_soc: float = 0.8
    # departure = max(uniform draw in [min, max], slack × time baseline charging needs to
    # reach ev_departure_soc): an EV never leaves before it can be full enough (with
    # ev_baseline_fraction = 0 one below it never leaves: departure inf). With the
    # default SoC range (0.3-0.7 < 0.8) that time is hours, so no EV leaves within the
    # shipped scenarios (2-5 min); raise ev_soc_init_high above ev_departure_soc (or lower
    # the latter) to exercise departures within an episode.
    ev_departure_min_s: float = 60.0
    ev_departure_max_s: float = 3600.0
    solar_capacity_mw: float = 120.0      # fleet total PV rating (DC)
    solar_inverter_eta: float = 0.96
    solar_forecast_error_std: float = 0.05
    # long-run (stationary) relative std of the AR(1) noise on availability (60 s time
    # constant; the shocks are scaled by sqrt(1 - a^2), fleet.update_solar)
    solar_variability_std: float = 0.01
    size_spread: float = 0.5

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name in ("share_solar", "share_battery", "share_ev", "size_spread",
                     "solar_forecast_error_std", "solar_variability_std"):
            store(self, name, check_range(owner, name, getattr(self, name), 0.0, 1.0))
        total = self.share_solar + self.share_battery + self.share_ev
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(
                f"{owner}: share_solar + share_battery + share_ev = {total!r}: must sum to 1"
            )
        for name in ("battery_power_mw", "ev_power_mw", "solar_capacity_mw"):
            store(self, name, check_non_negative(owner, name, getattr(self, name)))
            check_at_most(owner, name, getattr(self, name), MAX_POWER_MW, "MW", MAX_POWER_WHY)
            if 0.0 < getattr(self, name) < MIN_FLEET_POWER_MW:
                raise ValueError(f"{owner}.{name} = {getattr(self, name)!r}: must be 0 (none) "
                                 f"or at least {MIN_FLEET_POWER_MW:g} MW (1 W)")
        for name in ("battery_duration_h", "ev_duration_h", "ev_departure_min_s",
                     "ev_departure_max_s"):
            store(self, name, check_positive(owner, name, getattr(self, name)))
        for name in ("battery_duration_h", "ev_duration_h"):
            if getattr(self, name) < MIN_DURATION_H:
                raise ValueError(f"{owner}.{name} = {getattr(self, name)!r}: must be at least "
                                 f"{MIN_DURATION_H:g} h (3.6 ms of full power)")
        for name in ("battery_duration_h", "ev_duration_h"):
            check_at_most(owner, name, getattr(self, name), MAX_DURATION_H, "h",
                          MAX_DURATION_WHY)
        for name in ("ev_departure_min_s", "ev_departure_max_s"):
            check_at_most(owner, name, getattr(self, name), MAX_TIME_S, "s", MAX_TIME_WHY)
        for name in ("battery_eta_charge", "battery_eta_discharge", "ev_eta_charge",
                     "solar_inverter_eta"):
            store(self, name, check_range(owner, name, getattr(self, name),
                                          MIN_EFFICIENCY, 1.0))
        for name in ("battery_soc_init_low", "battery_soc_init_high", "ev_soc_init_low",
                     "ev_soc_init_high", "ev_departure_soc", "ev_baseline_fraction"):
            store(self, name, check_range(owner, name, getattr(self, name), 0.0, 1.0))
        for lo, hi in (("battery_soc_init_low", "battery_soc_init_high"),
                       ("ev_soc_init_low", "ev_soc_init_high"),
                       ("ev_departure_min_s", "ev_departure_max_s")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{owner}.{lo} = {getattr(self, lo)!r} must be <= "
                                 f"{owner}.{hi} = {getattr(self, hi)!r}")


# --------------------------------------------------------------------------- market
@dataclass(frozen=True)
class MarketConfig:
    """Action discretization and market-clearing rules (DESIGN §3 Market).

    :param n_power_levels: power levels, ``linspace(-1, 1, n) x rated power``.
    :param n_price_levels: price levels across the scenario's price band.
    :param consensus_share: a round reaches consensus when accepted power
        covers at least this share of the request.
    :param gate_s: gate closure after the step start: bids delivered by the bus
        later than this miss the round (they are stale next step).
        The next round is announced at gate closure too (DESIGN §2), so its signal
        has ``dt_s − gate_s`` to be delivered before the next observation.
    :param deadband_mw: requests smaller than this hold no round.
    :param reserve_full_activation_s: full activation time of the reserve product: a DER
        under a finite ramp limit ``r`` (MW/s) may hold at most ``r·reserve_full_activation_s``
        MW of reserve, what it can deliver that long after activating; without a ramp
        limit the reserve is bounded by power and energy only.
    :param tie_break: how the bids at the marginal price share what is left of the
        request: ``"index"`` (the default: by agent index, the last one partly) or
        ``"pro_rata"`` (each the same share of its size); one of :data:`TIE_BREAKS`
        (:func:`~gridswarm_env.market.clear_market`).

    Defaults (design choices, not sourced figures): 21 power levels (0.1·rated steps)
    and 11 price levels; consensus at 95 % of the request (DESIGN §3); gate closure
    0.25 s into the 1 s step, several times the bus's 15 ms mean latency (clipped at
    50 ms) so on-time bids are never late, leaving 0.75 s to deliver the next round's
    signal; a 0.05 MW deadband, 0.04 % of the fleet's 125 MW of upward flexibility (the
    load noise alone is ±1.5 MW). The reserve's full activation time, 1 s, is that of
    National Grid ESO's Dynamic Containment, a fast frequency response product (full
    delivery within 1 s of the trigger): reserve that takes longer arrives after the
    nadir (2.4 s after an unassisted 100 MW trip here) and would not contain it.
    """

    n_power_levels: int = 21
    n_price_levels: int = 11
    consensus_share: float = 0.95
    gate_s: float = 0.25
    deadband_mw: float = 0.05
    reserve_full_activation_s: float = 1.0
    tie_break: str = "index"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_choice(owner, "tie_break", self.tie_break, TIE_BREAKS)
        store(self, "n_power_levels",
              check_int_at_least(owner, "n_power_levels", self.n_power_levels, 3))
        if self.n_power_levels % 2 == 0:
            raise ValueError(f"{owner}.n_power_levels = {self.n_power_levels!r}: must be odd "
                             "so that level n//2 is exactly 0 MW")
        store(self, "n_price_levels",
              check_int_at_least(owner, "n_price_levels", self.n_price_levels, 2))
        for name in ("n_power_levels", "n_price_levels"):
            check_int_at_most(owner, name, getattr(self, name), MAX_LEVELS,
                              "one action-mask column per level for every agent")
        store(self, "consensus_share", check_range(owner, "consensus_share",
                                                   self.consensus_share, 0.0, 1.0, lo_open=True))
        store(self, "gate_s", check_positive(owner, "gate_s", self.gate_s))
        store(self, "deadband_mw", check_non_negative(owner, "deadband_mw", self.deadband_mw))
        store(self, "reserve_full_activation_s",
              check_positive(owner, "reserve_full_activation_s", self.reserve_full_activation_s))
        check_at_most(owner, "deadband_mw", self.deadband_mw, MAX_POWER_MW, "MW", MAX_POWER_WHY)


# --------------------------------------------------------------------------- costs
@dataclass(frozen=True)
class CostConfig:
    """True costs of balancing energy, used by ``system_cost`` and the oracle.

    ``system_cost = Σ_t [ c_bat·E_bat,throughput + c_curt·E_curtailed
    + c_ev·E_ev,deferred ] + v_stored·E_bat,drawn + c_ev,unmet·E_ev,unmet
    + VOLL·E_unserved`` (all $), where ``E_bat,drawn`` is the net energy the
    batteries' stores lost over the episode (MWh on the cell side: energy sold
    costs ``1/η_d`` of it, energy absorbed gains ``η_c``; negative when they end
    fuller). Stored energy is a stock that must be bought back (or need not be):
    without a value on it, emptying batteries cost only wear, and absorbing a
    surplus into them cost more than spilling PV.

    Sources: Li-ion cycle-aging cost of 20–60 $/MWh throughput (Xu et al.,
    "Factoring the cycle aging cost of batteries participating in electricity
    markets", IEEE Trans. Power Syst. 33(2), 2018); curtailed PV valued at the
    US production tax credit, ~27.5 $/MWh; EV deferred charging ~60 $/MWh and
    unmet departure energy 300 $/MWh (inconvenience, assumptions); stored energy
    at 30 $/MWh, the off-peak wholesale price at which a battery recharges (U.S.
    EIA wholesale market data: off-peak hub prices of roughly 20–40 $/MWh in
    2023–2024; an assumption); value of lost load 9 000 $/MWh (ERCOT's former
    system-wide offer cap). Agents' rewards (:class:`RewardConfig`) count their own
    share of the same true costs, the stored energy included.
    """

    battery_degradation_per_mwh: float = 40.0
    solar_curtailment_per_mwh: float = 27.5
    ev_deferral_per_mwh: float = 60.0
    ev_unmet_departure_per_mwh: float = 300.0
    stored_energy_value_per_mwh: float = 30.0
    voll_per_mwh: float = 9000.0

    def __post_init__(self) -> None:
        for f in fields(self):
            store(self, f.name,
                  check_non_negative(type(self).__name__, f.name, getattr(self, f.name)))
            check_at_most(type(self).__name__, f.name, getattr(self, f.name),
                          MAX_PRICE_PER_MWH, "$/MWh", MAX_PRICE_WHY)

    def battery_cost_per_mwh(self, eta_charge: Any, eta_discharge: Any) -> tuple[Any, Any]:
        """A battery's true cost of balancing energy at the grid, $/MWh, as
        ``system_cost`` counts it: up (discharge) ``c_bat + v/η_d`` — wear, and the stored
        energy it spends — and down (charge) ``c_bat − v·η_c`` — wear, less the stored
        energy it gains. Scalars or arrays (elementwise)."""
        value = self.stored_energy_value_per_mwh
        wear = self.battery_degradation_per_mwh
        return wear + value / eta_discharge, wear - value * eta_charge


@dataclass(frozen=True)
class RewardConfig:
    """Per-agent reward weights (all in $ before ``scale``).

    ``r_i = scale · ( settlement_i + reserve_i − true_cost_i
    − undelivered_penalty_per_mwh·(E_i,undelivered + E_i,reserve_gap)
    − ev_unmet_i − grid_weight·mean_k|f_k − 60|/band_hz )``

    where ``settlement_i`` is the delivered contract energy paid at the clearing price,
    ``reserve_i`` the availability payment of the agent's standing reserve contracts
    (each at its own clearing price, once its window has started), ``true_cost_i`` uses
    :class:`CostConfig` for the agent's own dispatch (the stored energy a battery spent
    included), ``E_i,undelivered`` is contracted energy not delivered and
    ``E_i,reserve_gap`` activated reserve not delivered (MWh), and the last term, the
    mean absolute deviation over the step's physics sub-steps in Hz, is shared by all
    agents. The per-step formulas are :mod:`gridswarm_env.market`'s settlement functions
    (``contract_delivery_mw`` … ``agent_rewards``). The agent's own terms shrink as
    ``1/n_agents`` (the fleet's MW are shared), the grid term does not: in ``price_spike``
    with the heuristic (seed 0) its mean magnitude is 5.4 % of the agents' own mean |r|
    at 100 agents and 54 % at 1 000, so ``grid_weight`` set for ~100 agents would
    dominate at 10 000.

    Defaults (design choices): ``undelivered_penalty_per_mwh`` = 500 $/MWh, at least
    every shipped scenario's price cap (500, 50 and 100 $/MWh), so contracted energy left
    undelivered costs at least what it is worth at any clearing price they allow; ``grid_weight`` = 0.002 $ per step at a
    mean deviation of one ``band_hz``, which makes the shared term ~5 % of an agent's
    own at 100 agents (above; per step, not per hour: the agent's own terms scale with
    ``dt_s``, the grid term does not, so at the same deviation its weight against them
    grows as 1/``dt_s``: twice the 1 s step's at ``dt_s`` = 0.5); ``scale`` = 100 gives per-step rewards with a standard
    deviation of ~0.2–6 at 100 agents (``docs/training.md``).
    """

    scale: float = 100.0
    undelivered_penalty_per_mwh: float = 500.0
    grid_weight: float = 0.002
    band_hz: float = BAND_HZ

    def __post_init__(self) -> None:
        owner = type(self).__name__
        store(self, "scale", check_positive(owner, "scale", self.scale))
        check_at_most(owner, "scale", self.scale, MAX_REWARD_SCALE, "per $",
                      "10 000 x the default 100, past any useful normalisation")
        store(self, "undelivered_penalty_per_mwh", check_non_negative(
            owner, "undelivered_penalty_per_mwh", self.undelivered_penalty_per_mwh))
        check_at_most(owner, "undelivered_penalty_per_mwh", self.undelivered_penalty_per_mwh,
                      MAX_PRICE_PER_MWH, "$/MWh", MAX_PRICE_WHY)
        store(self, "grid_weight", check_non_negative(owner, "grid_weight", self.grid_weight))
        check_at_most(owner, "grid_weight", self.grid_weight, MAX_PRICE_PER_MWH, "$",
                      "the price bound: " + MAX_PRICE_WHY)
        store(self, "band_hz", check_positive(owner, "band_hz", self.band_hz))
        if self.band_hz < MIN_BAND_HZ:
            raise ValueError(f"{owner}.band_hz = {self.band_hz!r}: at least {MIN_BAND_HZ:g} Hz "
                             "(1 µHz, a thousand times finer than grid frequency is measured; "
                             "the grid term divides by it)")


def _default_grid_params():
    from gridswarm_env.grid import GridParams

    return GridParams()


def _default_bus_config():
    from gridswarm_env.bus import BusConfig

    return BusConfig()


@dataclass(frozen=True)
class EnvConfig:
    """Everything an environment instance needs besides the scenario.

    :param n_agents: number of DER agents (1 to :data:`MAX_AGENTS`; fleet MW are shared
        among them).
    :param dt_s: agent step (market round) length, default 1 s (at most
        :data:`MAX_DT_S`, and at most :data:`MAX_SUBSTEPS` physics sub-steps).
    :param trust: ``"ed25519"`` (default) or ``"hmac"`` (faster, for training).
    :param shadow: run bids, clearing, signing, verification and the kernel but
        dispatch nothing to the physics.
    :param audit_path: optional JSONL file for the audit hash chain.
    :param audit_keep_entries: keep audit entries in memory (False keeps only the head).
    :param crypto_threads: threads that sign and verify each step's contracts (int, 1 to
        :data:`MAX_CRYPTO_THREADS`; at most the process's usable cores run, a larger
        value acts as that many); ``None`` (default) uses 2 in ed25519 mode with
        libsodium on a machine with 2 or more usable cores, else 1 (see
        :class:`~gridswarm_env.trust.IdentityRegistry`).
        Trajectories are identical for every value; set 1 when other processes (e.g.
        parallel environments) already use every core.
    :param contract_keys: ``"random"`` (default): keys drawn from ``os.urandom`` once
        per environment and kept for its lifetime; only the process holds them.
        ``"seeded"``: every agent's and the operator's contract keys are derived from the
        reset seed (:func:`~gridswarm_env.trust.derive_key_bytes`), so the signature
        bytes are reproducible, but anyone who knows the seed can sign a contract (a
        search over small seeds recovers one from a single contract seen on the bus).
        Trajectories, KPIs and audit chains are the same either way (no decision depends
        on the key bytes). The default was ``"seeded"`` before this version.
    :param pause_gc: pause Python's cyclic garbage collector during each step and resume
        it after (only if it was enabled when the step began). A step makes no reference
        cycles (its objects are freed by reference counting; tested), but its
        short-lived contract objects made the collector run during every step at scale:
        at 10 000 agents a median of 13 young and 1 middle collections per step
        (``price_spike``, heuristic, hmac, steps 20-59, counted with ``gc.callbacks``),
        6-9 ms of a ~45-70 ms hmac step; paused, about one young collection per step,
        after it, over the objects the step leaves alive (~3 ms; the ``gc ms`` column of
        ``python -m benchmarks``). Trajectories are identical either way. Set False if
        another thread of the process relies on automatic collection while steps run,
        or turns the collector off and on itself (a step that began with it on turns it
        back on).
    :param rocof_window_s: window over which the KPI ``max_rocof_hz_per_s`` measures the
        rate of change of frequency, s: ``|f(t) − f(t − window)| / window`` (see
        :mod:`gridswarm_env.metrics`). A value must be a whole multiple of
        ``grid.physics_dt_s`` (within :data:`WHOLE_MULTIPLE_TOL`; a value between two
        multiples is refused, not rounded), at most :data:`MAX_SUBSTEPS` sub-steps.
        ``None`` (default): :data:`ROCOF_WINDOW_S` = 0.5 s in the nearest whole number of
        sub-steps, at least one (0.5 s exactly for the default 50 ms sub-step; 0.4 s for
        0.2 s, 1 s for 1 s sub-steps), so every ``physics_dt_s`` keeps working. 0.5 s is
        the window of the RoCoF limits the KPI is read against: GB loss-of-mains
        protection 1 Hz/s "measured over 500 ms" (ENA consultation on Distribution Code /
        G59, 2013) and 2 Hz/s over 500 ms in EN 50549-1/-2 (as quoted by EUTurbines' 2023
        position paper on RoCoF requirements).
        Why not shorter for these scenarios: the emergency trip (0.10 p.u.) falls at
        ``ΔP·f0/(2H)`` = 0.75 Hz/s until the DER reserve answers, which it must within
        100 ms (DESIGN §7); over a 100 ms window the largest RoCoF is that first fall,
        ~0.72 Hz/s whether the fleet answers at 100 ms or never, while over 500 ms it is
        ~0.14 Hz/s for an answer at 100 ms, ~0.03 Hz/s at 20 ms and ~0.61 Hz/s with none
        (swing model with the default ``GridParams``, the trip fully offset at the
        answer): the KPI ranks how much of the trip the fleet absorbed. The price is
        that it understates the instantaneous initial RoCoF (0.75 Hz/s; see
        :meth:`~gridswarm_env.grid.GridParams.initial_rocof_hz_per_s`). It no longer
        depends on ``physics_dt_s`` (a one-sub-step difference did: 0.50 Hz/s at 50 ms
        vs 0.75 Hz/s at 10 ms sub-steps, emergency scenario, heuristic fleet, seed 0).
    """

    n_agents: int = 100
    dt_s: float = 1.0
    trust: str = "ed25519"
    shadow: bool = False
    audit_path: str | None = None
    audit_keep_entries: bool = True
    crypto_threads: int | None = None
    contract_keys: str = "random"
    pause_gc: bool = True
    rocof_window_s: float | None = None
    fleet: FleetConfig = field(default_factory=FleetConfig)
    market: MarketConfig = field(default_factory=MarketConfig)
    costs: CostConfig = field(default_factory=CostConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    grid: Any = field(default_factory=_default_grid_params)
    bus: Any = field(default_factory=_default_bus_config)

    def __post_init__(self) -> None:
        owner = type(self).__name__
        store(self, "n_agents", check_int_at_least(owner, "n_agents", self.n_agents, 1))
        check_agent_limit(f"{owner}.n_agents", self.n_agents)
        store(self, "dt_s", check_positive(owner, "dt_s", self.dt_s))
        if self.dt_s > MAX_DT_S:
            raise ValueError(f"{owner}.dt_s = {self.dt_s!r}: at most {MAX_DT_S:g} s (one "
                             "market interval of an hour; each step integrates "
                             "dt_s / grid.physics_dt_s physics sub-steps)")
        check_choice(owner, "trust", self.trust, TRUST_MODES)
        check_choice(owner, "contract_keys", self.contract_keys, CONTRACT_KEY_SOURCES)
        if self.crypto_threads is not None:
            store(self, "crypto_threads",
                  check_int_at_least(owner, "crypto_threads", self.crypto_threads, 1))
            if self.crypto_threads > MAX_CRYPTO_THREADS:
                raise ValueError(f"{owner}.crypto_threads = {self.crypto_threads}: at most "
                                 f"{MAX_CRYPTO_THREADS} (the environment never runs more "
                                 "threads than the process's usable cores)")
        if self.audit_path is not None:
            store(self, "audit_path", check_path(owner, "audit_path", self.audit_path,
                                                 "a file path or None"))
        for name in ("shadow", "audit_keep_entries", "pause_gc"):
            check_bool(f"{owner}.{name}", getattr(self, name))
        from gridswarm_env.bus import BusConfig, Lane
        from gridswarm_env.grid import GridParams

        for name, kind in (("fleet", FleetConfig), ("market", MarketConfig),
                           ("costs", CostConfig), ("reward", RewardConfig),
                           ("grid", GridParams), ("bus", BusConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{owner}.{name}: expected a {kind.__name__}, got "
                                 f"{type(getattr(self, name)).__name__}")
        if self.grid.nominal_freq_hz != NOMINAL_HZ:
            # the KPIs (metrics: NOMINAL_HZ and the NERC band) and the reward's grid term
            # measure deviations from 60 Hz: at 50 Hz every sample would be 10 Hz "off"
            raise ValueError(
                f"{owner}.grid.nominal_freq_hz = {self.grid.nominal_freq_hz!r}: the "
                f"environment's KPIs and rewards are defined on a {NOMINAL_HZ:g} Hz grid "
                f"(NERC band {NOMINAL_HZ - BAND_HZ:g}-{NOMINAL_HZ + BAND_HZ:g} Hz); only "
                f"{NOMINAL_HZ:g} is supported (GridParams, GridModel and step_response "
                "alone accept any nominal frequency)")
        pdt = self.grid.physics_dt_s
        check_substeps(owner, self.dt_s, "grid.physics_dt_s", pdt)
        if self.rocof_window_s is not None:
            store(self, "rocof_window_s", check_positive(owner, "rocof_window_s",
                                                         self.rocof_window_s))
        window = rocof_window_substeps(owner, self.rocof_window_s, pdt, "grid.physics_dt_s")
        if window > MAX_SUBSTEPS and self.rocof_window_s is not None:
            raise ValueError(
                f"{owner}.rocof_window_s = {self.rocof_window_s!r}: {window:,} physics "
                f"sub-steps of {pdt!r} s; at most {MAX_SUBSTEPS:,} (the metrics keep the "
                "window's samples)")
        if self.market.gate_s >= self.dt_s:
            raise ValueError(
                f"{owner}: market.gate_s ({self.market.gate_s}) must be shorter than "
                f"dt_s ({self.dt_s})"
            )
        for lane in (Lane.CONTROL, Lane.MARKET, Lane.TELEMETRY):
            limit = self.bus.max_deferral_s[lane]
            if limit is not None and limit < self.dt_s:
                # the environment delivers at gate closure and at the step's end, so a
                # message on time can wait up to max(gate_s, dt_s - gate_s) for the next
                raise ValueError(
                    f"{owner}.bus.max_deferral_s[{lane.name}] = {limit!r} s is shorter than "
                    f"one agent step (dt_s = {self.dt_s!r} s): the environment delivers at "
                    "gate closure and at the step's end, so a message on time waits up to "
                    f"{max(self.market.gate_s, self.dt_s - self.market.gate_s):g} s for its "
                    "delivery and would be dropped; expected None (one agent step) or at "
                    "least dt_s")
