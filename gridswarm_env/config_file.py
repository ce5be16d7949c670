"""An :class:`~gridswarm_env.config.EnvConfig` from a TOML file: the command lines'
``--config FILE`` (``demo.py``, ``evaluate.py``, ``python -m train``, ``python -m
train.dagger``).

The file holds ``EnvConfig``'s own fields at the top level and one table per nested
config, each with the fields of its class; every key is optional (left out: the
default), so a file names only what it changes::

    dt_s = 1.0                     # EnvConfig
    [grid]                         # GridParams (gridswarm_env.grid)
    inertia_h_s = 3.0
    governor_deadband_hz = 0.036
    [market]                       # MarketConfig
    consensus_share = 0.9
    [bus]                          # BusConfig (gridswarm_env.bus): per-lane arrays in
    latency_mean_s = 0.030         # the order EMERGENCY, CONTROL, MARKET, TELEMETRY
    max_deferral_s = [inf, "step", "step", inf]

The tables are ``[fleet]`` (:class:`~gridswarm_env.config.FleetConfig`), ``[market]``,
``[costs]``, ``[reward]``, ``[grid]`` and ``[bus]``. Each value goes through the same
validation as in Python (a bad one is refused naming the file, the table and what is
allowed). TOML has no null: a ``max_deferral_s`` entry ``"step"`` is ``None``, one agent
step. ``audit_path`` is refused (an output, not a setting: ``demo.py --audit FILE``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from gridswarm_env.config import (
    CostConfig,
    EnvConfig,
    FleetConfig,
    MarketConfig,
    RewardConfig,
    field_changes,
    read_toml_bytes,
)

#: EnvConfig fields a config file may not set, and why (the message's end)
REFUSED_KEYS = {
    "audit_path": "an output, not a setting: use demo.py --audit FILE (or "
                  "EnvConfig(audit_path=...) in Python)",
}
#: the TOML spelling of ``None`` in ``BusConfig.max_deferral_s`` (one agent step)
ONE_STEP = "step"


def _sections() -> dict[str, type]:
    """Table name -> the dataclass it builds (imported here: grid and bus import config)."""
    from gridswarm_env.bus import BusConfig
    from gridswarm_env.grid import GridParams

    return {"fleet": FleetConfig, "market": MarketConfig, "costs": CostConfig,
            "reward": RewardConfig, "grid": GridParams, "bus": BusConfig}


def _init_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.init]


def _section(name: str, cls: type, table: Any) -> Any:
    """``cls(**table)`` with TOML arrays as tuples (BusConfig's per-lane fields) and
    ``"step"`` as None in ``max_deferral_s``."""
    if not isinstance(table, dict):
        raise ValueError(f"{name} = {table!r}: expected a table [{name}] of "
                         f"{cls.__name__} fields")
    known = _init_names(cls)
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"[{name}]: unknown field {unknown[0]!r}; {cls.__name__}'s fields: "
                         f"{', '.join(known)}")
    values = {}
    for key, value in table.items():
        if isinstance(value, dict):
            raise ValueError(f"[{name}] {key}: a table; expected a value")
        if isinstance(value, list):
            if key == "max_deferral_s":
                value = [None if v == ONE_STEP else v for v in value]
            value = tuple(value)
        values[key] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        hint = (f' (in a config file "{ONE_STEP}" stands for None)'
                if "max_deferral_s" in str(exc) else "")
        raise ValueError(f"[{name}] {exc}{hint}") from None


def env_config_from_dict(data: dict[str, Any],
                         refuse: Mapping[str, str] | None = None) -> EnvConfig:
    """The :class:`EnvConfig` a config file's table describes (module docstring).

    :param refuse: top-level keys the caller does not take from a file, each with why
        (the message's end), besides :data:`REFUSED_KEYS`: present in the file at all,
        whatever its value, they are refused.
    :raises ValueError: an unknown or refused key, a value of the wrong kind or out of
        range (the message names the table and field, and what is allowed).
    """
    sections = _sections()
    refused = {**REFUSED_KEYS, **(refuse or {})}
    top = [n for n in _init_names(EnvConfig) if n not in sections and n not in REFUSED_KEYS]
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in refused:
            raise ValueError(f"key {key!r} = {value!r}: {refused[key]}")
        if key in sections:
            values[key] = _section(key, sections[key], value)
        elif key not in top:
            raise ValueError(f"unknown key {key!r}; allowed: the EnvConfig fields "
                             f"{', '.join(top)} and the tables "
                             f"{', '.join(f'[{s}]' for s in sections)}")
        elif isinstance(value, dict | list):
            raise ValueError(f"{key} = {value!r}: expected a value, not a "
                             f"{'table' if isinstance(value, dict) else 'list'}")
        else:
            values[key] = value
    try:
        return EnvConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def settings_changed(config: EnvConfig, named: tuple[str, ...] = ()) -> list[str]:
    """``["grid.inertia_h_s = 3.0 (4.0)", ...]``: the settings of ``config`` that differ
    from ``EnvConfig()``'s, besides those ``named`` (fields a caller shows elsewhere:
    ``"n_agents"``, or a nested one as ``"grid.governor_deadband_hz"``) and
    ``audit_path`` (:func:`~gridswarm_env.config.field_changes`)."""
    reference = EnvConfig()
    for name in named:
        table, _, field = name.rpartition(".")
        if table:
            value = replace(getattr(reference, table),
                            **{field: getattr(getattr(config, table), field)})
            reference = replace(reference, **{table: value})
        else:
            reference = replace(reference, **{field: getattr(config, field)})
    return field_changes(config, reference, skip=tuple(REFUSED_KEYS))


def _file_value(name: str, value: Any) -> Any:
    """A field's value as a config file holds it: ``max_deferral_s`` with its ``None``
    entries (one agent step) as :data:`ONE_STEP`, as :func:`_section` reads them back."""
    if name == "max_deferral_s":
        return [ONE_STEP if v is None else v for v in value]
    return value


def _toml_value(value: Any) -> str:
    """``value`` as a TOML value (numbers as Python writes them, ``inf``/``nan`` bare, as
    TOML spells them; strings JSON-escaped, which TOML's basic strings read alike)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)   # int, float: 0.05, 1e-05, inf, -inf, nan


def env_config_toml(config: EnvConfig) -> str:
    """The config file (TOML text) of ``config``'s settings other than ``EnvConfig()``'s,
    ``audit_path`` left out: :func:`env_config_from_dict` of it rebuilds ``config``
    exactly (floats as ``repr`` writes them, ``inf`` as ``inf``). The records keep it
    beside their JSON, where an inf becomes null. Empty for the defaults."""
    default = EnvConfig()
    top, tables = [], []
    for f in fields(EnvConfig):
        value, base = getattr(config, f.name), getattr(default, f.name)
        if not f.init or f.name in REFUSED_KEYS or value == base:
            continue
        if f.name in _sections():
            lines = [f"{g.name} = {_toml_value(_file_value(g.name, getattr(value, g.name)))}"
                     for g in fields(value)
                     if g.init and getattr(value, g.name) != getattr(base, g.name)]
            tables.append("\n".join([f"[{f.name}]", *lines]))
        else:
            top.append(f"{f.name} = {_toml_value(_file_value(f.name, value))}")
    return "\n\n".join(part for part in ("\n".join(top), *tables) if part) + (
        "\n" if top or tables else "")


def env_config_record(config: EnvConfig) -> dict[str, Any]:
    """``config`` as the JSON records write it (``evaluate.py``'s
    ``summary.config.env_config``, ``demo.py --json``'s ``run.env_config``): its fields
    as strict JSON (:func:`~gridswarm_env.metrics.json_safe`, which writes inf as null),
    with a ``bus.max_deferral_s`` entry ``None`` (one agent step) written ``"step"`` as in
    a config file: null there is a lane without a limit (inf), never one step (both were
    null, so the default ``(inf, None, None, inf)`` read as one step on every lane)."""
    from dataclasses import asdict

    from gridswarm_env.metrics import json_safe

    record = json_safe(asdict(config))
    record["bus"]["max_deferral_s"] = json_safe(
        _file_value("max_deferral_s", config.bus.max_deferral_s))
    return record


def load_env_config(path: str | os.PathLike[str],
                    refuse: Mapping[str, str] | None = None) -> tuple[EnvConfig, str]:
    """The :class:`EnvConfig` of the TOML file ``path`` and the SHA-256 (hex) of the bytes
    it was read from (the file is read once); ``refuse`` as in
    :func:`env_config_from_dict`.

    :raises ValueError: naming the file and what was wrong: a missing or unreadable
        file, bad TOML, or :func:`env_config_from_dict`'s refusals.
    """
    import hashlib

    data, raw, _text = read_toml_bytes(path, "config file")
    try:
        return env_config_from_dict(data, refuse), hashlib.sha256(raw).hexdigest()
    except ValueError as exc:
        raise ValueError(f"config file {str(path)!r}: {exc}") from None
