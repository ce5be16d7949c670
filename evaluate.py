"""Evaluate bidding policies across scenarios and seeds (DESIGN §9).

Usage::

    python evaluate.py [--policies heuristic,random,oracle,learned] [--scenarios all|name,FILE.toml]
                       [--episodes N] [--seed N] [--agents N] [--out DIR]
                       [--trust hmac|ed25519] [--limits FILE] [--crypto-threads N]
                       [--randomize] [--contract-keys seeded|random]
                       [--governor-deadband-hz HZ] [--overwrite] [--no-progress]

Every policy x scenario x seed (``seed``, ``seed + 1``, … ``seed + episodes − 1``) runs
one episode through :func:`policies.rollout.run_episode` (the same runner as the demo
and the tests). Defaults: policies ``heuristic,random,oracle,learned`` (``learned``
only when a model exists at ``policies/pretrained/``, skipped with a note otherwise),
every scenario, 5 episodes, seed 0, 100 agents, ed25519 trust, output ``eval_out/``.
Seeds 0 … 99 999 (:data:`policies.rollout.EVAL_SEEDS`) are never training episodes
(training draws again when it draws one); a run whose seeds go beyond them gets a note
(:func:`seeds_note`).

``--randomize`` plays every scenario with :data:`gridswarm_env.scenarios.RANDOMIZE_PRESET`
(load step and trip x (1 ± 10 %), their times ± 5 s, drawn per episode from its seed:
every policy meets the same draw at the same seed, so the paired differences stay
paired). Such results are of other episodes than the default ones: ``results.md``'s
title and header say so, ``results.json``'s ``summary.config.scenario_randomization``
holds the preset (None without the flag) and every run (and no-DER baseline) its
``scenario_drawn`` values.

Outputs in ``DIR``:

* ``results.json`` — ``{"runs": [{"policy", "scenario", "seed", "n_agents",
  "metrics": {...}}, ...], "summary": {...}}``, strict JSON (NaN/inf become null, and
  are listed in ``summary.nonfinite`` so they are not mistaken for KPIs that are None by
  design); the summary holds ``config`` (the arguments, the seeds, each policy's
  identity — class, and for a model the file, the SHA-256 of the bytes loaded and its
  size — and ``provenance``: gridswarm version, git commit, package versions, the
  limits file's SHA-256), per scenario and policy mean / std / 95 % CI / n / nulls of
  every numeric KPI, ``system_cost`` relative to the oracle, the paired difference to
  the heuristic's ``system_cost`` seed by seed (:func:`paired_difference`) and the wall
  time, per scenario the frequency KPIs of the no-DER counterfactual, and
  ``policy_warnings`` (an oracle re-plan that failed);
* ``results.md`` — a header naming what was measured (scenarios, agents, trust,
  seeds, limits, each model's file and SHA-256, the code's version, what ± means),
  then one KPI table per scenario (each KPI column headed by its ``results.json`` key in
  backticks and its unit, e.g. ```system_cost` ($)``: :func:`kpi_column`, and
  :func:`column_kpi` back; mean ± sample std over episodes; counts such as
  ``blocked_attempts`` without decimals, other KPIs to 3 decimals or as many as keep
  2 significant digits of the spread; episodes a mean leaves out shown as
  ``(1 NaN/inf)`` or ``(2 null)``, a KPI NaN or infinite in every episode as
  ``– (1 NaN/inf)``) with each policy's ``system_cost`` relative to the oracle (only
  when both ran the same seeds), and a line with each policy's paired cost difference
  to the heuristic;
* ``freq_<scenario>.png`` — the frequency at every physics sub-step of the first
  seed, every policy overlaid, with the no-DER counterfactual (the same seed in shadow
  mode: bids, clearing and contracts run, nothing is dispatched) dashed;
  ``cost_vs_oracle.png`` — mean ``system_cost`` relative to the oracle as grouped bars
  (only when the oracle ran; otherwise a note in ``results.md`` and on stdout says why
  it is missing, and an earlier run's plot is removed);
* ``tensorboard/`` — scalars ``eval/<scenario>/<policy>/<kpi>`` (step = episode index).

Re-running into the same ``DIR`` replaces these outputs: once a run has written its
own, it removes the ones of earlier runs that it did not rewrite — ``freq_<scenario>.png``
of the scenarios it did not run among the registered ones and those the earlier
``results.json`` in ``DIR`` lists (custom ones too; other ``freq_*.png`` files are not its
own), the earlier event files in ``tensorboard/`` (one run's
scalars per directory, no mixed curves) and, when no oracle ran, an earlier
``cost_vs_oracle.png`` (:func:`remove_stale_outputs`). Nothing else in ``DIR`` is touched.
A ``results.json`` or ``results.md`` in ``DIR`` that this program did not write (told by
content, :func:`is_results_json` and :func:`is_results_md`; an empty file is fine) is
refused before any episode, in one line (exit status 2), unless ``--overwrite`` is given,
as ``demo.py --json`` refuses a file that is not its own; one that appears there during
the run is kept and the output saved to the temporary directory (exit status 1). An
interrupted or failed run removes its own event file (written in the temporary
directory until the run finishes) and the directories it created, if empty, and leaves
``DIR`` as it was. On Ctrl-C the finished episodes are not lost: their
results (``results.json`` layout, ``summary.interrupted`` true) go to a new file in the
temporary directory, and the one-line message says how many of how many and where
(:func:`save_interrupted`). SIGTERM (``timeout``, ``kill``, a cancelled job) is handled
as Ctrl-C is (``summary.interrupted_by`` ``"SIGTERM"``), with exit status 143 (128 +
SIGTERM, as ``python -m train``) instead of 130; :func:`evaluate` called from Python
leaves SIGTERM to its caller (no handler of its own: Python's default ends the process at
once), and ``DIR`` is never left half-written either way: the event file is written in
the temporary directory and moved into ``DIR`` with the other outputs, and a Ctrl-C or
SIGTERM after the last episode, while those are summarized and written, is held back
until they are
(:func:`~policies.cli_checks.stop_signals_deferred`). An error during an episode (a policy or the environment
raising) does the same, with the error and its traceback in ``summary.failure`` (also
when no episode had finished: the one-line message has no traceback), and exits with
status 1 (:class:`EvaluationFailed`).

Every policy is built once, before the first episode (a model is read once and loaded
from those bytes), and plays every scenario and seed: a model file rewritten during the
run changes nothing, and the recorded SHA-256 is that of the model that acted. The
``--limits`` file is read once per command too (:func:`main` checks it and hands what it
read to :func:`evaluate` as a :class:`~policies.cli_checks.LimitsFile`): the limits used
are those checked, and the recorded SHA-256 is that of the bytes parsed. So is the
``--config`` file (handed on as an :class:`~policies.cli_checks.EnvConfigFile`): its path
and the SHA-256 of the bytes read are recorded in ``summary.config.env_config_file`` and
results.md's header.

Importable: :func:`evaluate` does the work; :func:`main` is a thin command line that
turns bad arguments into a one-line message and exit status 2 (no traceback) before
any output exists: the output directory and the files in it must be writable, a
limits file may name only agents the fleet has. From Python, :func:`evaluate` also takes
:class:`~gridswarm_env.scenarios.Scenario` objects among the scenarios (reported under
their names, a custom one recorded field by field in ``summary.config.custom_scenarios``)
and an ``env_config`` (recorded in ``summary.config.env_config``); its argument errors
name the keyword and the flag (``n_agents (--agents) = 2.0: must be an integer >= 1``),
the command line's the flag alone (``--agents 0: expected an integer from 1 to 1,000,000
(...)``, as every integer flag of the command lines words it). An output
that still cannot be written at the end is saved to the temporary directory instead,
with a one-line message and exit status 1.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from gridswarm_env.config import field_changes
from gridswarm_env.config_file import env_config_record, env_config_toml, settings_changed
from gridswarm_env.metrics import KPI_UNITS, nonfinite_keys
from gridswarm_env.scenarios import (  # noqa: F401 (scenario_from_record: evaluate's API)
    SCENARIO_NAME,
    SCENARIO_NAME_TEXT,
    scenario_from_record,
    scenario_record,
    unknown_scenario_text,
)
from policies.cli_checks import (
    EXIT_CTRL_C,
    EXIT_SIGTERM,
    LimitsFile,
    Note,
    OneLineParser,
    OutputError,
    add_config_argument,
    add_contract_keys_argument,
    add_crypto_threads_argument,
    add_governor_deadband_argument,
    check_contract_keys,
    check_crypto_threads,
    check_output_dir,
    check_output_file,
    comma_items,
    dirs_to_create,
    env_config_file_from_args,
    env_config_source,
    int_flag_type,
    limits_path,
    missing_package_message,
    read_earlier_json,
    read_limits_agents,
    remove_unfinished_run,
    rescue_path,
    sigterm_as_interrupt,
    stop_signals_deferred,
    stop_signals_ignored,
    write_or_rescue,
    write_output_text,
)

#: Policies run by default, plus ``learned`` when a pretrained model exists.
DEFAULT_POLICIES = ("heuristic", "random", "oracle")
#: Files in the output directory this program writes (besides ``freq_<scenario>.png``).
COST_PLOT = "cost_vs_oracle.png"
OUTPUT_FILES = ("results.json", "results.md", COST_PLOT)
#: results.md's first line is this (plus `` — randomized scenarios (--randomize)``):
#: how a re-run recognizes its own results.md (:func:`is_results_md`)
RESULTS_MD_TITLE = "# gridswarm evaluation"
#: the largest earlier results.json :func:`is_results_json` reads to recognize it
RESULTS_JSON_MAX_BYTES = 256 * 2**20
#: the note when no oracle ran (in results.md, which the command line prints)
NO_COST_PLOT = ("no cost_vs_oracle.png: it shows each policy's cost relative to the "
                "oracle's, and the oracle did not run (add it to --policies)")
TENSORBOARD_DIR = "tensorboard"
EVENT_FILE_GLOB = "events.out.tfevents.*"
#: results.md's KPI columns (after ``policy`` and ``episodes``): DESIGN §8's headline
#: KPIs, the frequency extremes (``max_rocof_hz_per_s``: the protection metric of
#: ``emergency``) together
TABLE_KPIS = ("system_cost", "unserved_energy_mwh", "ev_unmet_energy_mwh", "frequency_nadir_hz",
              "frequency_zenith_hz", "max_abs_deviation_hz", "max_rocof_hz_per_s",
              "seconds_outside_band", "stabilization_time_s",
              "emergency_response_latency_ms", "emergency_response_mw_100ms", "consensus_rate",
              "blocked_attempts", "executed_violations")
TRUST_CHOICES = ("ed25519", "hmac")


def kpi_column(key: str) -> str:
    """results.md's column header of KPI ``key``: the key as in ``results.json``, in
    backticks, then its unit (:data:`~gridswarm_env.metrics.KPI_UNITS`) in parentheses
    unless it is a count or a ratio: ```system_cost` ($)``, ```consensus_rate```."""
    unit = KPI_UNITS[key]
    return f"`{key}` ({unit})" if unit else f"`{key}`"


_KPI_COLUMN = re.compile(r"`([^`]+)`(?: \([^()]*\))?")


def column_kpi(header: str) -> str | None:
    """The ``results.json`` KPI key of a results.md column header (:func:`kpi_column`;
    surrounding spaces ignored), None for the other columns (``policy``, ``episodes``,
    ``cost / oracle``)."""
    match = _KPI_COLUMN.fullmatch(header.strip())
    return match.group(1) if match else None


class UsageError(ValueError):
    """A bad command-line or :func:`evaluate` argument (reported in one line, naming it as
    its caller knows it: :func:`argument_name`)."""


#: :func:`evaluate`'s keywords and the command line's flags for them
FLAGS = {"policies": "--policies", "scenarios": "--scenarios", "episodes": "--episodes",
         "seed": "--seed", "n_agents": "--agents", "out_dir": "--out", "trust": "--trust",
         "crypto_threads": "--crypto-threads", "contract_keys": "--contract-keys",
         "overwrite": "--overwrite", "randomize": "--randomize"}
# True while main() runs: argument errors then name the flags alone, as the user typed them
_COMMAND_LINE: contextvars.ContextVar[bool] = contextvars.ContextVar("evaluate_command_line",
                                                                     default=False)


def argument_name(keyword: str) -> str:
    """How an argument error names the argument ``keyword`` of :func:`evaluate`: the
    keyword and its flag (``n_agents (--agents)``) for a call of :func:`evaluate`, the
    flag alone (``--agents``) on the command line (:func:`main`)."""
    flag = FLAGS[keyword]
    return flag if _COMMAND_LINE.get() else f"{keyword} ({flag})"


def argument_value(keyword: str, value: Any) -> str:
    """An argument and its value as an error names them: ``n_agents (--agents) = 2.0``
    for a call of :func:`evaluate`, ``--agents 0`` on the command line."""
    return f"{argument_name(keyword)}{_value_sep()}{value!r}"


def _value_sep() -> str:
    return " " if _COMMAND_LINE.get() else " = "


class _StoppedRun:
    """What a stopped run's exceptions share: ``str()`` is one line for a caller of
    :func:`evaluate`; :meth:`message` adds what the command line's user needs."""

    def message(self, out_dir: str | Path) -> str:
        """The command line's line: ``str(self)`` and that ``--out`` was left as it was
        (unless it was written: ``written``)."""
        if getattr(self, "written", None) is not None:
            return str(self)
        return f"{self}; --out {str(out_dir)!r} was left as it was"


class EvaluationInterrupted(_StoppedRun, KeyboardInterrupt):
    """Ctrl-C (or SIGTERM under the command line) during the episodes. ``DIR`` is left
    as it was; the finished episodes' results (``results.json`` layout,
    ``summary.interrupted`` true) were saved to a file in the temporary directory
    (``saved``; None when no episode had finished or that write failed, see ``problem``).

    :param finished: episodes (policy x scenario x seed) finished before the interrupt.
    :param planned: episodes the run would have made (no-DER baselines not counted).
    :param by: ``"Ctrl-C"`` or ``"SIGTERM"`` (:class:`~policies.cli_checks.Terminated`).
    :param written: the output directory, when the interrupt came while the outputs were
        written and was held back until they were (all episodes finished; ``DIR`` holds
        this run's outputs in full, nothing is saved elsewhere, unless ``problem`` says
        which could not be written there and where it went); else None.
    """

    def __init__(self, finished: int, planned: int, saved: Path | None,
                 problem: str | None = None, *, by: str = "Ctrl-C",
                 written: Path | None = None) -> None:
        super().__init__(finished, planned, saved)
        self.finished, self.planned, self.saved, self.problem = finished, planned, saved, problem
        self.by, self.written = by, written

    def __str__(self) -> str:
        """One line: how far the run got and where its results went."""
        by = " by SIGTERM" if self.by == "SIGTERM" else ""
        if self.written is not None:
            return (f"interrupted{by} after all {self.finished} episodes, while its outputs "
                    "were written; " + (self.problem or "they were written in full to "
                                        f"{str(self.written)!r}"))
        text = f"interrupted{by} after {self.finished} of {self.planned} episodes"
        if self.saved is not None:
            its = "its" if self.finished == 1 else "their"
            text += f"; {its} results are saved in {str(self.saved)!r}"
        elif self.problem is not None:
            text += f"; {self.problem}"
        return text


class EvaluationFailed(_StoppedRun, RuntimeError):
    """An error (not a bad argument) stopped the run after it started: a policy or the
    environment raised during an episode. ``DIR`` is left as it was; the finished
    episodes' results (none when it failed in the first), with the error and its
    traceback (``summary.failure``), were saved to a file in the temporary directory
    (``saved``; None when that write failed, see ``problem``)."""

    def __init__(self, during: str, error: BaseException, finished: int, planned: int,
                 saved: Path | None, problem: str | None = None) -> None:
        super().__init__(during, error)
        self.during, self.error = during, error
        self.finished, self.planned, self.saved, self.problem = finished, planned, saved, problem

    def __str__(self) -> str:
        """One line: the episode it failed in, the error, where the finished episodes
        went (``failed during heuristic / emergency / seed 0 (ValueError: …) after 0 of
        2 episodes; the traceback is saved in '…'``)."""
        error = " ".join(str(self.error).split())   # one line
        text = (f"failed during {self.during} ({type(self.error).__name__}: {error}) "
                f"after {self.finished} of {self.planned} episodes")
        if self.saved is not None and not self.finished:
            text += f"; the traceback is saved in {str(self.saved)!r}"
        elif self.saved is not None:
            its = "its" if self.finished == 1 else "their"
            text += (f"; {its} results and the traceback are saved in "
                     f"{str(self.saved)!r}")
        elif self.problem is not None:
            text += f"; {self.problem}"
        return text


# --------------------------------------------------------------------------- identity
def policy_identity(name: str, policy: Any) -> dict[str, Any]:
    """What a reader needs to know which policy produced a result: its class and, for a
    model, the file loaded, the SHA-256 and size of the bytes loaded
    (:class:`~policies.learned.LearnedPolicy` reads them once) and greedy or sampled."""
    cls = type(policy)
    info: dict[str, Any] = {"name": name, "class": f"{cls.__module__}.{cls.__qualname__}"}
    path = getattr(policy, "path", None)
    if path is not None:
        info.update(model_file=str(Path(path).resolve()),
                    model_sha256=getattr(policy, "sha256", None),
                    model_bytes=getattr(policy, "size_bytes", None),
                    deterministic=getattr(policy, "deterministic", None))
    return info


def provenance(limits_sha256: str | None) -> dict[str, Any]:
    """The code and library versions behind a run: ``gridswarm`` version, the git
    commit of this checkout (None outside git) and whether it had uncommitted changes
    to tracked files, Python and the numerical packages' versions, and the SHA-256 of a
    ``--limits`` file (given: the hash of the bytes that were parsed,
    :func:`~policies.cli_checks.read_limits_agents`; the file is not read again)."""
    import importlib.metadata
    import platform
    import subprocess

    import gridswarm_env

    root = Path(__file__).resolve().parent
    commit = dirty = None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=20)
        if head.returncode == 0:
            commit = head.stdout.strip()
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                     "--untracked-files=no"], capture_output=True, text=True,
                                    timeout=20)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    packages = {}
    for dist in ("numpy", "scipy", "torch", "stable-baselines3", "sb3-contrib", "gymnasium",
                 "pettingzoo"):
        try:
            packages[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            packages[dist] = None
    return {"gridswarm_version": gridswarm_env.__version__, "git_commit": commit,
            "git_uncommitted_changes": dirty, "python": platform.python_version(),
            "packages": packages, "limits_sha256": limits_sha256}


def identity_lines(config: dict[str, Any]) -> dict[str, str]:
    """results.md header lines naming each model (file, SHA-256, how it acted: greedy or
    sampled actions) and the code: ``model learned: FILE (sha256 …, greedy actions)``, and
    for a policy given as the model's absolute path, the path once, ``model FILE: sha256
    …`` (a relative path is named, then its file)."""
    lines = {}
    for name, info in config["policy_details"].items():
        if info.get("model_file"):
            facts = (f"sha256 {info['model_sha256']}, {info['model_bytes']:,} bytes"
                     f"{', greedy actions' if info['deterministic'] else ', sampled actions'}")
            lines[f"model {name}"] = (facts if name == info["model_file"]
                                      else f"{info['model_file']} ({facts})")
    prov = config["provenance"]
    code = f"gridswarm {prov['gridswarm_version']}"
    if prov["git_commit"]:
        code += f", git {prov['git_commit']}"
        if prov["git_uncommitted_changes"]:
            code += " with uncommitted changes"
    lines["code"] = code
    return lines


def custom_scenarios(scenarios: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: scenario_record}`` of the scenarios that are not the registered one of
    their name (``summary.config.custom_scenarios``; empty when every one is)."""
    from gridswarm_env.scenarios import SCENARIOS

    return {name: scenario_record(sc) for name, sc in scenarios.items()
            if SCENARIOS.get(name) != sc}


def scenario_files(scenarios: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{name: {"path", "sha256"}}`` of the scenarios read from scenario files
    (``summary.config.scenario_files``: the file as given and the SHA-256 of the bytes
    played; empty when none was)."""
    from gridswarm_env.scenarios import ScenarioFile

    return {name: {"path": sc.path, "sha256": sc.sha256}
            for name, sc in scenarios.items() if isinstance(sc, ScenarioFile)}


def _from_file(kind: str, file: dict[str, str] | None) -> str:
    """The end of a :func:`custom_lines` line naming the ``kind`` file (``"scenario"``,
    ``"config"``) its settings were read from: ``; from config file weak.toml (sha256
    …)``; empty for None (read from no file)."""
    return "" if file is None else f"; from {kind} file {file['path']} (sha256 {file['sha256']})"


def custom_lines(scenarios: dict[str, Any], env_config: Any,
                 files: dict[str, dict[str, str]] | None = None,
                 config_file: dict[str, str] | None = None) -> dict[str, str]:
    """results.md header lines naming what is not as shipped: each custom scenario
    (``scenario emergency: custom, changed from the registered one (in parentheses):
    contingency_mw = 80.0 (100.0)``), with the file it was read from (``files``,
    :func:`scenario_files`: ``; from scenario file trip.toml (sha256 …)``), and an
    ``env_config`` other than the defaults (``environment: custom EnvConfig, changed from
    the defaults (in parentheses): dt_s = 0.5 (1.0)``), with the config file it was read
    from (``config_file``, ``summary.config.env_config_file``: ``; from config file
    weak.toml (sha256 …)``); none when everything is as shipped and read from no file."""
    from gridswarm_env.scenarios import SCENARIOS

    lines = {}
    for name, sc in scenarios.items():
        registered = SCENARIOS.get(name)
        source = _from_file("scenario", (files or {}).get(name))
        if registered is None:
            lines[f"scenario {name}"] = ("custom, not a registered scenario (its fields: "
                                         "results.json, summary.config.custom_scenarios)"
                                         + source)
        elif registered != sc:
            diff = field_changes(sc, registered, skip=("description", "success"))
            lines[f"scenario {name}"] = ("custom, changed from the registered one (in "
                                         "parentheses): " + (", ".join(diff) or "its texts")
                                         + source)
        elif source:   # a file that sets nothing new: still where the scenario came from
            lines[f"scenario {name}"] = "as registered" + source
    diff = settings_changed(env_config, named=("n_agents", "trust", "crypto_threads",
                                                "contract_keys"))   # in the header
    source = _from_file("config", config_file)
    if diff:
        lines["environment"] = ("custom EnvConfig, changed from the defaults (in "
                                "parentheses): " + ", ".join(diff) + source)
    elif source:   # a file that changes nothing here: still where the settings came from
        lines["environment"] = "as the defaults" + source
    return lines


def limits_text(config: dict[str, Any]) -> str:
    """The limits file (with its SHA-256), ``defaults``, or in-memory limits given to
    :func:`evaluate` (a dict or ``Limits``: no file to name; ``limits_values`` in
    results.json holds the limits used, whatever their source)."""
    if config["limits"] is None:
        if config.get("limits_source") == "in-memory":
            return "in-memory limits given to evaluate() (values in results.json: limits_values)"
        return "defaults"
    sha = config["provenance"]["limits_sha256"]
    return config["limits"] + (f" (sha256 {sha})" if sha else "")


def randomization_text(config: dict[str, Any]) -> str:
    """The header line of ``summary.config.scenario_randomization`` (off, or the preset)."""
    from gridswarm_env.scenarios import randomize_text

    preset = config.get("scenario_randomization")
    if preset is None:
        return ("off: every seed plays the scenario's fixed load step and trip "
                "(--randomize not given)")
    return (f"ON (--randomize): {randomize_text(preset)}; these are other episodes than "
            "those of a run without --randomize: do not mix the two tables")


def draws_text(runs: Sequence[dict[str, Any]], scenario: str) -> str:
    """``results.md``'s line of the episodes a randomized run drew in ``scenario``, one
    per seed (every policy meets the same draw at a seed); empty when not randomized."""
    from gridswarm_env.scenarios import drawn_text

    by_seed = {r["seed"]: r["scenario_drawn"] for r in runs
               if r["scenario"] == scenario and "scenario_drawn" in r}
    if not by_seed:
        return ""
    return ("Episodes drawn (--randomize): " + "; ".join(
        f"seed {s}: {drawn_text(by_seed[s])}" for s in sorted(by_seed)) + ".")


def nonfinite_notes(nonfinite: Sequence[dict[str, Any]]) -> list[str]:
    """One warning per episode whose KPIs were NaN or infinite."""
    return [f"warning: {e['policy']} / {e['scenario']} / seed {e['seed']}: non-finite "
            f"{', '.join(e['metrics'])} (null in results.json, left out of the means and "
            "counted as 'NaN/inf' in the tables)" for e in nonfinite]


# --------------------------------------------------------------------------- arguments

def tag_names(policies: Sequence[str]) -> dict[str, str]:
    """Each policy as one tensorboard tag component: a model path such as
    ``runs/a/best_model.zip`` becomes ``runs_a_best_model.zip`` (its slashes would open
    new tag levels); built-in names are unchanged, and two paths that come out alike
    (``runs/a_b.zip``, ``runs_a/b.zip``) get ``_2``, ``_3``… so their scalars never merge."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for policy in policies:
        base = re.sub(r"[^A-Za-z0-9_.\-]+", "_", policy).strip("_") or "policy"
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        out[policy] = name
    return out


def pretrained_model() -> Path | None:
    """The shipped learned model, if one exists."""
    from policies.learned import DEFAULT_MODEL

    return DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None


def resolve_policies(spec: str | Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Policy names to run and notes about skipped and repeated ones.

    ``None`` means the defaults (plus ``learned`` when a pretrained model exists).
    ``learned`` without a pretrained model is skipped with a note; a path to a model
    file is accepted as a policy. A policy given again (the same name, or another
    spelling of the same model file: ``m3`` and ``m3.zip``, ``./m3.zip``, ``learned``
    and the shipped model's path) is played once, under its first name, with a note.

    :raises UsageError: an empty item (:func:`~policies.cli_checks.comma_items`), an
        unknown name, or a model path that is missing or a directory.
    """
    from policies import looks_like_model_path, policy_names
    from policies.learned import DEFAULT_MODEL, check_model_file

    known = policy_names()
    notes: list[str] = []
    what = argument_name("policies")
    if spec is None:
        names = list(DEFAULT_POLICIES) + ["learned"]
    else:
        names = _items(spec, "policies", f"policy names ({', '.join(known)}) or model paths"
                       if _COMMAND_LINE.get() else "policy names or model paths (str); a "
                       "policy of your own: policies.register(name, factory), then its name")
        if not names:
            raise UsageError(f"{what} is empty; give a comma-separated list of "
                             f"{', '.join(known)} or model paths")
    out: list[str] = []
    first: dict[Any, str] = {}   # a built-in name, or a model file's real path: its first name
    for name in names:
        if name == "learned" and pretrained_model() is None:
            note = (f"policy 'learned' skipped: no model at {DEFAULT_MODEL} (train one "
                    "with `python -m train`, or pass a model's path)")
            notes += [] if note in notes else [note]
            continue
        key: Any = name
        if name == "learned":
            key = DEFAULT_MODEL.resolve()
        elif name not in known:
            if not looks_like_model_path(name):
                raise UsageError(f"{what}: unknown policy {name!r}; known policies: "
                                 f"{', '.join(known)}, or a path to a saved model (.zip)")
            try:
                key = check_model_file(name).resolve()
            except ValueError as exc:
                raise UsageError(f"{what}: {exc}") from None
        if key in first:
            notes.append(f"{what}: {name!r} given twice; played once" if first[key] == name
                         else f"{what}: {name!r} is the same model file as {first[key]!r}; "
                              f"played once, as {first[key]!r}")
            continue
        first[key] = name
        out.append(name)
    if not out:
        raise UsageError("no policy left to evaluate (" + "; ".join(notes) + ")")
    return out, notes


def resolve_scenarios(spec: str | Sequence[Any] | Any | None) -> dict[str, Any]:
    """The scenarios to play, by name: ``None`` or ``"all"``, every registered scenario;
    else names (a comma-separated string or a list; ``"all"`` among them adds every
    registered one) and, from Python, :class:`~gridswarm_env.scenarios.Scenario` objects
    (alone or in the list), each played and reported under its ``name``. The same
    scenario given twice is played once (:func:`scenarios_and_notes` says so).

    :returns: ``{name: Scenario}`` in the order given (the registered ones' order for
        ``"all"``, where it stands); a scenario file's as read (its
        :class:`~gridswarm_env.scenarios.ScenarioFile`: :func:`scenarios_and_notes`).
    :raises UsageError: an empty item, an unknown name, an item that is neither a name
        nor a ``Scenario``, a name unfit for a file name, or two different scenarios of
        one name.
    """
    return {name: played_scenario(sc) for name, sc in scenarios_and_notes(spec)[0].items()}


def played_scenario(item: Any) -> Any:
    """The :class:`~gridswarm_env.scenarios.Scenario` of a :func:`scenarios_and_notes`
    value (a scenario file's :class:`~gridswarm_env.scenarios.ScenarioFile` holds it)."""
    from gridswarm_env.scenarios import ScenarioFile

    return item.scenario if isinstance(item, ScenarioFile) else item


def scenarios_and_notes(spec: str | Sequence[Any] | Any | None
                        ) -> tuple[dict[str, Any], list[str]]:
    """:func:`resolve_scenarios` (a scenario file's value its
    :class:`~gridswarm_env.scenarios.ScenarioFile`, read once: the path and the hash of
    the bytes played are recorded; one given as a ``ScenarioFile``, already read, is not
    read again) and a one-line note for each scenario given again (the same name twice,
    or a name that ``all`` includes already: ``all,emergency``).

    :raises UsageError: as :func:`resolve_scenarios`.
    """
    from gridswarm_env.scenarios import SCENARIOS, Scenario, ScenarioFile, is_scenario_file

    known = tuple(SCENARIOS)
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return dict(SCENARIOS), []
    what = argument_name("scenarios")
    allowed = (f"'all', scenario names ({', '.join(known)}) or scenario files (FILE.toml)"
               if _COMMAND_LINE.get() else
               "'all', scenario names or files (FILE.toml; a comma-separated string or a "
               "list) or Scenario objects (gridswarm_env.get_scenario(name, **overrides), "
               "alone or in a list)")
    items = _items([spec] if isinstance(spec, Scenario | ScenarioFile) else spec, "scenarios",
                   allowed, (str, Scenario, ScenarioFile))
    if not items:
        raise UsageError(f"{what} is empty; give 'all' or names from {', '.join(known)}")
    read: dict[str, Any] = {}   # a file named twice is read once (its note below)
    for s in items:
        if isinstance(s, str) and is_scenario_file(s) and s not in read:
            read[s] = _scenario_file(s, what)
    items = [read.get(s, s) if isinstance(s, str) else s for s in items]
    bad = [s for s in items if isinstance(s, str) and s not in known and s != "all"]
    if bad:
        raise UsageError(f"{what}: {unknown_scenario_text(bad[0], all_allowed=True)}")
    notes: list[str] = []
    listed: list[tuple[Any, bool]] = []   # (item, whether 'all' brought it), as given
    for item in items:
        if not (isinstance(item, str) and item == "all"):
            listed.append((item, False))
        elif any(from_all for _, from_all in listed):
            notes.append(f"{what}: 'all' given twice; played once")
        else:
            listed += [(name, True) for name in known]
    out: dict[str, Any] = {}
    by_all: set[str] = set()
    for item, from_all in listed:
        sc = SCENARIOS[item] if isinstance(item, str) else played_scenario(item)
        if not SCENARIO_NAME.fullmatch(sc.name):
            raise UsageError(f"{what}: scenario name {sc.name!r} names output files "
                             f"(freq_{sc.name}.png) and tensorboard tags: use "
                             f"{SCENARIO_NAME_TEXT} (get_scenario(scenario, name=...))")
        if sc.name in out:
            if played_scenario(out[sc.name]) != sc:
                raise UsageError(f"{what}: two different scenarios named {sc.name!r} "
                                 "(results, plots and tags are keyed by the name); name "
                                 f"the custom one apart: name = \"{sc.name}_2\" in its "
                                 f"file, or get_scenario(scenario, name='{sc.name}_2')")
            notes.append(f"{what}: {sc.name!r} is in 'all' already; played once"
                         if from_all or sc.name in by_all
                         else f"{what}: {sc.name!r} given twice; played once")
            continue
        out[sc.name] = item if isinstance(item, ScenarioFile) else sc
        if from_all:
            by_all.add(sc.name)
    return out, notes


def _scenario_file(path: str, what: str) -> Any:
    """The TOML file ``path`` read once, with its scenario
    (:func:`~gridswarm_env.scenarios.read_scenario_file`).

    :raises UsageError: the file's refusal, naming ``what`` (the flag) and the file.
    """
    from gridswarm_env.scenarios import read_scenario_file

    try:
        return read_scenario_file(path)
    except ValueError as exc:   # already names the file
        raise UsageError(f"{what}: {exc}") from None


def _check_count(keyword: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise UsageError(f"{argument_value(keyword, value)}: must be an integer >= 1")
    return int(value)


def _items(spec: str | Sequence[Any], keyword: str, allowed: str,
           types: tuple[type, ...] = (str,)) -> list[Any]:
    """The items of a comma-separated string (:func:`~policies.cli_checks.comma_items`)
    or an ordered iterable (a list, a tuple, a generator; not a set or a mapping), strings
    stripped (:func:`resolve_policies`, :func:`resolve_scenarios`); ``[]`` for an empty
    string or list.

    :raises UsageError: ``spec`` is neither, an item is not one of ``types``, or an item
        is an empty string, naming the argument and what is ``allowed``.
    """
    if isinstance(spec, str):   # the command lines' one rule (an empty item refused)
        try:
            return comma_items(spec, argument_name(keyword), allowed, _value_sep())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    # any ordered iterable (a list, a tuple, a generator); a set or a mapping has no
    # order to report the results in
    if isinstance(spec, bytes | set | frozenset | Mapping) or not isinstance(spec, Iterable):
        raise UsageError(f"{argument_value(keyword, spec)}: expected {allowed}")
    spec = list(spec)
    for k, item in enumerate(spec, 1):
        if not isinstance(item, types):
            raise UsageError(f"{argument_name(keyword)}: item {item!r} of type "
                             f"{type(item).__name__}; expected {allowed}")
        if isinstance(item, str) and not item.strip():
            raise UsageError(f"{argument_value(keyword, spec)}: item {k} of {len(spec)} is "
                             f"empty; expected {allowed}")
    return [item.strip() if isinstance(item, str) else item for item in spec]


def seeds_note(seed: int, episodes: int) -> str | None:
    """A note when the seeds ``seed`` … ``seed + episodes - 1`` leave the evaluation seeds
    (:data:`policies.rollout.EVAL_SEEDS`, which training never plays), else None."""
    from policies.rollout import EVAL_SEEDS

    last = seed + episodes - 1
    if last < EVAL_SEEDS.stop:
        return None
    first = max(seed, EVAL_SEEDS.stop)
    which = f"seed {first:,} is" if first == last else f"seeds {first:,}…{last:,} are"
    return (f"{which} not among the evaluation seeds (0…{EVAL_SEEDS.stop - 1:,}, which "
            "training never plays): a trained model may have played these episodes")


#: :func:`evaluate` arguments that are ``EnvConfig`` fields the results do not depend on:
#: given, they override ``env_config``'s value whatever it is (:func:`env_settings`)
RESULT_NEUTRAL_SETTINGS = ("crypto_threads",)


def env_settings(env_config: Any, **given: Any) -> tuple[Any, dict[str, Any]]:
    """The :class:`~gridswarm_env.config.EnvConfig` a run starts from and the arguments
    of :func:`evaluate` that are its fields (``n_agents``, ``trust``, ``crypto_threads``,
    ``contract_keys``): each as given, or when None, ``env_config``'s (the defaults'
    without one). A value given overrides an ``env_config`` field still at
    ``EnvConfig()``'s default (``trust="hmac"`` with ``EnvConfig(fleet=...)``), and
    ``crypto_threads`` given always wins (the results do not depend on it); a value that
    differs from a field ``env_config`` changed from the default is refused: which one
    was meant cannot be told.

    :returns: (``env_config`` or ``EnvConfig()``, ``{argument: value}``); the values are
        checked later, with the other arguments.
    :raises UsageError: ``env_config`` is not an ``EnvConfig`` (or None), asks for shadow
        mode or an audit file, or an argument given disagrees with a field it changed.
    """
    from gridswarm_env.config import EnvConfig

    if env_config is not None and not isinstance(env_config, EnvConfig):
        raise UsageError(f"env_config: a {type(env_config).__name__}; expected a "
                         "gridswarm_env.config.EnvConfig, or None for the defaults (or "
                         "a policies.cli_checks.EnvConfigFile: a config file read)")
    base = EnvConfig() if env_config is None else env_config
    if base.shadow:
        raise UsageError("env_config.shadow = True: evaluate() plays every policy live (its "
                         "no-DER baseline is the shadow-mode run, counterfactual=True); give "
                         "an EnvConfig with shadow=False")
    if base.audit_path is not None:
        raise UsageError(f"env_config.audit_path = {base.audit_path!r}: evaluate() keeps no "
                         "audit file (each of its environments would need a new one); give "
                         "an EnvConfig with audit_path=None")
    defaults, values = EnvConfig(), {}
    for key, value in given.items():
        mine, default = getattr(base, key), getattr(defaults, key)
        if (value is not None and value != mine and mine != default
                and key not in RESULT_NEUTRAL_SETTINGS):
            raise UsageError(f"{argument_value(key, value)} disagrees with env_config.{key} "
                             f"= {mine!r} (changed from the default {default!r}): leave it "
                             "out (None: env_config's) or give the same value")
        values[key] = mine if value is None else value
    return base, values


def check_arguments(policies: Sequence[str] | str | None, scenarios: Sequence[str] | str | None,
                    episodes: Any, seed: Any, n_agents: Any, trust: Any,
                    limits: str | Path | LimitsFile | None, fleet: Any = None,
                    ) -> tuple[list[str], dict[str, Any], list[str], Any, str | None]:
    """Validate every argument of :func:`evaluate` before any work is done.

    :param limits: a limits file path (read once here), a
        :class:`~policies.cli_checks.LimitsFile` (a file already read: not read again)
        or None.
    :param fleet: the ``FleetConfig`` whose agents the limits may name (None: the default).
    :returns: (policy names, ``{name: Scenario or ScenarioFile}``
        (:func:`scenarios_and_notes`), notes,
        limits, the SHA-256 of the limits file's bytes that were parsed or None).
    :raises UsageError: the first bad argument, in one line (a limits file naming an
        agent that a fleet of ``n_agents`` does not have is one).
    """
    pols, notes = resolve_policies(policies)
    scs, scenario_notes = scenarios_and_notes(scenarios)
    notes = [*notes, *scenario_notes]
    _check_count("episodes", episodes)
    _check_count("n_agents", n_agents)
    from gridswarm_env.config import check_agent_limit

    try:
        check_agent_limit(argument_name("n_agents"), int(n_agents), sep=_value_sep())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UsageError(f"{argument_value('seed', seed)}: must be an integer >= 0")
    if not isinstance(trust, str) or trust not in TRUST_CHOICES:
        raise UsageError(f"{argument_value('trust', trust)}: allowed values are "
                         f"{', '.join(TRUST_CHOICES)}")
    note = seeds_note(int(seed), int(episodes))
    if note:
        notes = [*notes, note]
    try:
        limits_obj, limits_sha256 = read_limits_agents(limits, int(n_agents), fleet)
    except ValueError as exc:   # names the file
        raise UsageError(str(exc)) from None
    return pols, scs, notes, limits_obj, limits_sha256


def is_results_json(path: str | Path) -> bool:
    """Whether ``path`` holds an earlier ``results.json`` of this program: a regular file
    of at most :data:`RESULTS_JSON_MAX_BYTES` whose JSON is an object with a ``runs``
    list and a ``summary`` whose ``config`` names the ``policies`` and ``scenarios`` (as
    every version wrote it, and the files a stopped run saves). A re-run replaces it
    without ``overwrite``; anything else (a user's file, JSON that does not parse) is
    not its own (:func:`check_outputs`)."""
    doc = read_earlier_json(path, RESULTS_JSON_MAX_BYTES)
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        return False
    summary = doc.get("summary")
    config = summary.get("config") if isinstance(summary, dict) else None
    return isinstance(config, dict) and {"policies", "scenarios"} <= config.keys()


def is_results_md(path: str | Path) -> bool:
    """Whether ``path`` holds an earlier ``results.md`` of this program: a regular file
    whose first line is :data:`RESULTS_MD_TITLE`, alone or followed by `` — `` (the
    randomized run's title). A re-run replaces it without ``overwrite``."""
    p = Path(path)
    try:
        if not p.is_file():
            return False
        with p.open("rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return False
    line = first.decode("utf-8", "replace").rstrip("\r\n")
    return line == RESULTS_MD_TITLE or line.startswith(RESULTS_MD_TITLE + " — ")


#: the outputs whose content says whether this program wrote them (the plots and event
#: files are recognized by name)
OWN_OUTPUT_CHECKS = {"results.json": is_results_json, "results.md": is_results_md}


def _check_own_output(path: Path, what: str) -> None:
    """Refuse a non-empty regular file at ``path`` (``results.json`` or ``results.md``)
    that this program did not write (:data:`OWN_OUTPUT_CHECKS`), as ``demo.py --json``
    refuses a file that is not its own output."""
    recognize = OWN_OUTPUT_CHECKS.get(path.name)
    try:
        size = path.stat().st_size if path.is_file() else 0
    except OSError:
        return   # the writability check names what is wrong
    if recognize is None or size == 0 or recognize(path):
        return
    raise ValueError(f"{what} {str(path)!r} already exists ({size:,} bytes) and was not "
                     f"written by evaluate.py: pass {argument_name('overwrite')} to "
                     f"replace it, or choose another {argument_name('out_dir')} directory")


def check_outputs(out_dir: str | Path, scenarios: Sequence[str],
                  overwrite: bool = False) -> Path:
    """Check before any work that every output can be written in ``out_dir``.

    :param overwrite: a ``results.json`` or ``results.md`` there that this program did
        not write may be replaced (its own earlier ones always are).
    :raises UsageError: ``out_dir`` (or ``tensorboard/`` in it) is a file or not
        writable, an output file's name is taken by a directory or a read-only file, or
        (without ``overwrite``) a ``results.json`` or ``results.md`` there that is not
        empty is not this program's (:func:`is_results_json`, :func:`is_results_md`).
    """
    out = Path(out_dir)
    try:
        what = argument_name("out_dir")
        check_output_dir(out_dir, what)   # not ``out``: Path("") is ".", the cwd
        check_output_dir(out / TENSORBOARD_DIR, f"{what}: tensorboard directory")
        for name in (*OUTPUT_FILES, *(f"freq_{sc}.png" for sc in scenarios)):
            if (out / name).exists():
                if not overwrite:
                    _check_own_output(out / name, f"{what}: output file")
                check_output_file(out / name, f"{what}: output file")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return out


def _event_files(out: Path) -> set[Path]:
    return {p for p in (out / TENSORBOARD_DIR).glob(EVENT_FILE_GLOB) if p.is_file()}


def earlier_scenarios(out: Path) -> list[str]:
    """The scenario names an earlier run's ``results.json`` in ``out`` lists
    (``summary.config.scenarios``; custom ones among them), read before this run
    overwrites it: whose ``freq_<scenario>.png`` that run wrote. A missing, unreadable or
    corrupt file, or a name unfit for a file name (:data:`SCENARIO_NAME`), gives none.
    """
    data = read_earlier_json(out / "results.json")   # None: missing, unreadable, not JSON
    try:
        names = data["summary"]["config"]["scenarios"]
    except (LookupError, TypeError):
        return []
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and SCENARIO_NAME.fullmatch(n)]


def remove_stale_outputs(out: Path, scenarios: Sequence[str], earlier_events: set[Path],
                         cost_plot: bool = True, earlier: Sequence[str] = ()) -> list[Path]:
    """Remove the outputs of earlier runs that this run did not rewrite:
    ``freq_<scenario>.png`` of the other registered scenarios and of the scenarios
    ``earlier`` (:func:`earlier_scenarios`: the earlier ``results.json``'s, custom ones
    among them) — names this program writes; a user's ``freq_mine.png`` stays —, the
    event files ``earlier_events`` and, when this run wrote no cost plot (``cost_plot``
    False: no oracle ran), an earlier ``cost_vs_oracle.png``.

    :returns: the removed paths.
    """
    from gridswarm_env.scenarios import scenario_names

    names = dict.fromkeys([*scenario_names(), *earlier])
    stale = [out / f"freq_{sc}.png" for sc in names if sc not in scenarios]
    stale = [p for p in stale if p.is_file()]
    if not cost_plot and (out / COST_PLOT).is_file():
        stale.append(out / COST_PLOT)
    stale += sorted(p for p in earlier_events if p.is_file())
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


# --------------------------------------------------------------------------- JSON and stats
def json_safe(value: Any) -> Any:
    """``value`` as strict-JSON types (:func:`gridswarm_env.metrics.json_safe`)."""
    from gridswarm_env.metrics import json_safe as convert  # lazy: bad flags fail fast

    return convert(value)


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


#: the policy every other one is compared with, seed by seed (when it ran)
PAIRED_BASELINE = "heuristic"
#: what results.md's "mean ± std" cells and its paired comparisons are
STATISTICS_TEXT = ("mean ± sample standard deviation (ddof 1) over the episodes (one per "
                   "seed, the same seeds for every policy); cost / oracle = ratio of the "
                   "mean costs; 95 % confidence intervals of the means (Student t) in "
                   "results.json")


def ci95_halfwidth(std: float | None, n: int) -> float | None:
    """Half-width of the 95 % confidence interval of a mean of ``n`` values with sample
    standard deviation ``std``: ``t(0.975, n − 1) · std / √n`` (Student t; None for
    ``n < 2``, where no spread is known)."""
    if std is None or n < 2:
        return None
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1) * std / math.sqrt(n))


def _nonfinite_index(nonfinite: Sequence[dict[str, Any]] | None) -> dict[tuple, set[str]]:
    return {(e["policy"], e["scenario"], e["seed"]): set(e["metrics"]) for e in nonfinite or ()}


def summarize(runs: list[dict[str, Any]], policies: list[str], scenarios: list[str],
              nonfinite: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per scenario and policy: mean / std (sample, ddof = 1; None for a single value) /
    ``ci95`` (:func:`ci95_halfwidth`) / n of every numeric KPI, with ``n_null`` (values
    that are None) and ``n_nonfinite`` (of those, the NaN or infinite ones, listed in
    ``nonfinite`` as ``{"policy", "scenario", "seed", "metrics"}``: a broken episode, not
    a KPI that is undefined by design); a KPI with no finite value but a NaN or infinite
    one is not among the KPIs but in ``nonfinite_only`` (``{key: {"n_null",
    "n_nonfinite"}}``, shown as ``– (1 NaN/inf)`` in results.md); ``system_cost`` mean
    relative to the oracle's (None without an oracle, when the oracle's mean cost is not
    positive, or when either misses an episode's cost or they ran different seeds, as a
    stopped run's policies can: means over different seeds do not compare); and ``system_cost_vs_heuristic``, the
    difference to :data:`PAIRED_BASELINE`'s cost seed by seed (:func:`paired_difference`)."""
    bad = _nonfinite_index(nonfinite)
    out: dict[str, Any] = {}
    for sc in scenarios:
        per_policy: dict[str, Any] = {}
        for pol in policies:
            mine = [r for r in runs if r["scenario"] == sc and r["policy"] == pol]
            mets = [r["metrics"] for r in mine]
            kpis: dict[str, Any] = {}
            nonfinite_only: dict[str, Any] = {}
            keys = dict.fromkeys(k for m in mets for k in m)
            for key in keys:
                vals = [_numeric(m.get(key)) for m in mets]
                n_bad = sum(key in bad.get((pol, sc, r["seed"]), ()) for r in mine)
                if n_bad and all(v is None for v in vals):   # no mean, but not by design
                    nonfinite_only[key] = {"n_null": len(vals), "n_nonfinite": n_bad}
                if all(isinstance(m.get(key), int | float) or m.get(key) is None for m in mets) \
                        and any(v is not None for v in vals):
                    xs = np.array([v for v in vals if v is not None])
                    # the sample std of one value is undefined: None, not a spread of 0
                    std = float(xs.std(ddof=1)) if xs.size > 1 else None
                    kpis[key] = {"mean": float(xs.mean()), "std": std,
                                 "ci95": ci95_halfwidth(std, int(xs.size)),
                                 "n": int(xs.size), "n_null": int(len(vals) - xs.size),
                                 "n_nonfinite": n_bad,
                                 # a count: results.md prints it without decimals
                                 "integer": all(isinstance(m.get(key), int | None)
                                                for m in mets)}
            per_policy[pol] = {"episodes": len(mets), "kpis": kpis,
                               "nonfinite_only": nonfinite_only}
        oracle = per_policy.get("oracle", {}).get("kpis", {}).get("system_cost")
        for pol, entry in per_policy.items():
            cost = entry["kpis"].get("system_cost")
            rel = None
            if oracle is not None and cost is not None and oracle["mean"] > 0 \
                    and not oracle["n_null"] and not cost["n_null"] \
                    and _seeds(runs, sc, pol) == _seeds(runs, sc, "oracle"):
                rel = cost["mean"] / oracle["mean"]
            entry["system_cost_vs_oracle"] = rel
            entry["system_cost_vs_heuristic"] = (
                None if pol == PAIRED_BASELINE or PAIRED_BASELINE not in per_policy
                else paired_difference(runs, sc, pol, PAIRED_BASELINE))
        out[sc] = per_policy
    return out


def _by_seed(runs: list[dict[str, Any]], scenario: str, policy: str,
             key: str) -> dict[int, float | None]:
    """``policy``'s ``key`` in ``scenario`` per seed it ran (None: null, NaN or inf)."""
    return {r["seed"]: _numeric(r["metrics"].get(key)) for r in runs
            if r["scenario"] == scenario and r["policy"] == policy}


def _seeds(runs: list[dict[str, Any]], scenario: str, policy: str) -> list[int]:
    """The seeds ``policy`` ran in ``scenario``, sorted (an interrupted or failed run's
    policies may have run different ones)."""
    return sorted(r["seed"] for r in runs if r["scenario"] == scenario and r["policy"] == policy)


def paired_difference(runs: list[dict[str, Any]], scenario: str, policy: str,
                      baseline: str, key: str = "system_cost") -> dict[str, Any] | None:
    """``policy``'s ``key`` minus ``baseline``'s, seed by seed (both ran every seed on the
    same episodes, so the seeds' common part cancels): mean, sample std, ``ci95``
    (:func:`ci95_halfwidth`), ``n_pairs``, ``relative`` (mean difference / baseline's
    mean over the same seeds; None when that mean is not positive: ``system_cost`` can be
    negative) and the seeds where either value is missing
    (``unpaired_seeds``). None when no seed has both values."""
    mine, base = _by_seed(runs, scenario, policy, key), _by_seed(runs, scenario, baseline, key)
    seeds = sorted(set(mine) | set(base))
    paired = [s for s in seeds if mine.get(s) is not None and base.get(s) is not None]
    if not paired:
        return None
    diff = np.array([mine[s] - base[s] for s in paired])
    std = float(diff.std(ddof=1)) if diff.size > 1 else None
    base_mean = float(np.mean([base[s] for s in paired]))
    return {"baseline": baseline, "mean_diff": float(diff.mean()), "std_diff": std,
            "ci95": ci95_halfwidth(std, int(diff.size)), "n_pairs": int(diff.size),
            "relative": float(diff.mean()) / base_mean if base_mean > 0 else None,
            "unpaired_seeds": [s for s in seeds if s not in paired]}


# --------------------------------------------------------------------------- outputs
def _missing_text(stat: dict[str, Any]) -> str:
    """`` (1 NaN/inf, 2 null)``: the episodes a mean leaves out, broken ones apart."""
    broken = int(stat.get("n_nonfinite") or 0)
    null = int(stat.get("n_null") or 0) - broken
    parts = ([f"{broken} NaN/inf"] if broken else []) + ([f"{null} null"] if null else [])
    return f" ({', '.join(parts)})" if parts else ""


def _fmt(stat: dict[str, Any] | None) -> str:
    if stat is None:
        return "–"
    mean, std = stat["mean"], stat["std"]
    if stat.get("integer"):   # a count: whole numbers as such, a mean between them to 0.1
        def count(x: float) -> str:
            return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"
        text = count(mean) if std is None else f"{count(mean)} ± {count(std)}"
        return text + _missing_text(stat)
    spec = f".{_decimals(mean, std)}f"
    # one value: no spread to show (n = 1)
    text = (_signed(mean, spec) if std is None
            else f"{_signed(mean, spec)} ± {_signed(std, spec)}")
    return text + _missing_text(stat)


#: the most decimals a results.md cell shows (1e-6 of a KPI's unit)
MAX_DECIMALS = 6


def _decimals(mean: float, std: float | None) -> int:
    """Decimals for a ``mean ± std`` cell: 3 below 1 000 and 1 above, more where that
    would hide the number: a spread keeps 2 significant digits and a mean without one
    (or with a zero spread) 3, up to :data:`MAX_DECIMALS` (``0.0010 ± 0.0001``, not
    ``0.001 ± 0.000``)."""
    digits = 3 if max(abs(mean), abs(std or 0.0)) < 1000 else 1
    shown, significant = (std, 2) if std else (mean, 3)
    if math.isfinite(shown) and abs(shown) >= 0.5 * 10.0 ** -MAX_DECIMALS:
        digits = max(digits, significant - 1 - math.floor(math.log10(abs(shown))))
    return min(digits, MAX_DECIMALS)


def _signed(x: float, spec: str) -> str:
    """``x`` formatted with ``spec``, a value that rounds to zero without a minus sign
    (floating-point noise of an exact tie printed ``-0.000``)."""
    text = format(x, spec)
    return format(0.0, spec) if float(text) == 0.0 else text


def _paired_text(summary_sc: dict[str, Any]) -> str:
    """One line: each policy's system_cost minus the heuristic's, paired by seed."""
    parts = []
    for pol, entry in summary_sc.items():
        d = entry.get("system_cost_vs_heuristic")
        if not d:
            continue
        text = f"{pol} {_signed(d['mean_diff'], '+.3f')} $"
        if d["ci95"] is not None:
            text += (f" [{_signed(d['mean_diff'] - d['ci95'], '+.3f')}, "
                     f"{_signed(d['mean_diff'] + d['ci95'], '+.3f')}]")
        if d["relative"] is not None:
            text += f" ({_signed(100.0 * d['relative'], '+.2f')} %)"
        text += f", n {d['n_pairs']}"
        if d["unpaired_seeds"]:
            text += f", unpaired seeds {d['unpaired_seeds']}"
        parts.append(text)
    if not parts:
        return ""
    return (f"system_cost minus the {PAIRED_BASELINE}'s, paired by seed (mean [95 % CI] "
            "(relative), episodes): " + "; ".join(parts) + ".")


def ufls_text(runs: Sequence[dict[str, Any]], scenario: str, policies: Sequence[str]) -> str:
    """``results.md``'s line of each policy's nadir against ERCOT's first under-frequency
    load-shedding stage (:data:`~gridswarm_env.metrics.UFLS_FIRST_STAGE_HZ`, DESIGN §3):
    the lowest nadir over its episodes minus 59.3 Hz (negative: load would have been
    shed) and, when any, how many episodes went below; empty without episodes."""
    from gridswarm_env.metrics import UFLS_FIRST_STAGE_HZ

    parts = []
    for pol in policies:
        nadirs = [v for r in runs if r["scenario"] == scenario and r["policy"] == pol
                  and (v := _numeric(r["metrics"].get("frequency_nadir_hz"))) is not None]
        if not nadirs:
            continue
        text = f"{pol} {min(nadirs) - UFLS_FIRST_STAGE_HZ:+.3f} Hz"
        below = sum(v < UFLS_FIRST_STAGE_HZ for v in nadirs)
        if below:
            text += f" (below it in {below} of {len(nadirs)} episodes)"
        parts.append(text)
    if not parts:
        return ""
    return (f"Nadir against ERCOT's first under-frequency load-shedding stage "
            f"({UFLS_FIRST_STAGE_HZ:g} Hz), lowest nadir over the episodes minus "
            f"{UFLS_FIRST_STAGE_HZ:g} Hz (negative: load shed): " + "; ".join(parts) + ".")


def write_markdown(path: Path, summary: dict[str, Any], header: dict[str, Any],
                   notes: list[str], counterfactual: dict[str, dict[str, Any]], *,
                   runs: Sequence[dict[str, Any]] = (), randomized: bool = False,
                   overwrite: bool = True) -> None:
    """``results.md``: one KPI table per scenario, mean ± std over episodes (with
    ``randomized``, the title says so and each scenario lists the episodes ``runs``
    drew), then each policy's nadir against the first UFLS stage (:func:`ufls_text`,
    from ``runs``).

    :param overwrite: replace a file at ``path``; False writes only a new or empty file
        (:func:`~policies.cli_checks.write_output_text`: ``FileExistsError`` otherwise).
    """
    from gridswarm_env.metrics import UFLS_FIRST_STAGE_HZ

    title = RESULTS_MD_TITLE + (
        " — randomized scenarios (--randomize)" if randomized else "")
    lines = [title, ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += [f"- note: {n}" for n in notes]
    lines.append("")
    for sc, per_policy in summary.items():
        lines += [f"## {sc}", ""]
        draws = draws_text(runs, sc)
        if draws:
            lines += [draws, ""]
        cf = counterfactual.get(sc)
        if cf:
            # these KPIs are never None by design: None is a NaN or inf (json_safe), shown
            # as such rather than failing the whole results.md after every episode ran
            def value(key: str, spec: str, cf: dict[str, Any] = cf) -> str:
                v = cf.get(key)
                return "NaN/inf" if v is None else format(v, spec)

            rocof = cf.get("max_rocof_hz_per_s")
            rocof_text = "" if rocof is None else f", max RoCoF {rocof:.3f} Hz/s"
            nadir = cf.get("frequency_nadir_hz")
            margin = ("–" if nadir is None
                      else f"{nadir - UFLS_FIRST_STAGE_HZ:+.3f} Hz")
            lines += [f"No-DER counterfactual (shadow mode, seed {cf['seed']}): nadir "
                      f"{value('frequency_nadir_hz', '.3f')} Hz ({margin} from the "
                      f"{UFLS_FIRST_STAGE_HZ:g} Hz first UFLS stage), zenith "
                      f"{value('frequency_zenith_hz', '.3f')} Hz{rocof_text}, "
                      f"{value('seconds_outside_band', '.1f')} s outside 59.95-60.05 Hz.", ""]
        cols = ["policy", "episodes", *map(kpi_column, TABLE_KPIS), "cost / oracle"]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for pol, entry in per_policy.items():
            rel = entry["system_cost_vs_oracle"]
            cells = [pol, str(entry["episodes"])]
            broken = entry.get("nonfinite_only", {})
            cells += [_fmt(entry["kpis"].get(k)) if k not in broken
                      else "–" + _missing_text(broken[k]) for k in TABLE_KPIS]
            cells.append("–" if rel is None else f"{rel:.4f}")
            lines.append("| " + " | ".join(cells) + " |")
        for extra in (_paired_text(per_policy), ufls_text(runs, sc, list(per_policy))):
            if extra:
                lines += ["", extra]
        walls = [f"{pol} {entry['wall_time_s']:.1f} s" for pol, entry in per_policy.items()
                 if entry.get("wall_time_s") is not None]
        lines += ["", "Wall time: " + ", ".join(walls) + "." if walls else "", ""]
    write_output_text(path, "\n".join(lines), overwrite=overwrite)


def plot_frequency(path: Path, scenario: str, traces: dict[str, np.ndarray],
                   physics_dt_s: float, counterfactual: np.ndarray | None = None) -> None:
    """Sub-step frequency of every policy (first seed), with the NERC band and the
    no-DER counterfactual (dashed) when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gridswarm_env.metrics import BAND_HZ, NOMINAL_HZ, SHEDDING_STAGE_HZ

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for pol, freq in traces.items():
        t = physics_dt_s * np.arange(1, freq.size + 1)
        ax.plot(t, freq, lw=1.0, label=pol)
    if counterfactual is not None:
        t = physics_dt_s * np.arange(1, counterfactual.size + 1)
        ax.plot(t, counterfactual, color="grey", ls="--", lw=1.0, label="no DER (shadow)")
    for y in (NOMINAL_HZ - BAND_HZ, NOMINAL_HZ + BAND_HZ):
        ax.axhline(y, color="grey", ls="--", lw=0.8)
    if scenario == "emergency":
        ax.axhline(SHEDDING_STAGE_HZ, color="red", ls=":", lw=0.8, label="59.5 Hz shedding")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(f"{scenario}: grid frequency (every physics sub-step, first seed)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_costs(path: Path, summary: dict[str, Any], policies: list[str]) -> None:
    """Mean system_cost relative to the oracle's mean (absolute, log scale, without one),
    with error bars of one sample standard deviation of the policy's cost over the
    seeds (relative to the oracle's mean: the spread results.md gives as ±)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(summary)
    has_oracle = "oracle" in policies
    width = 0.8 / max(len(policies), 1)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = np.arange(len(scenarios))
    for j, pol in enumerate(policies):
        vals, errs = [], []
        for sc in scenarios:
            entry = summary[sc][pol]
            stat = entry["kpis"].get("system_cost")
            std = stat["std"] if stat and stat["std"] is not None else np.nan
            if has_oracle:
                rel = entry["system_cost_vs_oracle"]
                vals.append(np.nan if rel is None else rel)
                oracle_mean = summary[sc]["oracle"]["kpis"].get("system_cost", {}).get("mean")
                errs.append(std / oracle_mean if rel is not None and oracle_mean else np.nan)
            else:
                vals.append(stat["mean"] if stat else np.nan)
                errs.append(std)
        bars = ax.bar(x + (j - (len(policies) - 1) / 2) * width, vals, width, label=pol,
                      yerr=errs, capsize=2)
        ax.bar_label(bars, labels=[f"{v:.3g}" if np.isfinite(v) else "" for v in vals],
                     fontsize=7)
    ax.set_xticks(x, scenarios)
    ax.set_yscale("log")
    if has_oracle:
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_ylabel("mean system_cost / oracle (log)")
    else:
        ax.set_ylabel("mean system_cost, $ (log)")
    ax.set_title("system_cost by scenario (error bars: ± 1 sample std over the seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class ScalarWriter:
    """Minimal tensorboard scalar writer (tensorboard's own event-file writer)."""

    def __init__(self, logdir: Path) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        logdir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(logdir))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])
        self._writer.add_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        self._writer.close()


# --------------------------------------------------------------------------- evaluate
def evaluate(policies: Sequence[str] | str | None = None,
             scenarios: Sequence[Any] | str | Any | None = None, episodes: int = 5,
             seed: int = 0, n_agents: int | None = None, out_dir: str | Path = "eval_out", *,
             trust: str | None = None,
             limits: str | Path | LimitsFile | dict[str, Any] | Any = None, progress: bool = True,
             notes: list[str] | None = None, counterfactual: bool = True,
             crypto_threads: int | None = None, randomize: bool = False,
             contract_keys: str | None = None, env_config: Any = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Run every policy x scenario x seed and write the outputs (module docstring).

    An argument error names the keyword and its flag (``n_agents (--agents) = 2.0: must
    be an integer >= 1``; :func:`argument_name`).

    :param policies: names / model paths (a comma-separated string or a list; a policy of
        your own: :func:`policies.register` it, then give its name), or None for the
        defaults.
    :param scenarios: ``"all"`` or None (every registered scenario), names, and
        :class:`~gridswarm_env.scenarios.Scenario` objects (alone or in a list), each
        reported under its ``name`` (:func:`resolve_scenarios`). A scenario that is not
        the registered one of its name is recorded field by field in
        ``summary.config.custom_scenarios`` (:func:`scenario_record`) and named in
        results.md's header. Scenario files (``FILE.toml`` items, read here, or
        :class:`~gridswarm_env.scenarios.ScenarioFile` objects already read, as
        :func:`main` hands them on) are also recorded by path and SHA-256 in
        ``summary.config.scenario_files`` (:func:`scenario_files`) and in that header line.
    :param episodes: episodes per policy and scenario (seeds ``seed`` … ``seed+episodes−1``).
    :param seed: first seed.
    :param n_agents: agents per environment (None: ``env_config``'s, by default 100).
    :param out_dir: output directory (created).
    :param trust: ``"ed25519"`` or ``"hmac"`` (None: ``env_config``'s, by default ed25519).
    :param limits: kernel limits TOML file (read once), a
        :class:`~policies.cli_checks.LimitsFile` of one already read (:func:`main`'s:
        not read again), a dict or ``Limits``, or None for the defaults.
    :param progress: show a progress bar on stderr.
    :param notes: extra notes for the report (e.g. skipped policies).
    :param counterfactual: also run the first seed of every scenario in shadow mode
        (nothing dispatched) as the no-DER reference.
    :param crypto_threads: ``EnvConfig.crypto_threads``, 1 to the cores this process may
        use (:func:`policies.cli_checks.max_crypto_threads`, as in ``demo.py``; None:
        ``env_config``'s, by default 2 with libsodium on 2+ cores, else 1; the results do
        not depend on it).
    :param randomize: play every scenario randomized per episode (``--randomize``,
        :func:`gridswarm_env.scenarios.randomized`).
    :param contract_keys: ``EnvConfig.contract_keys``: ``"random"`` (``os.urandom``) or
        ``"seeded"`` (derived from each episode's seed, reproducible, known to anyone
        who knows the seed); None: ``env_config``'s, by default random; the results do
        not depend on it.
    :param env_config: an :class:`~gridswarm_env.config.EnvConfig` for every environment
        (a fleet, ``dt_s``, market levels, grid or costs of your own), or None for the
        defaults; recorded in ``summary.config.env_config``. Or a
        :class:`~policies.cli_checks.EnvConfigFile` (``EnvConfigFile.read(path)``, or
        :func:`main`'s, the ``--config`` file read once: not read again): its ``config``
        is played, and its path and SHA-256 are recorded in
        ``summary.config.env_config_file`` (``{"path", "sha256"}``; None for an
        ``EnvConfig``) and in results.md's ``environment`` line. ``n_agents``, ``trust``,
        ``crypto_threads`` and ``contract_keys`` are its fields: left out (None) they
        take its values; given, they override a field it left at ``EnvConfig()``'s
        default (``crypto_threads`` any field), and one that differs from a field it
        changed is refused (:func:`env_settings`); the effective configuration is
        recorded. Its ``shadow`` must be False and ``audit_path`` None.
    :param overwrite: a ``results.json`` or ``results.md`` in ``out_dir`` that this
        program did not write may be replaced (``--overwrite``); without it such a file
        (not empty) is refused before any episode, and one that appears there during the
        run is kept (the output goes to the temporary directory: ``OutputError``). Its
        own earlier outputs are replaced either way.
    :returns: the ``results.json`` content.
    :raises UsageError: bad arguments (unknown policy / scenario, counts < 1, bad limits,
        ``crypto_threads`` out of range, a scenario the configuration cannot play, an
        argument that disagrees with a field ``env_config`` changed, outputs that cannot be written,
        a ``results.json`` or ``results.md`` in ``out_dir`` not written by this program
        without ``overwrite``), before any output exists.
    :raises OutputError: an output could not be written at the end (the others were;
        it went to the temporary directory instead, see the message; ``out_dir``'s
        earlier outputs and tensorboard event files are left in place and this run's
        event file stays in its ``gridswarm-evaluate-*`` temporary directory, named in
        the message, so two runs' curves are not mixed in ``out_dir/tensorboard``).
    :raises EvaluationFailed: a policy or the environment raised during an episode (the
        finished episodes are saved, see its message).
    :raises EvaluationInterrupted: Ctrl-C during the episodes (likewise), or SIGTERM
        when it raises :class:`~policies.cli_checks.Terminated` (as under the command
        line, or in a ``with policies.cli_checks.sigterm_as_interrupt():`` block; no
        SIGTERM handler is set here: the caller's, or Python's default, which ends the
        process, applies); one that came after the last episode, held back until the
        outputs were written, has ``written`` set to ``out_dir`` (``saved`` None;
        ``problem``: the :class:`OutputError`'s message when one could not be).
    """
    import gridswarm_env
    from gridswarm_env.config import check_bool, override
    from gridswarm_env.scenarios import RANDOMIZE_PRESET, randomized
    from policies import make_policy
    from policies.learned import trained_settings_note
    from policies.rollout import run_episode

    env_config, config_file = env_config_source(env_config)
    base_config, given = env_settings(env_config, n_agents=n_agents, trust=trust,
                                      crypto_threads=crypto_threads,
                                      contract_keys=contract_keys)
    n_agents, trust = given["n_agents"], given["trust"]
    pols, given_scenarios, pol_notes, limits_obj, limits_sha256 = check_arguments(
        policies, scenarios, episodes, seed, n_agents, trust, limits, fleet=base_config.fleet)
    chosen = {name: played_scenario(sc) for name, sc in given_scenarios.items()}
    scs = list(chosen)

    def drawn(env: Any) -> dict[str, Any]:   # the episode's draw, recorded when randomized
        return {"scenario_drawn": env.unwrapped.scenario.drawn_values()} if randomize else {}

    try:   # demo.py's rule: 1 to the cores this process may use
        sep = _value_sep().rstrip()
        env_config = override(
            base_config, n_agents=int(n_agents), trust=trust,
            # env_config's own value is EnvConfig's to check (a larger one acts as the cores)
            crypto_threads=given["crypto_threads"] if crypto_threads is None else
            check_crypto_threads(crypto_threads, argument_name("crypto_threads") + sep),
            contract_keys=check_contract_keys(given["contract_keys"],
                                              argument_name("contract_keys") + sep))
        check_bool("randomize", randomize)
        check_bool("progress", progress)
        check_bool("counterfactual", counterfactual)
        check_bool(argument_name("overwrite"), overwrite, sep=_value_sep())
        if not isinstance(out_dir, str | os.PathLike):
            raise ValueError(f"{argument_value('out_dir', out_dir)}: expected a directory "
                             "path")
        if notes is not None and (not isinstance(notes, list | tuple)
                                  or not all(isinstance(n, str) for n in notes)):
            raise ValueError(f"notes = {notes!r}: expected a list of strings or None")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    contract_keys = env_config.contract_keys
    try:   # what the environments are given
        played = {name: randomized(sc) if randomize else sc for name, sc in chosen.items()}
    except ValueError as exc:   # a custom scenario whose times the preset would move below 0
        raise UsageError(f"{argument_name('scenarios')} with {argument_name('randomize')}: "
                         f"{exc}") from None

    def make_env(name: str, **kwargs: Any) -> Any:
        try:
            return gridswarm_env.parallel_env(scenario=played[name], limits=limits_obj,
                                              config=env_config, **kwargs)
        except ValueError as exc:   # e.g. a custom scenario the configuration cannot play
            raise UsageError(str(exc)) from None

    episodes, n_agents = int(episodes), int(n_agents)
    for name in scs:   # every scenario can be played (hmac: no key pairs to make)
        make_env(name, trust="hmac").close()
    all_notes = list(dict.fromkeys(list(notes or []) + pol_notes
                                   + ([] if "oracle" in pols else [NO_COST_PLOT])))
    out = check_outputs(out_dir, scs, overwrite)
    levels = (env_config.market.n_power_levels, env_config.market.n_price_levels)
    # each policy is built (a model loaded) once, here: a model that does not load or
    # fit fails now, not after other episodes, and every scenario and seed is played by
    # the same model, the one whose SHA-256 the results record (a model file rewritten
    # during the run, e.g. a training run's best_model.zip, changes nothing)
    built: dict[str, Any] = {}
    for pol in pols:
        try:
            built[pol] = policy = make_policy(pol)
            if hasattr(policy, "check_action_levels"):
                policy.check_action_levels(levels)
                note = trained_settings_note(policy, n_agents, list(chosen.values()),
                                             randomize, env_config)
                if note is not None and note not in all_notes:   # now, and in results.md
                    # a warning (Note): the command line shows "evaluate.py: note: ..."
                    warnings.warn(note, Note, stacklevel=2)
                    all_notes.append(note)
        except ValueError as exc:   # a model that does not load or fit: name the flag
            what, msg = argument_name("policies"), str(exc)
            raise UsageError(msg if msg.startswith(what) else f"{what}: {msg}") from None
        except ModuleNotFoundError as exc:   # learned without the training extra
            raise UsageError(missing_package_message(pol, exc)) from None
        except KeyboardInterrupt as exc:   # a model loading: nothing written yet
            raise EvaluationInterrupted(0, len(pols) * len(scs) * episodes, None,
                                        by=interrupted_by(exc)) from None
    # directories this run creates: removed again (when empty) if it does not finish
    created = dirs_to_create(out / TENSORBOARD_DIR)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {str(out)!r}: {exc}") from None

    jobs = [(pol, sc, seed + e) for sc in scs for pol in pols for e in range(episodes)]
    bar = None
    if progress:
        from tqdm import tqdm

        # the no-DER baselines (shadow mode) are episodes too, and named as such
        bar = tqdm(total=len(jobs) + (len(scs) if counterfactual else 0), desc="evaluate",
                   unit="episode", file=sys.stderr)
    runs: list[dict[str, Any]] = []
    traces: dict[str, dict[str, np.ndarray]] = {sc: {} for sc in scs}
    wall: dict[str, dict[str, float]] = {sc: {} for sc in scs}
    physics_dt_s = env_config.grid.physics_dt_s   # every environment's (make_env: env_config)
    no_der: dict[str, dict[str, Any]] = {}
    no_der_traces: dict[str, np.ndarray] = {}
    earlier_events = _event_files(out)
    earlier = earlier_scenarios(out)   # before results.json is overwritten
    t_start = time.perf_counter()
    finished = False
    tags = tag_names(pols)
    config = {"policies": pols, "scenarios": scs, "episodes": episodes, "seed": seed,
              "seeds": list(range(seed, seed + episodes)),
              "n_agents": n_agents, "trust": trust, "contract_keys": contract_keys,
              "limits": limits_path(limits),
              "limits_source": ("defaults" if limits is None
                                else "file" if limits_path(limits) is not None else "in-memory"),
              "limits_values": limits_obj.to_dict(),
              "scenario_randomization": dict(RANDOMIZE_PRESET) if randomize else None,
              "custom_scenarios": custom_scenarios(chosen),
              "scenario_files": scenario_files(given_scenarios),
              "env_config": env_config_record(env_config),
              # the same, exact (JSON turns inf into null): a --config file
              "env_config_toml": env_config_toml(env_config),
              "env_config_file": config_file,   # the --config file: path, SHA-256
              "policy_details": {pol: policy_identity(pol, built[pol]) for pol in pols},
              "provenance": provenance(limits_sha256)}
    nonfinite: list[dict[str, Any]] = []     # episodes with NaN / inf KPIs
    policy_warnings: list[str] = []          # e.g. an oracle re-plan that failed
    baseline_warnings: list[str] = []        # a no-DER baseline with NaN / inf KPIs
    current = "before the first episode"
    # the event file is written in the temporary directory and moved into DIR with the
    # other outputs: a process ended during the episodes (SIGTERM left to Python's
    # default, SIGKILL) leaves no partial one beside an earlier run's
    staging = Path(tempfile.mkdtemp(prefix="gridswarm-evaluate-"))
    writer = ScalarWriter(staging)
    try:
        for sc in scs:
            if counterfactual:
                current = f"no-DER baseline (shadow) / {sc} / seed {seed}"
                if bar is not None:
                    bar.set_postfix_str(current)
                env = make_env(sc, shadow=True)
                res = run_episode(env, make_policy("heuristic"), seed=seed, keep_substeps=True)
                kept = {k: res.metrics[k] for k in (
                    "frequency_nadir_hz", "frequency_zenith_hz", "max_abs_deviation_hz",
                    "seconds_outside_band", "max_rocof_hz_per_s")}
                no_der[sc] = {"seed": seed, **json_safe(kept), **drawn(env)}
                broken = nonfinite_keys(kept)
                if broken:   # a broken baseline, as a broken episode: said, not hidden
                    baseline_warnings.append(
                        f"warning: {current}: non-finite {', '.join(broken)} (null in "
                        "results.json)")
                if res.freq_substeps_hz is not None:
                    no_der_traces[sc] = res.freq_substeps_hz
                env.close()
                if bar is not None:
                    bar.update(1)
            for pol in pols:
                env = make_env(sc)
                policy = built[pol]
                t_pol = time.perf_counter()
                for e in range(episodes):
                    s = seed + e
                    current = f"{pol} / {sc} / seed {s}"
                    if bar is not None:
                        bar.set_postfix_str(current)
                    res = run_episode(env, policy, seed=s, keep_substeps=(e == 0))
                    broken = nonfinite_keys(res.metrics)
                    if broken:
                        nonfinite.append({"policy": pol, "scenario": sc, "seed": s,
                                          "metrics": broken})
                    policy_warnings += [f"{pol} / {sc} / seed {s}: oracle re-plan failed, "
                                        f"kept bidding its previous plan ({why})"
                                        for why in getattr(policy, "replan_failures", None) or ()]
                    metrics = json_safe(res.metrics)
                    runs.append({"policy": pol, "scenario": sc, "seed": s,
                                 "n_agents": n_agents, "metrics": metrics, **drawn(env)})
                    if e == 0 and res.freq_substeps_hz is not None:
                        traces[sc][pol] = res.freq_substeps_hz
                    for key, value in metrics.items():
                        v = _numeric(value)
                        if v is not None:
                            writer.add_scalar(f"eval/{sc}/{tags[pol]}/{key}", v, e)
                    if bar is not None:
                        bar.update(1)
                env.close()
                wall[sc][pol] = time.perf_counter() - t_pol
        finished = True
    except KeyboardInterrupt as exc:   # Ctrl-C, or Terminated (SIGTERM)
        if bar is not None:
            bar.close()
        by = interrupted_by(exc)
        saved, problem = save_interrupted(runs, pols, scs, config, no_der, nonfinite=nonfinite,
                                          by=by)
        raise EvaluationInterrupted(len(runs), len(jobs), saved, problem, by=by) from None
    except Exception as exc:   # a policy or the environment failed mid-run
        if bar is not None:
            bar.close()
        if not runs and isinstance(exc, UsageError):
            raise
        import traceback

        failure = {"during": current, "type": type(exc).__name__, "message": str(exc),
                   "traceback": traceback.format_exc()}
        saved, problem = save_interrupted(runs, pols, scs, config, no_der,
                                          nonfinite=nonfinite, failure=failure)
        raise EvaluationFailed(current, exc, len(runs), len(jobs), saved, problem) from exc
    finally:
        writer.close()
        if bar is not None:
            bar.close()
        if not finished:   # leave DIR as it was: drop this run's partial event file (in
            # the temporary directory) and the directories it created, if empty
            shutil.rmtree(staging, ignore_errors=True)
            remove_unfinished_run((), created)
    try:
        # a Ctrl-C or SIGTERM from now on is held back until every output is written
        with stop_signals_deferred():
            elapsed = time.perf_counter() - t_start

            summary = summarize(runs, pols, scs, nonfinite)
            for sc in scs:
                for pol in pols:
                    summary[sc][pol]["wall_time_s"] = wall[sc].get(pol)
            all_notes += nonfinite_notes(nonfinite) + baseline_warnings + policy_warnings
            result = json_safe({
                "runs": runs,
                "summary": {"config": config, "wall_time_s": elapsed, "notes": all_notes,
                            "scenarios": summary, "no_der_counterfactual": no_der,
                            "nonfinite": nonfinite,
                            "policy_warnings": policy_warnings},
            })
            header = {"policies": ", ".join(pols), "scenarios": ", ".join(scs),
                      "scenario randomization": randomization_text(config),
                      "episodes": f"{episodes} per policy and scenario "
                                  f"(seeds {seed}…{seed + episodes - 1})",
                      "agents": n_agents, "trust": trust, "contract keys": contract_keys,
                      "limits": limits_text(config),
                      **custom_lines(chosen, env_config, config["scenario_files"],
                                     config["env_config_file"]),
                      **identity_lines(config),
                      "statistics": STATISTICS_TEXT,
                      "wall time": f"{elapsed:.1f} s"}
            text = json.dumps(result, indent=1, allow_nan=False)
            # a file that is not this program's, appeared there during the run, is kept
            writes = [("results.json", "the results (results.json)",
                       lambda p: write_output_text(p, text,
                                                   overwrite=overwrite or is_results_json(p))),
                      ("results.md", "the results table (results.md)",
                       lambda p: write_markdown(p, summary, header, all_notes, no_der,
                                                runs=runs, randomized=randomize,
                                                overwrite=overwrite or is_results_md(p)))]
            for sc in scs:
                if traces[sc]:
                    writes.append((f"freq_{sc}.png", f"the frequency plot of {sc}",
                                   lambda p, sc=sc: plot_frequency(
                                       p, sc, traces[sc], physics_dt_s,
                                       no_der_traces.get(sc))))
            if "oracle" in pols:   # the plot is cost relative to the oracle's
                writes.append(("cost_vs_oracle.png", "the cost plot",
                               lambda p: plot_costs(p, summary, pols)))
            failures = [msg for name, what, write in writes
                        if (msg := write_or_rescue(out / name, write, what)[1]) is not None]
            if failures:   # this run's event file stays with its rescued outputs: moved
                # beside the earlier run's (kept), the two runs' curves would be mixed
                failures.append(f"this run's tensorboard scalars are in {str(staging)!r}, "
                                f"not in {str(out / TENSORBOARD_DIR)!r}")
            elif (moved := move_event_files(staging, out / TENSORBOARD_DIR)) is not None:
                failures.append(moved)
            if failures:   # keep the earlier run's files: some of this run's are elsewhere
                raise OutputError("; ".join(failures) + f"; earlier outputs in {str(out)!r} "
                                  "were left in place")
            remove_stale_outputs(out, scs, earlier_events, cost_plot="oracle" in pols,
                                 earlier=earlier)
    except KeyboardInterrupt as exc:   # held back while the outputs were written
        # raised as the handlers were put back: it replaced an OutputError, if any
        failed = exc.__context__ if isinstance(exc.__context__, OutputError) else None
        raise EvaluationInterrupted(len(runs), len(jobs), None,
                                    None if failed is None else str(failed),
                                    by=interrupted_by(exc), written=out) from None
    return result


def move_event_files(staging: Path, logdir: Path) -> str | None:
    """Move the event file written in ``staging`` into ``logdir`` and remove
    ``staging``; None when done, else a one-line message (the file is then left in
    ``staging``, which the message names)."""
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        for events in sorted(staging.glob(EVENT_FILE_GLOB)):
            shutil.move(str(events), str(logdir / events.name))
    except OSError as exc:
        return (f"could not write the tensorboard scalars to {str(logdir)!r} "
                f"({exc.strerror or type(exc).__name__}); they are in {str(staging)!r}")
    shutil.rmtree(staging, ignore_errors=True)
    return None


def save_interrupted(runs: list[dict[str, Any]], policies: list[str], scenarios: list[str],
                     config: dict[str, Any], no_der: dict[str, Any], *,
                     nonfinite: Sequence[dict[str, Any]] = (),
                     failure: dict[str, Any] | None = None,
                     by: str = "Ctrl-C") -> tuple[Path | None, str | None]:
    """Save the finished episodes of an interrupted or failed run to a new file in the
    temporary directory (``results.json`` layout, ``summary.interrupted`` true, and
    ``summary.failure`` — where, the error and its traceback — when an error stopped it,
    else ``summary.interrupted_by``, ``by``: ``"Ctrl-C"`` or ``"SIGTERM"``), not to
    ``DIR``, whose earlier outputs stay as they were. A second Ctrl-C or SIGTERM while
    writing is ignored.

    :returns: (the file or None, a one-line problem or None); (None, None) when no
        episode had finished and no error stopped the run (a failure before the first
        episode finished is saved all the same: its traceback is not printed).
    """
    if not runs and failure is None:
        return None, None
    why = (f"interrupted{' by SIGTERM' if by == 'SIGTERM' else ''}" if failure is None
           else f"failed during {failure['during']}")
    doc = json_safe({"runs": runs, "summary": {
        "config": config, "interrupted": True, "episodes_finished": len(runs),
        **({"failure": failure} if failure is not None else {"interrupted_by": by}),
        "notes": [f"{why}: only the episodes in runs finished", *nonfinite_notes(nonfinite)],
        "scenarios": summarize(runs, policies, scenarios, nonfinite),
        "no_der_counterfactual": no_der, "nonfinite": list(nonfinite)}})
    text = json.dumps(doc, indent=1, allow_nan=False)
    with stop_signals_ignored():
        try:
            path = rescue_path("results-interrupted.json" if failure is None
                               else "results-failed.json")
            path.write_text(text)
            return path, None
        except OSError as exc:
            what = "their results" if runs else "the traceback"
            return None, f"saving {what} failed ({exc.strerror or type(exc).__name__})"


def interrupted_by(exc: KeyboardInterrupt) -> str:
    """``"SIGTERM"`` for :class:`~policies.cli_checks.Terminated`, else ``"Ctrl-C"``."""
    from policies.cli_checks import Terminated

    return "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"


def episodes_text(episodes: int, baselines: int) -> str:
    """``12 episodes + 3 no-DER baselines``: what the progress bar counted (15)."""
    text = f"{episodes} episode{'s' if episodes != 1 else ''}"
    if baselines:
        text += f" + {baselines} no-DER baseline{'s' if baselines != 1 else ''} (shadow mode)"
    return text


# --------------------------------------------------------------------------- command line
class _Parser(OneLineParser):
    """:class:`~policies.cli_checks.OneLineParser` (one-line errors, a hint for an
    unknown option close to one of ours: ``--policy``, demo.py's flag: ``did you mean
    --policies?``) whose errors raise :class:`UsageError`, for :func:`main` to print."""

    def error(self, message: str) -> NoReturn:   # type: ignore[override]
        # as demo.py's and python -m train's parsers say it
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    from gridswarm_env.config import AGENT_LIMIT_WHY, MAX_AGENTS
    from gridswarm_env.scenarios import randomize_text, scenario_names

    p = _Parser(prog="evaluate.py", description="Evaluate bidding policies across "
                "scenarios and seeds; writes results.json, results.md, PNG plots and "
                "tensorboard scalars.")
    p.add_argument("--policies", default=None,
                   help="comma-separated policy names or model paths (default: "
                        f"{','.join(DEFAULT_POLICIES)},learned; learned only when "
                        "policies/pretrained/ has a model)")
    p.add_argument("--scenarios", default="all", metavar="S,...",
                   help=f"scenarios, comma-separated: {', '.join(scenario_names())}, 'all' "
                        "(every one), or scenario files FILE.toml (base = \"<name>\" plus "
                        "the fields it changes) (default: %(default)s)")
    p.add_argument("--episodes", type=int_flag_type("--episodes", 1), default=5, metavar="N",
                   help="episodes per policy and scenario (default: %(default)s)")
    p.add_argument("--seed", type=int_flag_type("--seed", 0), default=0, metavar="N",
                   help="first seed; episode e uses seed + e (default: %(default)s)")
    p.add_argument("--agents", type=int_flag_type("--agents", 1, MAX_AGENTS, AGENT_LIMIT_WHY),
                   default=None, metavar="N",
                   help=f"number of DER agents, 1 to {MAX_AGENTS:,} (default: 100, or "
                        "--config's n_agents)")
    p.add_argument("--out", default="eval_out", metavar="DIR",
                   help="output directory (default: %(default)s). A re-run replaces this "
                        "program's outputs there: after a successful run, freq_<scenario>.png of "
                        "the scenarios it did not run (registered ones and those the "
                        "earlier results.json lists), earlier tensorboard event files and, "
                        "when no oracle ran, an earlier cost_vs_oracle.png are removed; "
                        "nothing else in DIR is touched. A results.json or results.md "
                        "there that this program did not write is refused unless "
                        "--overwrite")
    p.add_argument("--trust", default=None, choices=TRUST_CHOICES,
                   help="contract signatures (default: ed25519, or --config's trust; hmac "
                        "is faster)")
    p.add_argument("--limits", default=None, metavar="FILE",
                   help="kernel limits TOML file (default: the built-in limits)")
    add_crypto_threads_argument(p, "the results are the same")
    p.add_argument("--randomize", action="store_true",
                   help="randomize every scenario " + randomize_text().replace("%", "%%")
                        + "; results.md's title and header say so (not comparable with a "
                        "run without it)")
    add_contract_keys_argument(p)
    add_governor_deadband_argument(p, "every episode, the no-DER baseline's too")
    add_config_argument(p, "every episode (the no-DER baseline's too; shadow and "
                           "audit_path refused)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace a results.json or results.md that this program "
                        "did not write (its own earlier outputs are replaced without it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit status (0 ok, 1 an output could not be written
    where asked or an episode failed, 2 bad arguments, 130 interrupted, 143 SIGTERM,
    handled as Ctrl-C is). Warnings are one line each,
    ``evaluate.py: warning: ...`` (:func:`policies.cli_checks.one_line_warnings`)."""
    from policies.cli_checks import one_line_warnings

    with one_line_warnings("evaluate.py"), sigterm_as_interrupt():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    names = _COMMAND_LINE.set(True)   # argument errors name the flags alone
    try:
        return _run_command_line(argv)
    finally:
        _COMMAND_LINE.reset(names)


#: why a ``--config`` file may not set ``shadow``
EVALUATE_REFUSES_SHADOW = ("evaluate.py plays every policy live (its no-DER baseline is the "
                           "shadow-mode run); remove it from the file")


def config_file_of_args(args: argparse.Namespace) -> Any:
    """What :func:`main` hands :func:`evaluate` as ``env_config``:
    :func:`~policies.cli_checks.env_config_file_from_args` (``--config FILE`` with the
    flags given over it, an :class:`~policies.cli_checks.EnvConfigFile` naming the file
    and the SHA-256 of the bytes read; the ``EnvConfig`` alone without a file).

    :raises UsageError: the file's refusal, or a file asking for shadow mode (the
        message names ``--config``).
    """
    try:
        return env_config_file_from_args(args, refuse={"shadow": EVALUATE_REFUSES_SHADOW})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _run_command_line(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        env_config = config_file_of_args(args)   # the file read once: recorded, not again
        settings = env_config_source(env_config)[0]
        pols, scenarios, notes, limits_obj, limits_sha256 = check_arguments(
            args.policies, args.scenarios, args.episodes, args.seed, settings.n_agents,
            settings.trust, args.limits, fleet=settings.fleet)
        # the file read once: the run uses (and records the hash of) the bytes checked here
        limits = (None if args.limits is None
                  else LimitsFile(args.limits, limits_obj, limits_sha256))
        for note in notes:
            print(f"evaluate.py: note: {note}", file=sys.stderr)
        # the scenario files read once too: the scenarios checked here are played
        result = evaluate(pols, list(scenarios.values()), args.episodes, args.seed, None, args.out,
                          limits=limits, progress=not args.no_progress, notes=notes,
                          randomize=args.randomize, env_config=env_config,
                          overwrite=args.overwrite)
    except UsageError as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    except OutputError as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 1
    except EvaluationInterrupted as exc:
        print(f"evaluate.py: {exc.message(args.out)}", file=sys.stderr)
        return EXIT_SIGTERM if exc.by == "SIGTERM" else EXIT_CTRL_C
    except EvaluationFailed as exc:
        print(f"evaluate.py: error: {exc.message(args.out)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        by = interrupted_by(exc)
        print(f"evaluate.py: interrupted{' by SIGTERM' if by == 'SIGTERM' else ''}",
              file=sys.stderr)
        return EXIT_SIGTERM if by == "SIGTERM" else EXIT_CTRL_C
    out = Path(args.out)
    baselines = len(result["summary"]["no_der_counterfactual"])
    try:
        print(f"wrote {out / 'results.json'}, {out / 'results.md'}, plots and tensorboard "
              f"scalars ({episodes_text(len(result['runs']), baselines)}, "
              f"{result['summary']['wall_time_s']:.1f} s)")
        print((out / "results.md").read_text(), flush=True)
    except BrokenPipeError:
        # the reader went away (`| head`): the results are written; no traceback, and
        # nothing more to stdout (Python's flush at exit would raise again)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
