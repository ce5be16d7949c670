"""Live terminal dashboard of one gridswarm episode, with scripted or learned agents.

Usage::

    python demo.py [--agents N] [--scenario S|FILE.toml] [--policy heuristic|random|oracle|learned|PATH]
                   [--seed N] [--shadow] [--steps N] [--no-live] [--speed X]
                   [--json FILE] [--overwrite] [--limits FILE] [--trust ed25519|hmac]
                   [--audit FILE] [--crypto-threads N] [--randomize]
                   [--contract-keys seeded|random] [--governor-deadband-hz HZ]

Defaults: 100 agents, ``price_spike``, ``heuristic``, seed 0, ``ed25519``, random
contract keys (``os.urandom``, which a seed does not reveal; ``--contract-keys seeded``
derives them from the seed; the episode is the same, see ``EnvConfig.contract_keys``).
``--randomize`` plays the scenario randomized
(:func:`gridswarm_env.scenarios.randomized`): the seed draws the episode's load step and
trip (x (1 ± 10 %), times ± 5 s); the dashboard's header and the summary say so and
name the draw, and the JSON's ``run`` holds it (``scenario_drawn``).

The episode runs through :func:`policies.rollout.run_episode` (the loop evaluate.py and
the tests use, so the KPIs are measured the same way); after every step
:func:`measure_step` turns ``raw.last_info`` and the environment's state into a
JSON-ready record, which feeds the live dashboard (:mod:`dashboard`, ``rich``) or,
with ``--no-live`` or when stdout is not a terminal, one plain line per step plus the
step's event lines (:func:`plain_line`: the step's balancing requirement ``need=``
beside the operator's ``request=``). In shadow mode (``--shadow``) the plain line shows
the power that would have been dispatched (``would-deliv=``) instead of the delivered 0,
and the summary adds the would-be emergency response latency and dispatched energy. The per-step record adds to ``last_info``:

* ``grid_load_mw`` = scenario base load + forecast shortage at the step's end
  (:meth:`Scenario.forecast_shortage_mw`), ``lost_generation_mw`` (contingency);
* ``price_signal_per_mwh``: the operator's price signal for the next round;
* ``ders_active`` = agents whose executed balancing power is non-zero this step
  (``raw.last_p_mw``; always 0 in shadow mode), ``ders_contracted`` = agents with an
  energy contract for this step's window or an activated reserve contract;
* ``offers`` = up to ``offers_per_step`` accepted bids of the round, in merit order:
  agent, offered power (the kernel-enforced bid) and bid price; accepted power is
  ``raw.awarded_next`` (energy) or the increase of ``raw.reserve_awarded_mw`` (reserve);
* ``contracts_signed`` / ``contracts_rejected`` this step and in total, ``wall_s``.

``--speed X`` paces the episode at X simulated seconds per wall-clock second: step k
is shown at its wall-clock deadline ``start + k * dt_s / X`` (the run sleeps until then;
a late step is not waited for). ``0`` runs as fast as possible. Default: 10 with the
live dashboard, 0 with plain lines (``--no-live`` or stdout not a terminal). Pacing only
waits between steps: the episode, its records and KPIs are the same at any speed; the
rates in the summary and the JSON's ``agent_steps_per_s`` leave the waits out (the
JSON's ``run`` holds ``speed`` and ``paced_wait_s``).

``--json FILE`` writes ``{"run": {...}, "steps": [...], "metrics": {...}}`` as strict
JSON (NaN and ±inf become ``null``), plus ``"audit": {"path", "operator_public_key"}``
with ``--audit``. An existing FILE that is not empty is refused before the episode
unless ``--overwrite`` is given (an empty one is fine, and an earlier ``--json`` output
is replaced: :func:`is_demo_json`); the ``--limits`` file or the
``--policy`` model file, inputs of the run, is refused even then. Should a non-empty
file appear at FILE during the run, it is kept and the JSON saved to the temporary
directory instead (see the end of this text).

``--audit FILE`` streams the environment's audit hash chain to FILE (JSONL; an existing
non-empty FILE is refused, never overwritten). The
environment is closed at the end, also after Ctrl-C; with ed25519 trust that ends the
file with the operator's signed closing head (after the head the episode's end signs, if
it ran to its end), and the demo prints how to verify the file,
``python -m gridswarm_env.audit verify FILE --public-key HEX`` (HEX: the operator's
public key, also in the JSON), which then says the file is closed and also detects a
cut tail, one right after the episode's own head included. HMAC keys are
secret, so with ``--trust hmac`` the head is unsigned: the file's chain can be
checked only for self-consistency (an entry edited with the later hashes recomputed,
or a cut tail, is detectable only in the process that wrote it).

Ctrl-C stops the episode cleanly: the summary is printed and the JSON written for the
steps that ran (exit status 130). SIGTERM (``timeout``, ``kill``, a cancelled job) does
the same, with ``stop_reason`` ``"terminated"`` in the JSON and exit status 143
(128 + SIGTERM, as ``python -m train``). If the reader of stdout goes away (``| head``) the
run stops quietly, still writes the JSON and exits 1. Bad arguments exit with status
2 and a one-line message before the episode starts: among them a ``--json`` or
``--audit`` path that is a directory or cannot be written, an existing non-empty
``--json`` file without ``--overwrite``, and a limits file naming an agent the fleet
does not have. If the JSON still cannot be written at the end, it
is saved to the temporary directory instead (one line on stderr, exit status 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policies.cli_checks import (
    EXIT_CTRL_C,
    EXIT_SIGTERM,
    FLAG_SETTINGS,
    Note,
    OneLineParser,
    add_config_argument,
    add_contract_keys_argument,
    add_crypto_threads_argument,
    add_governor_deadband_argument,
    check_contract_keys,
    check_crypto_threads,
    check_governor_deadband,
    check_path_names,
    env_config_file_from_args,
    env_config_source,
    env_config_with,
    input_files,
    int_flag_type,
    int_range_text,
    read_earlier_json,
    sigterm_as_interrupt,
    stop_signals_deferred,
    stop_signals_ignored,
    write_output_text,
)

EXIT_OK, EXIT_STDOUT_CLOSED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, EXIT_CTRL_C
#: Exit status after SIGTERM (128 + SIGTERM, as ``python -m train``): 143.
EXIT_TERMINATED = EXIT_SIGTERM
#: Exit status when an output could not be written where asked (saved elsewhere).
EXIT_OUTPUT_FAILED = 1
#: Shortest wall-clock interval between live refreshes (s): at most ~12 frames/s; a
#: slow terminal stretches it so that drawing takes at most a quarter of the run.
REFRESH_INTERVAL_S = 1.0 / 12.0
#: ``raw.last_info`` keys copied into every step record.
INFO_KEYS = ("step", "t_s", "freq_hz", "freq_min_hz", "freq_max_hz", "requirement_mw",
             "request_mw", "delivered_mw", "would_dispatch_mw", "clearing_price_per_mwh",
             "accepted_mw", "consensus", "negotiations", "blocked", "executed_violations",
             "product", "shadow", "events")
_EPS_MW = 1e-9


class DemoError(ValueError):
    """A user-facing error (bad option, missing model, bad limits file)."""


#: the command-line flag of each :class:`DemoOptions` field: the usage errors name the
#: flag a user typed (``--agents``), not the field (``n_agents``)
OPTION_FLAGS = {"n_agents": "--agents", "scenario": "--scenario", "policy": "--policy",
                "seed": "--seed", "shadow": "--shadow", "max_steps": "--steps",
                "live": "--no-live", "json_path": "--json", "limits_path": "--limits",
                "trust": "--trust", "offers_per_step": "offers_per_step",
                "audit_path": "--audit", "crypto_threads": "--crypto-threads",
                "randomize": "--randomize", "contract_keys": "--contract-keys",
                "overwrite": "--overwrite", "speed": "--speed",
                "governor_deadband_hz": "--governor-deadband-hz"}
#: ``--speed`` with the live dashboard when none is given (simulated s per wall-clock s)
LIVE_SPEED = 10.0
#: the slowest pace: one simulated second per 100 s of wall clock (slower ones meant hours
#: or, at 1e-300, a sleep past the platform's clock range)
MIN_SPEED = 0.01
SPEED_ALLOWED = (f"0 (as fast as possible) or a number >= {MIN_SPEED:g} (simulated seconds "
                 "per wall-clock second)")


def check_speed(value: Any) -> float:
    """Check a ``--speed`` value: 0, or a finite real number >= :data:`MIN_SPEED`.

    :returns: it as a float.
    :raises ValueError: ``"--speed nan: expected 0 (as fast as possible) or ..."``.
    """
    from gridswarm_env.config import is_real, wrong_type_text

    # numpy numbers too, as the configs' real-number fields (np.int64(1) was refused)
    if not is_real(value):   # a Decimal('2') is >= 0.01: say why it is refused
        raise ValueError(f"{OPTION_FLAGS['speed']} {value!r}: expected {SPEED_ALLOWED}, "
                         f"{wrong_type_text(value)}")
    if not math.isfinite(value) or not (value == 0 or value >= MIN_SPEED):
        raise ValueError(f"{OPTION_FLAGS['speed']} {value!r}: expected {SPEED_ALLOWED}")
    return float(value)


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False,
               maximum: int | None = None, why: str = "") -> int | None:
    """``value`` as a Python int (None when ``allow_none``): numpy integers are accepted,
    as by ``EnvConfig``, and stored as int so the ``--json`` record stays plain JSON."""
    from gridswarm_env.config import is_int

    if value is None and allow_none:
        return None
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{OPTION_FLAGS[name]} {value!r}: expected "
                         f"{int_range_text(minimum, maximum, why)}"
                         + (" or None" if allow_none else ""))
    return int(value)


@dataclass(frozen=True)
class DemoOptions:
    """One demo run.

    :param n_agents: DER agents (1 to :data:`~gridswarm_env.config.MAX_AGENTS`).
    :param scenario: a registered scenario name (:func:`gridswarm_env.scenario_names`)
        or the path of a scenario file ending in ``.toml``
        (:func:`~gridswarm_env.scenarios.read_scenario_file`), read once, here
        (:attr:`played_scenario`).
    :param policy: a registered policy name (``heuristic``, ``random``, ``learned``,
        ``oracle``) or a path to a saved model.
    :param seed: episode seed (>= 0): the env and the policy are reset with it.
    :param shadow: run everything but dispatch nothing to the physics.
    :param max_steps: stop after this many steps (None: the whole episode).
    :param live: draw the rich live dashboard (else plain lines).
    :param json_path: write the per-step records and final KPIs here: a new path, an
        existing empty file or an earlier ``--json`` output (:func:`is_demo_json`), or any
        file with ``overwrite``; never the limits file, the policy's model file or its
        training record.
    :param overwrite: ``json_path`` may replace an existing file.
    :param limits_path: a kernel limits TOML file (see :mod:`gridswarm_env.kernel`).
    :param trust: ``"ed25519"`` (default) or ``"hmac"``.
    :param offers_per_step: accepted bids shown per step in the event feed.
    :param audit_path: stream the audit hash chain to this file (JSONL).
    :param crypto_threads: ``EnvConfig.crypto_threads``, 1 to the cores this process may
        use (:func:`max_crypto_threads`; None: 2 with libsodium on 2+ cores, else 1; the
        episode does not depend on it).
    :param contract_keys: ``EnvConfig.contract_keys``: ``"random"`` (default:
        ``os.urandom``) or ``"seeded"`` (derived from the seed, reproducible, known to
        anyone who knows the seed); the episode does not depend on it.
    :param speed: pace at this many simulated seconds per wall-clock second (> 0), or 0
        for as fast as possible; None: :data:`LIVE_SPEED` when ``live``, else 0
        (:attr:`pace_speed`). The episode does not depend on it.
    :param governor_deadband_hz: ``GridParams.governor_deadband_hz``, Hz (0: none, the
        default; :func:`~policies.cli_checks.check_governor_deadband`).
    :param env_config: the :class:`~gridswarm_env.config.EnvConfig` the episode starts
        from (None: the defaults), without an ``audit_path`` (``audit_path`` above); or a
        :class:`~policies.cli_checks.EnvConfigFile` of one (the command line's ``--config
        FILE``, read once): stored as its ``EnvConfig``, and ``--json``'s ``run`` records
        the file's path and SHA-256 as ``env_config_file`` and ``env_config_sha256``
        (:attr:`config_file`). The fields above that are ``EnvConfig`` fields
        (``n_agents``, ``trust``, ``shadow``, ``crypto_threads``, ``contract_keys``,
        ``governor_deadband_hz``) replace its values; the command line fills them from
        the file when their flags are not given.

    A bad value raises ``ValueError`` naming the command-line flag (:data:`OPTION_FLAGS`)
    and what is allowed.
    """

    n_agents: int = 100
    scenario: str = "price_spike"
    policy: str = "heuristic"
    seed: int = 0
    shadow: bool = False
    max_steps: int | None = None
    live: bool = True
    json_path: str | None = None
    limits_path: str | None = None
    trust: str = "ed25519"
    offers_per_step: int = 3
    audit_path: str | None = None
    crypto_threads: int | None = None
    randomize: bool = False
    contract_keys: str = "random"
    overwrite: bool = False
    speed: float | None = None
    governor_deadband_hz: float = 0.0
    env_config: Any = None

    @property
    def played_scenario(self) -> Any:
        """The scenario to play: the registered name, or the
        :class:`~gridswarm_env.scenarios.Scenario` read from the ``scenario`` file."""
        file = getattr(self, "_scenario_file", None)
        return self.scenario if file is None else file.scenario

    @property
    def config_file(self) -> dict[str, str] | None:
        """``{"path", "sha256"}`` of the config file ``env_config`` was given as (an
        :class:`~policies.cli_checks.EnvConfigFile`), else None."""
        return getattr(self, "_config_file", None)

    @property
    def pace_speed(self) -> float:
        """The speed the run is paced at: ``speed``, or its default (0: unpaced)."""
        if self.speed is not None:
            return float(self.speed)
        return LIVE_SPEED if self.live else 0.0

    def __post_init__(self) -> None:
        from gridswarm_env import scenario_names
        from gridswarm_env.config import AGENT_LIMIT_WHY, MAX_AGENTS, check_bool
        from gridswarm_env.scenarios import (
            check_randomizable,
            is_scenario_file,
            read_scenario_file,
            unknown_scenario_text,
        )
        from gridswarm_env.trust import TRUST_MODES

        flag = OPTION_FLAGS
        object.__setattr__(self, "n_agents", _check_int(
            "n_agents", self.n_agents, 1, maximum=MAX_AGENTS, why=AGENT_LIMIT_WHY))
        object.__setattr__(self, "seed", _check_int("seed", self.seed, 0))
        object.__setattr__(self, "max_steps",
                           _check_int("max_steps", self.max_steps, 1, allow_none=True))
        object.__setattr__(self, "offers_per_step",
                           _check_int("offers_per_step", self.offers_per_step, 0))
        # stored as the Python int it returns (a numpy integer would reach --json)
        object.__setattr__(self, "crypto_threads",
                           check_crypto_threads(self.crypto_threads, flag["crypto_threads"]))
        if isinstance(self.scenario, str) and is_scenario_file(self.scenario):
            try:
                loaded = read_scenario_file(self.scenario)
            except ValueError as exc:   # already names the file
                raise ValueError(f"{flag['scenario']}: {exc}") from None
            object.__setattr__(self, "_scenario_file", loaded)   # not a field: not in --json
        elif self.scenario not in scenario_names():
            raise ValueError(f"{flag['scenario']}: {unknown_scenario_text(self.scenario)}")
        check_bool(flag["randomize"], self.randomize, sep=" ")
        file = getattr(self, "_scenario_file", None)
        if self.randomize and file is not None:
            check_randomizable(file.scenario, f"{flag['scenario']} {self.scenario!r}")
        check_contract_keys(self.contract_keys, flag["contract_keys"])
        check_bool(flag["overwrite"], self.overwrite, sep=" ")
        if self.speed is not None:
            object.__setattr__(self, "speed", check_speed(self.speed))
        object.__setattr__(self, "governor_deadband_hz", check_governor_deadband(
            self.governor_deadband_hz, flag["governor_deadband_hz"]))
        from gridswarm_env.config import EnvConfig

        config, file = env_config_source(self.env_config)
        if config is not None and not isinstance(config, EnvConfig):
            raise ValueError(f"env_config {self.env_config!r}: expected a "
                             "gridswarm_env.config.EnvConfig, or None for the defaults "
                             "(or a policies.cli_checks.EnvConfigFile: a config file read)")
        object.__setattr__(self, "env_config", config)
        object.__setattr__(self, "_config_file", file)   # not a field: run records it
        if self.env_config is not None and self.env_config.audit_path is not None:
            raise ValueError(f"env_config.audit_path = {self.env_config.audit_path!r}: give "
                             f"the audit file as {flag['audit_path']} FILE (audit_path)")
        if self.trust not in TRUST_MODES:
            raise ValueError(f"{flag['trust']} {self.trust!r}: expected one of "
                             f"{', '.join(TRUST_MODES)}")
        if not isinstance(self.policy, str) or not self.policy:
            raise ValueError(f"{flag['policy']} {self.policy!r}: expected a policy name "
                             "(heuristic, random, learned, oracle) or a model path")
        from policies import policy_names

        if self.policy not in policy_names():   # a model path, as --json and --limits
            check_path_names(self.policy, flag["policy"])
        from policies.cli_checks import check_output_file

        if self.overwrite and self.json_path is None:
            raise ValueError(f"{flag['overwrite']}: only with {flag['json_path']} FILE (it "
                             f"lets {flag['json_path']} replace an existing file; the audit "
                             "trail is never overwritten)")
        if self.json_path is not None:
            check_path_names(self.json_path, flag["json_path"])
            self._check_json_is_no_input(self.json_path)
            check_output_file(self.json_path, flag["json_path"],
                              overwrite=self.overwrite or is_demo_json(self.json_path))
        if self.audit_path is not None:
            from gridswarm_env.trust import check_new_audit_file

            check_output_file(self.audit_path, flag["audit_path"])
            check_new_audit_file(self.audit_path, flag["audit_path"])
        if (self.json_path is not None and self.audit_path is not None
                and Path(self.json_path).resolve() == Path(self.audit_path).resolve()):
            raise ValueError(f"--audit {self.audit_path!r}: the same file as --json; give "
                             "them different paths")

    def _check_json_is_no_input(self, json_path: str) -> None:
        """Refuse a ``json_path`` that is the limits file, the policy's model file (a
        model path, its ``.zip`` sibling, or the shipped model for ``learned``) or that
        model's training record (``<model>.json``), even with ``overwrite``: they are
        inputs."""
        from policies.learned import DEFAULT_MODEL  # no torch import

        models = ([DEFAULT_MODEL] if self.policy == "learned"
                  else [Path(self.policy), Path(f"{self.policy}.zip")])
        inputs = [("limits_path", "file", self.limits_path)]
        if self.played_scenario is not self.scenario:
            inputs.append(("scenario", "scenario file", self.scenario))
        inputs += [("policy", "model file", m) for m in models]
        inputs += [("policy", "model's training record", m.with_suffix(".json"))
                   for m in models]
        out = Path(json_path)
        for name, what, path in inputs:
            if (path is not None and out.exists() and Path(path).is_file()
                    and os.path.samefile(out, path)):
                raise ValueError(f"{OPTION_FLAGS['json_path']} {json_path!r} is the "
                                 f"{OPTION_FLAGS[name]} {what}, an input of the run: it is "
                                 "never overwritten; choose another path")


# ---------------------------------------------------------------------- command line
def _speed(text: str) -> float:
    """argparse ``type`` of ``--speed`` (:func:`check_speed`)."""
    try:
        return check_speed(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {SPEED_ALLOWED}, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``demo.py`` argument parser."""
    from gridswarm_env import scenario_names
    from gridswarm_env.config import AGENT_LIMIT_WHY, MAX_AGENTS
    from gridswarm_env.scenarios import randomize_text
    from gridswarm_env.trust import TRUST_MODES

    p = OneLineParser(
        prog="demo.py", description="Live grid dashboard: DER agents balance the grid through "
        "a market, a message bus and signed contracts.")
    p.add_argument("--agents", type=int_flag_type("--agents", 1, MAX_AGENTS, AGENT_LIMIT_WHY),
                   default=None, metavar="N",
                   help=f"number of DER agents, 1 to {MAX_AGENTS:,} (default: 100, or "
                        "--config's n_agents)")
    p.add_argument("--scenario", default="price_spike", metavar="S|FILE.toml",
                   help=f"scenario: {', '.join(scenario_names())}, or a scenario file "
                        "FILE.toml (base = \"<name>\" plus the fields it changes) (default: "
                        "price_spike)")
    p.add_argument("--policy", default="heuristic", metavar="NAME|PATH",
                   help="heuristic, random, learned, oracle or a model path "
                        "(default: heuristic)")
    p.add_argument("--seed", type=int_flag_type("--seed", 0), default=0, metavar="N",
                   help="episode seed (default: 0)")
    shadow = p.add_mutually_exclusive_group()
    shadow.add_argument("--shadow", action="store_const", const=True, default=None,
                        help="shadow mode: run market, contracts and kernel, dispatch "
                             "nothing (also: shadow = true in --config)")
    shadow.add_argument("--no-shadow", dest="shadow", action="store_const", const=False,
                        help="dispatch (the default; overrides shadow = true in --config)")
    p.add_argument("--steps", type=int_flag_type("--steps", 1), default=None, metavar="N",
                   help="stop after N steps (default: the whole episode)")
    p.add_argument("--no-live", action="store_true",
                   help="plain lines instead of the live dashboard (automatic when stdout "
                        "is not a terminal)")
    p.add_argument("--speed", type=_speed, default=None, metavar="X",
                   help="simulated seconds per wall-clock second, 0 = as fast as possible "
                        f"(default: {LIVE_SPEED:g} with the live dashboard, 0 with plain "
                        "lines); the episode is the same at any speed")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="write per-step records and final KPIs as JSON (an existing file "
                        "that is not empty is refused unless --overwrite, except an "
                        "earlier demo.py --json output, which is replaced)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --json replace an existing file (never the --limits or "
                        "--policy file)")
    p.add_argument("--limits", default=None, metavar="FILE",
                   help="kernel limits TOML file (default: the built-in limits)")
    p.add_argument("--trust", choices=TRUST_MODES, default=None,
                   help="contract signatures (default: ed25519, or --config's trust; hmac "
                        "is faster)")
    p.add_argument("--audit", default=None, metavar="FILE",
                   help="stream the audit hash chain to FILE (JSONL) and print how to verify "
                        "it; with ed25519 it ends with a signed closing head (also on "
                        "Ctrl-C)")
    add_crypto_threads_argument(p, "the episode is the same")
    p.add_argument("--randomize", action="store_true",
                   help="randomize the scenario " + randomize_text().replace("%", "%%"))
    add_contract_keys_argument(p)
    add_governor_deadband_argument(p, "the episode")
    add_config_argument(p, "the episode (audit_path refused: use --audit)")
    return p


def options_from_args(args: argparse.Namespace, is_terminal: bool) -> DemoOptions:
    """Parsed arguments → :class:`DemoOptions` (live only on a terminal without --no-live;
    the ``EnvConfig`` fields from ``--config FILE``, read here once, with the flags given
    over it: :func:`~policies.cli_checks.env_config_file_from_args`; the file's path and
    SHA-256 are handed on with it, as an :class:`~policies.cli_checks.EnvConfigFile`).

    :raises ValueError: the config file's refusal (naming the file) or a bad option.
    """
    given = env_config_file_from_args(args)
    config = env_config_source(given)[0]
    return DemoOptions(n_agents=config.n_agents, scenario=args.scenario, policy=args.policy,
                       seed=args.seed, shadow=config.shadow, max_steps=args.steps,
                       live=is_terminal and not args.no_live, json_path=args.json,
                       limits_path=args.limits, trust=config.trust, audit_path=args.audit,
                       crypto_threads=config.crypto_threads, randomize=args.randomize,
                       contract_keys=config.contract_keys, overwrite=args.overwrite,
                       speed=args.speed,
                       governor_deadband_hz=config.grid.governor_deadband_hz,
                       env_config=None if args.config is None else given)


# ---------------------------------------------------------------------- session
def default_model_path() -> Path | None:
    """The shipped model ``--policy learned`` loads (``policies.learned.DEFAULT_MODEL``),
    or None when ``policies/learned.py`` is not installed."""
    try:
        from policies import learned
    except ModuleNotFoundError:
        return None
    return Path(learned.DEFAULT_MODEL)


def build_policy(name_or_path: str):
    """:func:`policies.make_policy` with user-facing errors.

    :raises DemoError: unknown name, missing or unreadable model, or a policy module
        that is not installed yet.
    """
    from policies import make_policy

    if name_or_path == "learned":
        model = default_model_path()
        if model is not None and not model.is_file():
            raise DemoError(f"no pretrained model at {model}; train one with python -m train "
                            f"(or pass --policy PATH to a saved model)")
    try:
        return make_policy(name_or_path)
    except ModuleNotFoundError as exc:
        from policies.cli_checks import missing_package_message

        raise DemoError(missing_package_message(name_or_path, exc)) from None
    except ValueError as exc:   # an unknown name, a missing or unusable model
        raise DemoError(f"--policy: {exc}") from None
    except (OSError, RuntimeError, KeyError, EOFError) as exc:   # model loaders' own errors
        raise DemoError(f"--policy: could not load policy {name_or_path!r}: "
                        f"{type(exc).__name__}: {exc}") from None


def planning_notice(policy: Any, raw: Any) -> str | None:
    """A status line for a policy that plans the whole episode at reset (``oracle``: one
    LP over every agent and step, :mod:`policies.oracle`), so a long wait before the
    first step does not look like a hang; None for the other policies.

    The line gives rough orders only; the measured planning times are in
    :mod:`policies.oracle` (*Scale*).
    """
    if getattr(policy, "name", None) != "oracle":
        return None
    n, k = raw.n_agents, raw.scenario.episode_steps
    agents = f"{n:,} agent" + ("" if n == 1 else "s")
    return (f"oracle: planning the episode (LP, {agents} × {k} steps; on 2 cores about "
            "a second at 100 agents, under a minute to several at 1 000; again, shorter, "
            "when it re-plans)…")


def steps_notice(max_steps: int | None, raw: Any) -> str | None:
    """A one-line note when ``--steps N`` asks for more steps than the episode has (it
    ends after its own ``episode_steps``: ``--steps`` only cuts an episode short); None
    otherwise."""
    n = raw.scenario.episode_steps
    if max_steps is None or max_steps <= n:
        return None
    return (f"demo.py: note: {OPTION_FLAGS['max_steps']} {max_steps}: the "
            f"{raw.scenario.name} episode ends after {n} steps")


def model_path(policy: Any) -> str | None:
    """The model file a learned policy loaded (None for other policies or a model in
    memory): shown next to the policy name, as two models are both ``learned``."""
    path = getattr(policy, "path", None)
    return None if path is None else str(path)


def policy_label(policy: Any) -> str:
    """``"learned (model PATH)"`` for a policy loaded from a file, else its name."""
    return label_of(policy.name, model_path(policy))


def label_of(name: str, path: str | None) -> str:
    """:func:`policy_label` from a policy's name and model path (None: not from a file),
    e.g. as a run record stores them."""
    return name if path is None else f"{name} (model {path})"


@dataclass
class Session:
    """An environment and a policy, reset and ready (see :func:`open_session`);
    ``limits_sha256`` is the SHA-256 of the ``--limits`` file's bytes parsed (None
    without one)."""

    options: DemoOptions
    env: Any
    policy: Any
    limits_sha256: str | None = None

    @property
    def raw(self):
        return self.env.unwrapped


def episode_config(options: DemoOptions) -> Any:
    """The episode's :class:`~gridswarm_env.config.EnvConfig`: ``options.env_config`` (the
    defaults without one) with the options that are its fields applied over it
    (:func:`~policies.cli_checks.env_config_with`, as the command line's flags are)."""
    from gridswarm_env.config import EnvConfig

    base = EnvConfig() if options.env_config is None else options.env_config
    return env_config_with(base, {name: getattr(options, name) for name in FLAG_SETTINGS})


def settings_text(config: Any) -> str | None:
    """``"grid.inertia_h_s = 3.0 (4.0), ..."``: the settings of ``config`` other than the
    defaults and than what the KPI summary names anyway (agents, trust, shadow, the
    deadband, and the run-time settings crypto threads and contract keys); None when
    there are none."""
    from gridswarm_env.config_file import settings_changed

    changes = settings_changed(config, named=(
        "n_agents", "trust", "shadow", "crypto_threads", "contract_keys",
        "grid.governor_deadband_hz"))
    return ", ".join(changes) if changes else None


def open_session(options: DemoOptions) -> Session:
    """Build the policy and the environment and reset both once with ``options.seed``.

    The limits file is checked against the fleet's agent names before the environment
    (and its audit file) exists; the reset here validates what only a reset can check
    (a learned model matches the spaces) before anything is drawn. If that fails, or
    on Ctrl-C, the environment is closed and an audit file it created is removed (one
    that existed gets its old content back).

    :raises DemoError: with a readable message for every user error.
    """
    import gridswarm_env
    from gridswarm_env.scenarios import randomized
    from policies.cli_checks import read_limits_agents

    config = episode_config(options)
    try:   # the agents of this fleet (its kind shares name them)
        limits, limits_sha = read_limits_agents(options.limits_path, options.n_agents,
                                                config.fleet)
    except ValueError as exc:
        raise DemoError(str(exc)) from None
    policy = build_policy(options.policy)
    audit = Path(options.audit_path) if options.audit_path is not None else None
    audit_existed = audit is not None and audit.exists()
    # the environment creates the file, or writes into an existing empty one (it refuses
    # any other): keep the old content until the session is up, to put it back if
    # setting up fails
    previous = audit.read_bytes() if audit_existed and audit.is_file() else None
    env = None
    try:
        env = gridswarm_env.parallel_env(
            scenario=(randomized(options.played_scenario) if options.randomize
                      else options.played_scenario),
            n_agents=options.n_agents, trust=options.trust,
            shadow=options.shadow, limits=limits, audit_path=options.audit_path,
            config=config)
        env.reset(seed=options.seed)
        raw = env.unwrapped
        if hasattr(policy, "check_action_levels"):   # a model of other levels: name the flag
            try:
                policy.check_action_levels(raw.action_space(raw.possible_agents[0]).nvec)
            except ValueError as exc:
                raise DemoError(f"--policy: {exc}") from None
            from policies.learned import trained_settings_note

            note = trained_settings_note(policy, options.n_agents, [options.played_scenario],
                                         options.randomize, config)
            if note is not None:   # the command line shows "demo.py: note: ..."
                warnings.warn(note, Note, stacklevel=2)
        notice = planning_notice(policy, raw)
        if notice is not None:
            print(notice, file=sys.stderr, flush=True)
        policy.reset(raw, seed=options.seed)
    except (ValueError, KeyboardInterrupt) as exc:
        if env is not None:
            env.close()
        # only a file this environment opened is undone: one that appeared after the
        # check above (another writer) made building the environment fail, and is kept
        if audit is not None and env is not None and not audit_existed:
            audit.unlink(missing_ok=True)
        elif audit is not None and env is not None and previous is not None:
            audit.write_bytes(previous)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise DemoError(str(exc)) from None
    return Session(options=options, env=env, policy=policy, limits_sha256=limits_sha)


class RecordingPolicy:
    """Wraps a policy and keeps what :func:`measure_step` needs from just before a step.

    It does not change the actions. Besides the policy's inputs and outputs it keeps
    two environment arrays for display (energy contracts for the window about to run,
    reserve awarded so far); the wrapped policy still sees only its observations.
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.name = policy.name
        self.raw: Any = None
        self.obs: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.actions: np.ndarray | None = None
        self.scheduled_mw: np.ndarray | None = None
        self.reserve_awarded_mw: np.ndarray | None = None

    def reset(self, env: Any, seed: int | None = None) -> None:
        self.raw = env
        self.policy.reset(env, seed=seed)

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        actions = np.asarray(self.policy.act(obs, mask))
        self.obs, self.mask, self.actions = obs, mask, actions
        self.scheduled_mw = self.raw.scheduled_p_mw.copy()
        self.reserve_awarded_mw = self.raw.reserve_awarded_mw.copy()
        return actions


# ---------------------------------------------------------------------- measuring a step
def offered_power_mw(raw: Any, obs: np.ndarray, mask: np.ndarray,
                     power_level: np.ndarray) -> np.ndarray:
    """The bid power (MW) each agent published: its power level after the kernel.

    Same rule as the env (:meth:`Kernel.enforce`: nearest feasible level, clipped to
    the feasible interval), with the interval read from the observation columns
    ``feasible_lo_rel``/``feasible_hi_rel`` x rated power.
    """
    from gridswarm_env.env import OBS_FIELDS

    rated = raw.fleet.rated_power_mw
    lo = obs[:, OBS_FIELDS.index("feasible_lo_rel")].astype(float) * rated
    hi = obs[:, OBS_FIELDS.index("feasible_hi_rel")].astype(float) * rated
    n_power = raw.config.market.n_power_levels
    _, power_mw, _ = raw.kernel.enforce(np.asarray(power_level, dtype=np.int64),
                                        mask[:, :n_power].astype(bool), lo, hi)
    return power_mw


def offer_lines(raw: Any, rec: RecordingPolicy, product: str, limit: int) -> list[str]:
    """Up to ``limit`` accepted bids of the round just cleared, in merit order.

    Accepted power per agent: energy contracts delivered to the agents this step
    (``raw.awarded_next``) or, in a reserve round, the increase of
    ``raw.reserve_awarded_mw``. Offered power is :func:`offered_power_mw`, the price is
    the agent's bid price (contracts settle at the uniform clearing price).
    """
    if limit <= 0 or rec.actions is None:
        return []
    if product == "reserve":
        awarded = raw.reserve_awarded_mw - rec.reserve_awarded_mw
    else:
        awarded = raw.awarded_next
    idx = np.flatnonzero(np.abs(awarded) > _EPS_MW)
    if not idx.size:
        return []
    bid_price = raw.price_levels_per_mwh[rec.actions[idx, 1]]
    # shortage / reserve: cheapest offers first; surplus: highest price (least compensation)
    order = np.argsort(bid_price if awarded[idx].sum() > 0 else -bid_price, kind="stable")
    idx, bid_price = idx[order][:limit], bid_price[order][:limit]
    offered = offered_power_mw(raw, rec.obs, rec.mask, rec.actions[:, 0])
    lines = []
    for i, price in zip(idx.tolist(), bid_price.tolist(), strict=True):
        name, got, bid = raw.possible_agents[i], float(awarded[i]), float(offered[i])
        partial = f", {abs(got):.2f} MW accepted" if abs(abs(got) - abs(bid)) > 5e-3 else ""
        if product == "reserve":
            lines.append(f"{name} offers {bid:.2f} MW of reserve at ${price:.0f}/MWh{partial}")
        elif got > 0:
            lines.append(f"{name} offers {bid:.2f} MW at ${price:.0f}/MWh{partial}")
        else:
            lines.append(f"{name} bids to absorb {abs(bid):.2f} MW at ${price:.0f}/MWh{partial}")
    return lines


def measure_step(raw: Any, info: Mapping[str, Any], rec: RecordingPolicy,
                 metrics: Mapping[str, Any], prev_metrics: Mapping[str, Any] | None,
                 wall_s: float, offers_per_step: int = 3) -> dict[str, Any]:
    """One step's JSON-ready record (see the module docstring for the fields).

    :param raw: the unwrapped environment, just after ``step_arrays``.
    :param info: the step's ``raw.last_info``.
    :param rec: the recording policy that chose the step's actions.
    :param metrics: ``raw.episode_metrics()`` after the step.
    :param prev_metrics: the same before the step (None on the first step).
    :param wall_s: wall-clock seconds since the run started.
    :param offers_per_step: accepted bids listed in ``offers``.
    """
    sc = raw.scenario
    out: dict[str, Any] = {k: info[k] for k in INFO_KEYS if k in info}
    t = float(info["t_s"])
    out["grid_load_mw"] = sc.base_load_mw + float(sc.forecast_shortage_mw(t))
    out["lost_generation_mw"] = float(sc.lost_generation_mw(t))
    out["price_signal_per_mwh"] = float(raw.round_price_signal_per_mwh)
    out["ders_active"] = int(np.count_nonzero(np.abs(raw.last_p_mw) > _EPS_MW))
    reserve_on = np.isfinite(raw.activation_s) & (raw.reserve_mw > _EPS_MW)
    scheduled = rec.scheduled_mw if rec.scheduled_mw is not None else np.zeros(raw.n_agents)
    out["ders_contracted"] = int(np.count_nonzero((np.abs(scheduled) > _EPS_MW) | reserve_on))
    out["offers"] = offer_lines(raw, rec, str(info.get("product", "energy")), offers_per_step)
    for key in ("contracts_signed", "contracts_rejected"):
        before = prev_metrics.get(key, 0) if prev_metrics else 0
        out[key] = int(metrics[key]) - int(before)
        out[f"{key}_total"] = int(metrics[key])
    out["wall_s"] = wall_s
    return out


def plain_line(record: Mapping[str, Any]) -> str:
    """One plain text line per step: t, f, requirement, request, delivered, price,
    contracts, blocked, e.g. (``emergency``, after the trip)::

        t=   12.0s f= 59.9944Hz need=+100.00MW request=  +0.00MW deliv=+100.00MW ...

    ``need=`` is the grid's balancing requirement over the step (``requirement_mw``: the
    shortage plus lost generation; the dashboard's "requirement"), ``request=`` what the
    operator asked the market for in the round cleared this step (``request_mw``; the
    dashboard's "request"): after a trip the activated reserve covers the need and the
    request is what remains, so a request of 0 beside 100 MW delivered is no
    over-delivery. In shadow mode nothing is delivered, so the line shows instead the
    power the step would have dispatched, labelled ``would-deliv=``
    (``would_dispatch_mw``).
    """
    price = record.get("clearing_price_per_mwh")
    price_s = "      -" if price is None or math.isnan(price) else f"{price:7.1f}"
    if record.get("shadow"):
        deliv = f"would-deliv={record['would_dispatch_mw']:+7.2f}MW"
    else:
        deliv = f"deliv={record['delivered_mw']:+7.2f}MW"
    return (f"t={record['t_s']:7.1f}s f={record['freq_hz']:8.4f}Hz "
            f"need={record['requirement_mw']:+7.2f}MW request={record['request_mw']:+7.2f}MW "
            f"{deliv} "
            f"price={price_s}$/MWh contracts={record['contracts_signed']:4d} "
            f"blocked={record['blocked']:4d}" + (" [SHADOW]" if record.get("shadow") else ""))


def event_lines(record: Mapping[str, Any]) -> list[str]:
    """The step's market events and accepted offers as indented plain lines."""
    t = record["t_s"]
    return [f"  [{t:7.1f} s] {e}" for e in [*record.get("events", []), *record.get("offers", [])]]


# ---------------------------------------------------------------------- JSON
def strict_json(value: Any) -> Any:
    """``value`` made strict-JSON-safe (:func:`gridswarm_env.metrics.json_safe`)."""
    from gridswarm_env.metrics import json_safe  # lazy: bad flags fail fast

    return json_safe(value)


#: the largest earlier ``--json`` output :func:`is_demo_json` reads to recognize it
DEMO_JSON_MAX_BYTES = 256 * 2**20


def is_demo_json(path: str | Path) -> bool:
    """Whether ``path`` holds an earlier ``demo.py --json`` output (a regular file of at
    most :data:`DEMO_JSON_MAX_BYTES` whose JSON is an object with ``run``, ``steps`` and
    ``metrics``): a re-run may replace its own output without ``--overwrite``, as
    evaluate.py replaces its own files; anything else is refused (README.md, a limits
    file, someone's notes)."""
    doc = read_earlier_json(path, DEMO_JSON_MAX_BYTES)
    return isinstance(doc, dict) and {"run", "steps", "metrics"} <= doc.keys()


def write_json(path: str | Path, run: Mapping[str, Any], steps: Sequence[Mapping[str, Any]],
               metrics: Mapping[str, Any], audit: Mapping[str, Any] | None = None,
               overwrite: bool = False) -> None:
    """Write ``{"run", "steps", "metrics"}`` (and ``"audit"`` when given) as strict JSON
    (``allow_nan=False``).

    :param overwrite: replace a file at ``path``; else only a new or an empty file (or a
        device) is written, and a file that is not empty is kept
        (:func:`~policies.cli_checks.write_output_text`).
    :raises FileExistsError: a non-empty file is at ``path`` and ``overwrite`` is False.
    """
    doc = {"run": run, "steps": list(steps), "metrics": metrics}
    if audit is not None:
        doc["audit"] = audit
    text = json.dumps(strict_json(doc), allow_nan=False, indent=1) + "\n"
    write_output_text(path, text, overwrite=overwrite)


def audit_info(session: Session) -> dict[str, Any] | None:
    """``{"path", "operator_public_key"}`` of the run's audit file (the key is None with
    hmac trust), or None without ``--audit``."""
    path = session.options.audit_path
    if path is None:
        return None
    return {"path": path, "operator_public_key": session.raw.operator_public_key_hex()}


def audit_hint(info: Mapping[str, Any]) -> str:
    """One line: where the audit chain is and the command that verifies it."""
    import shlex

    path, key = str(info["path"]), info["operator_public_key"]
    verify = f"python -m gridswarm_env.audit verify {shlex.quote(path)}"
    if key is not None:
        return f"audit chain: {path} (verify: {verify} --public-key {key})"
    return (f"audit chain: {path} (verify: {verify}; hmac trust: the head is unsigned, so an "
            "edit with recomputed hashes or a cut tail is detectable only in process)")


# ---------------------------------------------------------------------- the run
@dataclass
class DemoResult:
    """What a run produced."""

    steps: list[dict[str, Any]]
    metrics: dict[str, Any]
    # None (episode or --steps done), "interrupted" (Ctrl-C), "terminated" (SIGTERM),
    # "stdout closed"
    stop_reason: str | None
    wall_s: float
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        """True when the run stopped early for Ctrl-C, SIGTERM or a closed stdout."""
        return self.stop_reason is not None


def run_demo(session: Session, console: Any = None,
             write: Callable[[str], None] | None = None) -> DemoResult:
    """Run the episode, showing it live or as plain lines; Ctrl-C stops it cleanly.

    Paced at ``options.pace_speed`` (:func:`sleep_until`): after step k the run sleeps
    until ``start + k * dt_s / speed``, then shows the step. The rates (the dashboard's
    negotiations/s, ``agent_steps_per_s``) are measured on the wall clock less those
    waits, so pacing changes neither the episode nor them.

    :param session: from :func:`open_session`.
    :param console: a ``rich.console.Console`` for the live view (built if None).
    :param write: sink for plain lines (default: stdout, flushed per line).
    :returns: the per-step records, the final KPIs and whether it was interrupted.
    """
    from rich.console import Console
    from rich.live import Live

    from dashboard import Dashboard
    from gridswarm_env.config_file import env_config_record, env_config_toml
    from policies.rollout import run_episode

    opts, raw = session.options, session.raw
    console = console or Console()
    write = write or _stdout_line
    rec = RecordingPolicy(session.policy)
    steps: list[dict[str, Any]] = []
    inputs = {"limits_path": opts.limits_path, "limits_sha256": session.limits_sha256,
              # the --config file: its path as given and the SHA-256 of the bytes read
              "env_config_file": (opts.config_file or {}).get("path"),
              "env_config_sha256": (opts.config_file or {}).get("sha256"),
              **scenario_file_record(opts)}
    dash = Dashboard({"scenario": scenario_label(raw), "n_agents": raw.n_agents,
                      "files": [label for _, label in input_files(inputs)],
                      "policy": policy_label(session.policy), "trust": raw.config.trust,
                      "seed": opts.seed, "shadow": raw.config.shadow,
                      "episode_steps": raw.scenario.episode_steps, "dt_s": raw.config.dt_s,
                      "has_event": raw.scenario.has_event, "paced": opts.pace_speed > 0, "speed": opts.pace_speed})
    state: dict[str, Any] = {"prev": None, "refresh_at": 0.0, "live": None, "waited": 0.0}
    step_wall_s = raw.config.dt_s / opts.pace_speed if opts.pace_speed > 0 else 0.0
    start = time.perf_counter()

    def on_step(env: Any, info: dict[str, Any]) -> None:
        metrics = env.episode_metrics()
        wall = time.perf_counter() - start
        busy = wall - state["waited"]
        record = measure_step(env, info, rec, metrics, state["prev"], wall, opts.offers_per_step)
        state["prev"] = metrics
        steps.append(record)
        if step_wall_s:
            paused = time.perf_counter()
            try:
                sleep_until(start + len(steps) * step_wall_s)
            finally:   # also when Ctrl-C ends the sleep
                state["waited"] += time.perf_counter() - paused
        if state["live"] is None:
            write(plain_line(record))
            for line in event_lines(record):
                write(line)
            return
        dash.update(record, metrics, env.bus.stats(), clock_s=busy)
        now = time.perf_counter() - start
        if now >= state["refresh_at"]:
            state["live"].refresh()
            # at most ~12 frames/s, and drawing at most ~1/4 of the wall clock
            drawn = time.perf_counter() - start
            state["refresh_at"] = drawn + max(REFRESH_INTERVAL_S, 3.0 * (drawn - now))

    stop: str | None = None
    try:
        if opts.live:
            with Live(dash, console=console, auto_refresh=False, transient=False) as live:
                state["live"] = live
                try:
                    run_episode(session.env, rec, seed=opts.seed, max_steps=opts.max_steps,
                                on_step=on_step, reset_env=False)
                except KeyboardInterrupt as exc:   # Ctrl-C, or Terminated (SIGTERM)
                    stop = stop_reason(exc)
                dash.status = stop or "finished"
                live.refresh()
        else:
            run_episode(session.env, rec, seed=opts.seed, max_steps=opts.max_steps,
                        on_step=on_step, reset_env=False)
    except KeyboardInterrupt as exc:
        stop = stop_reason(exc)
    except BrokenPipeError:   # the reader of stdout went away (e.g. `| head`)
        stop = "stdout closed"
    wall = time.perf_counter() - start
    busy = wall - state["waited"]
    metrics = raw.episode_metrics()
    run = {**asdict(opts), "speed": opts.pace_speed, "policy_name": session.policy.name,
           "model_path": model_path(session.policy), "steps_run": len(steps),
           "episode_steps": raw.scenario.episode_steps, "interrupted": stop is not None,
           "stop_reason": stop, "wall_s": wall, "paced_wait_s": state["waited"],
           "agent_steps_per_s": len(steps) * raw.n_agents / busy if busy > 0 else None,
           "settings_changed": settings_text(raw.config),
           "env_config_toml": env_config_toml(raw.config),   # lossless (JSON: inf -> null)
           # what ran: the options that are EnvConfig fields replace env_config's
           "env_config": (None if opts.env_config is None
                          else env_config_record(episode_config(opts))),
           **({"scenario_drawn": raw.scenario.drawn_values()} if opts.randomize else {}),
           **inputs}
    return DemoResult(steps=steps, metrics=metrics, stop_reason=stop, wall_s=wall, run=run)


def stop_reason(exc: KeyboardInterrupt) -> str:
    """``"terminated"`` for SIGTERM (:class:`~policies.cli_checks.Terminated`), else
    ``"interrupted"`` (Ctrl-C)."""
    from policies.cli_checks import Terminated

    return "terminated" if isinstance(exc, Terminated) else "interrupted"


def stop_status(exc: KeyboardInterrupt) -> int:
    """The exit status of a run stopped by ``exc``: 143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_TERMINATED if stop_reason(exc) == "terminated" else EXIT_INTERRUPTED


def scenario_file_record(opts: DemoOptions) -> dict[str, Any]:
    """What ``--json``'s ``run`` records of a scenario file (nothing for a registered
    name): ``scenario`` its name, ``scenario_file`` the path, ``scenario_file_sha256`` the
    SHA-256 of the bytes read and ``custom_scenario`` the fields read
    (:func:`~gridswarm_env.scenarios.scenario_record`, as ``evaluate.py``'s
    ``summary.config.custom_scenarios`` and ``python -m train``'s record write them;
    :func:`~gridswarm_env.scenarios.scenario_from_record` rebuilds the scenario)."""
    from gridswarm_env.scenarios import scenario_record

    file = getattr(opts, "_scenario_file", None)
    if file is None:
        return {}
    return {"scenario": file.scenario.name, "scenario_file": opts.scenario,
            "scenario_file_sha256": file.sha256,
            "custom_scenario": scenario_record(file.scenario)}


def sleep_until(deadline: float) -> None:
    """Sleep until ``deadline`` (a ``time.perf_counter()`` value) if it is ahead (one
    ``time.sleep``, no busy wait); a late step is not waited for."""
    delay = deadline - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def scenario_label(raw: Any) -> str:
    """The dashboard's scenario: its name, and the draw when it is randomized."""
    from gridswarm_env.scenarios import drawn_text

    if not raw.base_scenario.randomized:
        return raw.scenario.name
    return f"{raw.scenario.name} randomized ({drawn_text(raw.scenario.drawn_values())})"


def _stdout_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def print_summary(result: DemoResult, console: Any) -> None:
    """The KPI summary table and the run's wall-clock figures."""
    from dashboard import summary_table
    from gridswarm_env.scenarios import drawn_text

    r = result.run
    state = {None: "ran", "terminated": "terminated (SIGTERM) after"}.get(
        result.stop_reason, "interrupted after")
    policy = label_of(r["policy_name"], r.get("model_path"))
    drawn = r.get("scenario_drawn")
    files = dict(input_files(r))
    scenario = r["scenario"] + (f" from {files['scenario file']}"
                                if "scenario file" in files else "")
    if drawn is not None:
        scenario += f" randomized ({drawn_text(drawn)})"
    console.print(f"KPI summary: {scenario}, {r['n_agents']} agents, policy "
                  f"{policy}, seed {r['seed']}, trust {r['trust']}"
                  + (f", governor deadband ±{r['governor_deadband_hz']:g} Hz"
                     if r.get("governor_deadband_hz") else "")
                  + "".join(f", {files[what]}" for what in ("config file", "limits file")
                            if what in files)
                  + (f", settings (defaults in parentheses): {r['settings_changed']}"
                     if r.get("settings_changed") else "")
                  + (", SHADOW mode (nothing dispatched)" if r["shadow"] else ""),
                  markup=False, highlight=False, soft_wrap=True)
    console.print(summary_table(result.metrics))
    if r["shadow"]:
        console.print(shadow_summary(result.metrics), markup=False, highlight=False,
                      soft_wrap=True)
    line = f"{state} {r['steps_run']}/{r['episode_steps']} steps"
    waited = r.get("paced_wait_s") or 0.0
    busy = result.wall_s - waited
    if busy > 0:
        negotiations = result.metrics.get("negotiations", 0) / busy
        paced = (f", {waited:.2f} s of it waiting for --speed {r['speed']:g} (without the "
                 "waits: " if waited > 0 else " (")
        line += (f" in {result.wall_s:.2f} s wall clock{paced}{r['agent_steps_per_s']:,.0f} "
                 f"agent-steps/s, {negotiations:,.0f} negotiations/s)")
    console.print(line, markup=False, highlight=False, soft_wrap=True)   # one line, piped too


def shadow_summary(metrics: Mapping[str, Any]) -> str:
    """Shadow mode's would-be figures, which the KPI table cannot show (nothing was
    dispatched, so its emergency latency is "— (none)" and its reserve 0): the latency
    of the first reserve activation that would have come after the event
    (``shadow_response_latency_ms``) and the energy that would have been dispatched
    (``shadow_dispatch_energy_mwh``)."""
    latency = metrics.get("shadow_response_latency_ms")
    energy = metrics.get("shadow_dispatch_energy_mwh")
    latency_s = ("— (no event, or no reserve would have been activated)" if latency is None
                 else f"{latency:.1f} ms")
    energy_s = "—" if energy is None else f"{energy:.4f} MWh"
    return (f"SHADOW mode, would-be (nothing was dispatched): emergency response latency "
            f"{latency_s}; energy that would have been dispatched {energy_s}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0; 1 stdout closed or the JSON
    saved elsewhere; 2 bad input; 130 Ctrl-C; 143 SIGTERM, handled as Ctrl-C is).
    Warnings are one line each,
    ``demo.py: warning: ...`` (:func:`policies.cli_checks.one_line_warnings`)."""
    from policies.cli_checks import one_line_warnings

    with one_line_warnings("demo.py"), sigterm_as_interrupt():
        try:
            return _main(argv)
        except KeyboardInterrupt as exc:   # while loading modules or parsing, before any work
            print(f"demo.py: {stop_reason(exc)} before the episode started", file=sys.stderr)
            return stop_status(exc)


def _main(argv: Sequence[str] | None) -> int:
    from rich.console import Console

    args = build_parser().parse_args(argv)   # argparse prints usage + message, exits 2
    console = Console()
    try:
        options = options_from_args(args, is_terminal=sys.stdout.isatty())
        session = open_session(options)
    except ValueError as exc:
        print(f"demo.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"demo.py: {stop_reason(exc)} before the episode started", file=sys.stderr)
        return stop_status(exc)
    notice = steps_notice(options.max_steps, session.raw)
    if notice is not None:
        print(notice, file=sys.stderr, flush=True)
    try:
        result = run_demo(session, console=console)
    except KeyboardInterrupt as exc:   # outside the episode loop (run_demo handles it inside)
        with stop_signals_ignored():
            session.env.close()   # signs the audit file's closing head (ed25519)
        print(f"demo.py: {stop_reason(exc)}", file=sys.stderr)
        return stop_status(exc)
    failed = False
    late: KeyboardInterrupt | None = None
    try:
        # a Ctrl-C or SIGTERM while the summary and the JSON are written is held back
        # until they are, then acts (evaluate.py does the same with its outputs)
        with stop_signals_deferred():
            failed = write_outputs(result, session, options, console)
    except KeyboardInterrupt as exc:   # held back; raised as the handlers were put back
        late = exc
    if late is not None and not result.interrupted:   # a stopped run ends anyway
        what = "the summary and the JSON were" if options.json_path else "the summary was"
        done = ("the JSON could not be written where asked (see above)" if failed
                else "they were written in full" if options.json_path
                else "it was printed in full")
        print(f"demo.py: {stop_reason(late)} after its last step, while {what} written; "
              f"{done}", file=sys.stderr)
        return stop_status(late)
    if result.stop_reason == "stdout closed":
        return EXIT_STDOUT_CLOSED
    if result.stop_reason == "terminated":
        return EXIT_TERMINATED
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OUTPUT_FAILED if failed else EXIT_OK


def write_outputs(result: DemoResult, session: Any, options: DemoOptions,
                  console: Any) -> bool:
    """Close the environment (signs the audit file's closing head), print the summary,
    write the JSON and print the audit hint; True when the JSON could not be written
    where asked (the message is printed)."""
    from policies.cli_checks import write_or_rescue

    failed = False
    session.env.close()   # signs the closing audit head (ed25519), flushes the file
    audit = audit_info(session)
    if result.stop_reason == "stdout closed":
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    else:
        print_summary(result, console)
    if options.json_path is not None:
        written, problem = write_or_rescue(
            options.json_path, lambda p: write_json(p, result.run, result.steps,
                                                    result.metrics, audit,
                                                    options.overwrite
                                                    or is_demo_json(p)), "the JSON")
        if problem is not None:
            print(f"demo.py: error: {problem}", file=sys.stderr)
            failed = True
        if written is not None:
            console.print(f"wrote {written}", markup=False, highlight=False,
                          soft_wrap=True)
    if audit is not None:
        console.print(audit_hint(audit), markup=False, highlight=False, soft_wrap=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
