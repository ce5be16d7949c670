"""Environment throughput from 100 to 10 000 agents, cryptography share, latency, memory.

What is measured
----------------
* **Env rows** — ``agent_steps_per_s = n_agents / env_s_per_step``: the environment step
  through the array fast path (``raw.step_arrays`` + ``raw.action_masks()``, what the SB3
  adapter calls), with the scripted ``heuristic`` policy (:mod:`policies.heuristic`)
  acting; the policy's own time (``policy.act``) is reported separately
  (``policy_s_per_step``) and not counted in the env rate. One row also times the
  PettingZoo dict API (``env.step(dict)``: per-agent observation, reward and info
  dicts); the user-side conversions (stacking the dicts for the policy, building the
  action dict) are counted as policy time there; its repeats alternate with the array
  path's, and ``arrays_speedup`` is the median of (dict step) / (array step) over the
  pairs (the VM's speed drifts by up to 2x between rows). The rows time ``price_spike``;
  at 100 agents, hmac rows of ``solar_surplus`` and ``emergency`` follow (``"variant":
  "scenario <name>"``, repeats alternating with price_spike's; ``step_over_price_spike``
  is the median of their step time over price_spike's): the rate follows the contracts
  signed per step (``contracts_per_step``). Episodes restart when truncated; the
  reset is not timed. Each figure is the median over ``repeats`` runs of ``steps`` steps
  after a short warm-up (the first steps of an episode clear no contracts).
  ``agent_steps_per_cpu_s`` is the same rate per second of the process's CPU time
  (``time.process_time``: every thread, so the crypto worker thread's share counts),
  which other processes sharing the machine disturb less.
* **Garbage collection** (``gc_s_per_step``) — the time Python's cyclic collector runs
  during the timed loop (``gc.callbacks``). The environment pauses it during each step
  (``EnvConfig.pause_gc``), so a collection the step's objects make due can start
  right after it, inside the policy's call: such collections are counted as
  environment time, not policy time. The full run adds a variant row at the largest
  fleet with the collector left running (``"variant": "collector not paused"``,
  alternating with the default; ``pause_gc_speedup`` is the median ratio).
* **Cryptography share** (``crypto_s_per_step``, ``crypto_share``) — the registry's
  signing and verification batches are wrapped with timers, so the figure is the wall
  time the step waits for Ed25519 (or HMAC) signatures (with libsodium, two threads
  share each batch: ``EnvConfig.crypto_threads``); ``non_crypto_s_per_step`` is the
  rest of the step, to compare with the whole HMAC step. The hmac and ed25519
  repeats of an agent count alternate, and ``non_crypto_over_hmac_step`` is the median
  of that comparison over the pairs (the VM's speed drifts between rows).
* **Control for that comparison** (``padded_*`` on the ed25519 row) — the hmac step again,
  with every signing and verification batch padded by a busy wait to the length of the
  same Ed25519 batch (:class:`PaddedCalls`): same code, same data, same time
  structure, no Ed25519.
  On the development VM its time outside the calls rises as much as the ed25519
  step's does: long calls leave the caches and predictors cold for the Python that
  follows, whatever runs inside them.
* **Emergency latency** — one full ``emergency`` episode at 10 000 agents;
  ``emergency_response_latency_ms`` must stay within 100 ms of simulated time.
* **Memory** — in fresh subprocesses: the peak resident set size
  (``VmHWM``, see :func:`_peak_rss_mib`) of a whole 10 000-agent episode, and the
  resident set size sampled over a long 100-agent run (hmac, in-memory audit head only:
  ``EnvConfig(audit_keep_entries=False)``), whose growth after warm-up must stay bounded.

Usage::

    python -m benchmarks.bench_env [--quick] [--agents 100 1000 10000] [--json FILE]

:func:`run` returns the figures (``python -m benchmarks`` collects them).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import add_json_arguments, check_json_path, write_json  # noqa: E402
from gridswarm_env.config import EnvConfig  # noqa: E402
from gridswarm_env.env import GridSwarmEnv  # noqa: E402
from policies import make_policy  # noqa: E402

SEED = 0
AGENT_COUNTS = (100, 1_000, 10_000)
TRUST_MODES = ("hmac", "ed25519")
#: scenarios timed besides the headline ``price_spike``, hmac at 100 agents (variant rows)
OTHER_SCENARIOS = ("solar_surplus", "emergency")
WARMUP_STEPS = 25   # the price spike's first contracts are cleared after ~20 steps
LATENCY_BUDGET_MS = 100.0


def load_average() -> float:
    """The 1-minute load average (other processes share the CPU: report it with timings)."""
    return float(os.getloadavg()[0])


class CryptoTimer:
    """Times every signing and verification batch of an identity registry (cumulative
    wall-clock seconds).

    Replaces the registry's batch callables (``_sign_many``, ``_verify_many``: every
    contract signature the ledger makes or checks goes through them, batches of 12+
    signatures or 3+ contracts spread over ``registry.crypto_threads`` threads) by timed
    wrappers (benchmark only; ~0.3 µs per batch). ``seconds`` is the wall time the step
    spent waiting for signatures. ``sign_calls`` counts signatures made and
    ``verify_calls`` contracts checked (two verifications each, one when the agent's
    signature fails); ``sign_seconds / sign_calls`` is the wall time per signature and
    ``verify_seconds / verify_calls`` per contract checked (with two threads both fall
    with the batch size; see ``IdentityRegistry``'s ``crypto_threads``).

    :param registry: the environment's :class:`~gridswarm_env.trust.IdentityRegistry`.
    """

    def __init__(self, registry: Any) -> None:
        self.sign_seconds = self.verify_seconds = 0.0
        self.sign_calls = self.verify_calls = 0
        registry._sign_many = self._timed(registry._sign_many, "sign")
        registry._verify_many = self._timed(registry._verify_many, "verify")

    @property
    def seconds(self) -> float:
        return self.sign_seconds + self.verify_seconds

    @property
    def calls(self) -> int:
        return self.sign_calls + self.verify_calls

    def _timed(self, func: Callable[..., Any], kind: str) -> Callable[..., Any]:
        clock = time.perf_counter
        seconds, calls = f"{kind}_seconds", f"{kind}_calls"

        def timed(*args: Any) -> Any:
            t0 = clock()
            try:
                return func(*args)
            finally:
                setattr(self, seconds, getattr(self, seconds) + clock() - t0)
                setattr(self, calls, getattr(self, calls) + len(args[-1]))

        return timed


class PaddedCalls:
    """The control for the ed25519 comparison: each signing and verification batch of an
    hmac registry is padded with a busy wait to the mean Ed25519 wall time per item
    (signature made, contract checked) times its items.

    The step then runs the same code on the same data as in hmac mode, with nearly the
    time structure of ed25519 mode (the same batches, each about as long; small batches,
    which Ed25519 runs in one thread, come out a little short), but no Ed25519. If its
    time outside the batches matches the ed25519 step's, the difference between the
    ed25519 step outside cryptography and the hmac step is the machine's reaction to
    long calls (caches and predictors going cold while they run), not Ed25519 and not
    the environment. Install it before :class:`CryptoTimer`, so that the timer counts
    the padding as signature time.

    :param registry: an hmac-mode :class:`~gridswarm_env.trust.IdentityRegistry`.
    :param sign_s: wall time per signature made, s.
    :param verify_s: wall time per contract checked, s.
    """

    def __init__(self, registry: Any, sign_s: float, verify_s: float) -> None:
        registry._sign_many = self._padded(registry._sign_many, sign_s)
        registry._verify_many = self._padded(registry._verify_many, verify_s)

    @staticmethod
    def _padded(func: Callable[..., Any], per_call_s: float) -> Callable[..., Any]:
        clock = time.perf_counter

        def padded(*args: Any) -> Any:
            end = clock() + per_call_s * len(args[-1])
            try:
                return func(*args)
            finally:
                while clock() < end:
                    pass

        return padded


def settle_process() -> None:
    """Build one environment per scenario and wait 0.3 s before timing anything.

    The first environment of a process computes the grid's matrix exponential (then
    cached), and SciPy's OpenBLAS threads spin for ~0.1 s on the other core after it:
    without this, the first rows would share the machine with them.
    """
    for name in ("price_spike", "solar_surplus", "emergency"):
        GridSwarmEnv(scenario=name, n_agents=10, trust="hmac", seed=SEED).reset(seed=SEED)
    time.sleep(0.3)


def measure_env(n_agents: int, trust: str = "hmac", *, scenario: str = "price_spike",
                steps: int = 100, repeats: int = 3, api: str = "arrays",
                policy: str = "heuristic", crypto: bool = False,
                pad_calls_s: tuple[float, float] | None = None,
                crypto_threads: int | None = None, pause_gc: bool = True,
                warmup: int = WARMUP_STEPS, seed: int = SEED) -> dict[str, Any]:
    """Median per-step env and policy time over ``repeats`` runs of ``steps`` steps.

    :param n_agents: agents in the environment.
    :param trust: ``"hmac"`` or ``"ed25519"``.
    :param scenario: scenario name.
    :param steps: timed steps per repeat (episodes restart when truncated).
    :param repeats: timed runs; the figures are medians over them.
    :param api: ``"arrays"`` (``raw.step_arrays``) or ``"dict"`` (``env.step(dict)``).
    :param policy: policy name for :func:`policies.make_policy`.
    :param crypto: time signing and verification (:class:`CryptoTimer`).
    :param pad_calls_s: ``(sign_s, verify_s)``: pad every signing and verification batch
        to these durations per signature made and per contract checked (:class:`PaddedCalls`, the control of the ed25519 comparison).
    :param crypto_threads: ``EnvConfig.crypto_threads`` (None: the default).
    :param pause_gc: ``EnvConfig.pause_gc``.
    :param warmup: untimed steps after each reset.
    :param seed: environment seed (the same trajectory every repeat).
    :return: the row (see the module docstring); rates are per wall-clock second.
    """
    env = GridSwarmEnv(scenario=scenario, n_agents=n_agents, trust=trust, seed=seed,
                       config=EnvConfig(crypto_threads=crypto_threads, pause_gc=pause_gc))
    pol = make_policy(policy)
    if pad_calls_s is not None:
        PaddedCalls(env.registry, *pad_calls_s)
    timer = CryptoTimer(env.registry) if crypto else None
    env_s, env_cpu_s, pol_s, crypto_s, contracts, gc_s = [], [], [], [], [], []
    collector = _CollectorClock()
    for _ in range(repeats):
        state = _start(env, pol, seed, warmup, api)
        crypto0 = timer.seconds if timer else 0.0
        collector.start()
        try:
            t_env, t_pol, t_cpu, signed = _timed_steps(env, pol, state, steps, seed, api,
                                                       collector)
        finally:
            collector.stop()
        # collections that ran inside the policy's call are the environment's due
        t_env += collector.policy_s
        t_cpu += collector.policy_cpu_s
        t_pol -= collector.policy_s
        env_s.append(t_env / steps)
        env_cpu_s.append(t_cpu / steps)
        pol_s.append(t_pol / steps)
        gc_s.append(collector.total_s / steps)
        crypto_s.append(((timer.seconds - crypto0) / steps) if timer else 0.0)
        contracts.append(signed / steps)
    env_step = statistics.median(env_s)
    row: dict[str, Any] = {
        "n_agents": n_agents, "trust": trust, "policy": policy, "scenario": scenario,
        "api": api, "steps": steps, "repeats": repeats,
        "crypto_threads": env.registry.crypto_threads,
        "agent_steps_per_s": n_agents / env_step,
        "env_s_per_step": env_step,
        "env_s_per_step_best": min(env_s),
        "env_us_per_agent_step": env_step / n_agents * 1e6,
        # CPU time of the process: less sensitive to other processes taking the CPU
        "env_cpu_s_per_step": statistics.median(env_cpu_s),
        "agent_steps_per_cpu_s": n_agents / statistics.median(env_cpu_s),
        "policy_s_per_step": statistics.median(pol_s),
        "gc_s_per_step": statistics.median(gc_s),
        "pause_gc": pause_gc,
        "contracts_per_step": statistics.median(contracts),
        "load_average": load_average(),
    }
    if timer is not None:
        c = statistics.median(crypto_s)
        row.update(crypto_s_per_step=c, crypto_share=c / env_step,
                   non_crypto_s_per_step=env_step - c,
                   sign_s_per_signature=timer.sign_seconds / max(timer.sign_calls, 1),
                   verify_s_per_contract=timer.verify_seconds / max(timer.verify_calls, 1))
    return row


def _timed_steps(env: GridSwarmEnv, pol: Any, state: Any, steps: int, seed: int, api: str,
                 collector: _CollectorClock) -> tuple[float, float, float, int]:
    """``steps`` timed steps from ``state`` (episodes restart, untimed, when truncated):
    (env wall s, policy wall s, env CPU s, contracts signed)."""
    cpu = time.process_time   # every thread's CPU time (the crypto worker's too)
    names = env.possible_agents
    t_env = t_pol = t_cpu = 0.0
    k0 = env.ledger.signed
    signed = 0
    for _ in range(steps):
        if not env.agents:   # episode over: restart (not timed)
            signed += env.ledger.signed - k0
            collector.phase = "untimed"
            state = _start(env, pol, seed, 0, api)
            collector.phase = "env"
            k0 = env.ledger.signed
        if api == "arrays":   # masks are env time (the adapter calls them every step)
            c0, t0 = cpu(), time.perf_counter()
            mask = env.action_masks()
            t1, c1 = time.perf_counter(), cpu()
            collector.phase = "policy"
            act = pol.act(state, mask)
            collector.phase = "env"
            c2, t2 = cpu(), time.perf_counter()
            state = env.step_arrays(act[:, 0], act[:, 1])[0]
            t3, c3 = time.perf_counter(), cpu()
        else:                 # stacking the dicts and building actions: user side
            c0, t0 = cpu(), time.perf_counter()
            t1, c1 = t0, c0
            collector.phase = "policy"
            state, actions = _dict_actions(pol, names, state)
            collector.phase = "env"
            c2, t2 = cpu(), time.perf_counter()
            obs_d, _r, _te, _tr, infos = env.step(actions)
            t3, c3 = time.perf_counter(), cpu()
            state = (obs_d, infos)
        t_env += (t1 - t0) + (t3 - t2)
        t_cpu += (c1 - c0) + (c3 - c2)
        t_pol += t2 - t1
    return t_env, t_pol, t_cpu, signed + env.ledger.signed - k0


class _CollectorClock:
    """Time of the cyclic garbage collector's runs while started (``gc.callbacks``):
    ``total_s`` (wall) of those that started in the ``"env"`` or ``"policy"`` phase, and
    ``policy_s`` / ``policy_cpu_s`` (wall / process CPU) of those in ``"policy"``; runs in
    the ``"untimed"`` phase (an episode restart) are not counted."""

    def __init__(self) -> None:
        self.total_s = self.policy_s = self.policy_cpu_s = 0.0
        self.phase = "env"
        self._t0 = self._c0 = 0.0
        self._run_phase = "env"

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0, self._c0 = time.perf_counter(), time.process_time()
            self._run_phase = self.phase
            return
        if self._run_phase == "untimed":
            return
        elapsed = time.perf_counter() - self._t0
        self.total_s += elapsed
        if self._run_phase == "policy":
            self.policy_s += elapsed
            self.policy_cpu_s += time.process_time() - self._c0

    def start(self) -> None:
        self.total_s = self.policy_s = self.policy_cpu_s = 0.0
        self.phase = "env"
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


def variant_row(n_agents: int, ratio_key: str, *, steps: int, repeats: int,
                variant: str | None = None, **changes: Any) -> dict[str, Any]:
    """The hmac row with ``changes`` to :func:`measure_env`'s arguments, its repeats
    alternating with the default's (the VM's speed drifts between rows): the changed
    row, with ``ratio_key`` = the median of (changed step) / (default step) over the
    pairs (how much faster the default is) and ``default_gc_s_per_step``.

    :param variant: the row's ``"variant"`` label (None: none, e.g. for the dict API,
        whose ``api`` column tells it apart).
    """
    pairs = [(measure_env(n_agents, "hmac", steps=steps, repeats=1),
              measure_env(n_agents, "hmac", steps=steps, repeats=1, **changes))
             for _ in range(repeats)]
    row = _median_row([changed for _, changed in pairs])
    if variant is not None:
        row["variant"] = variant
    row[ratio_key] = statistics.median(
        changed["env_s_per_step"] / default["env_s_per_step"] for default, changed in pairs)
    row["default_gc_s_per_step"] = statistics.median(d["gc_s_per_step"] for d, _ in pairs)
    return row


def paired_rows(n_agents: int, *, steps: int, repeats: int, control: bool = True,
                one_thread: bool = False) -> list[dict[str, Any]]:
    """The hmac and ed25519 rows of ``n_agents``, their repeats alternating (hmac, ed25519,
    padded hmac, hmac, ...) so that every mode sees the same machine conditions.

    The ed25519 row also gets, as medians over the repeats:

    * ``non_crypto_over_hmac_step`` — (ed25519 step − its signing and verification) /
      (hmac step of the same repeat): the issue's comparison;
    * the control (:class:`PaddedCalls`): the hmac step with every signing and
      verification batch padded to the Ed25519 wall time per signature made and per
      contract checked of the same repeat.
      ``padded_non_crypto_s_per_step`` is its time outside the calls,
      ``padded_non_crypto_over_hmac_step`` that over the hmac step, and
      ``non_crypto_over_padded`` the ed25519 step's time outside cryptography over it
      (≈ 1 when Ed25519 itself adds nothing outside its calls).

    * with ``one_thread`` (when the default uses more than one crypto thread),
      ``crypto_threads_speedup``: the one-thread ed25519 step over the default one, and
      a third row, the one-thread ed25519 step (``"variant": "one crypto thread"``).

    :param control: also run the padded control (a third run per repeat).
    :param one_thread: also run the ed25519 step with ``crypto_threads=1`` in every
        repeat.
    """
    triples, singles = [], []
    for _ in range(repeats):
        h = measure_env(n_agents, "hmac", steps=steps, repeats=1)
        e = measure_env(n_agents, "ed25519", steps=steps, repeats=1, crypto=True)
        c = measure_env(n_agents, "hmac", steps=steps, repeats=1, crypto=True,
                        pad_calls_s=(e["sign_s_per_signature"], e["verify_s_per_contract"])
                        ) if control else None
        if one_thread and e["crypto_threads"] > 1:
            singles.append(measure_env(n_agents, "ed25519", steps=steps, repeats=1,
                                       crypto=True, crypto_threads=1))
        triples.append((h, e, c))
    hm = _median_row([h for h, _, _ in triples])
    ed = _median_row([e for _, e, _ in triples])
    ed["non_crypto_over_hmac_step"] = statistics.median(
        e["non_crypto_s_per_step"] / h["env_s_per_step"] for h, e, _ in triples)
    extra = []
    if singles:
        ed["crypto_threads_speedup"] = statistics.median(
            one["env_s_per_step"] / e["env_s_per_step"]
            for one, (_, e, _) in zip(singles, triples, strict=True))
        extra.append({**_median_row(singles), "variant": "one crypto thread"})
    if not control:
        return [hm, ed, *extra]
    ed["padded_non_crypto_s_per_step"] = statistics.median(
        c["non_crypto_s_per_step"] for _, _, c in triples)
    ed["padded_non_crypto_over_hmac_step"] = statistics.median(
        c["non_crypto_s_per_step"] / h["env_s_per_step"] for h, _, c in triples)
    ed["non_crypto_over_padded"] = statistics.median(
        e["non_crypto_s_per_step"] / c["non_crypto_s_per_step"] for _, e, c in triples)
    return [hm, ed, *extra]


def _median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from single-repeat rows: medians of the timings, the rates recomputed."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float) and key not in ("agent_steps_per_s",
                                                    "agent_steps_per_cpu_s"):
            row[key] = statistics.median(r[key] for r in runs)
    row["env_s_per_step_best"] = min(r["env_s_per_step"] for r in runs)
    row["repeats"] = len(runs)
    n = row["n_agents"]
    row["agent_steps_per_s"] = n / row["env_s_per_step"]
    row["agent_steps_per_cpu_s"] = n / row["env_cpu_s_per_step"]
    row["env_us_per_agent_step"] = row["env_s_per_step"] / n * 1e6
    if "crypto_s_per_step" in row:
        row["crypto_share"] = row["crypto_s_per_step"] / row["env_s_per_step"]
        row["non_crypto_s_per_step"] = row["env_s_per_step"] - row["crypto_s_per_step"]
    return row


def _start(env: GridSwarmEnv, pol: Any, seed: int, warmup: int, api: str) -> Any:
    """Reset, let the policy play ``warmup`` untimed steps; the state the loop needs
    (the observation array, or the ``(observations, infos)`` dicts)."""
    state = env.reset(seed=seed)
    pol.reset(env, seed=seed)
    if api == "arrays":
        state = env.observations_array()
    for _ in range(warmup):
        if api == "arrays":
            act = pol.act(state, env.action_masks())
            state = env.step_arrays(act[:, 0], act[:, 1])[0]
        else:
            state, actions = _dict_actions(pol, env.possible_agents, state)
            obs_d, _r, _te, _tr, infos = env.step(actions)
            state = (obs_d, infos)
    return state


def _dict_actions(pol: Any, names: list[str], state: tuple[dict, dict]) -> tuple[Any, dict]:
    """The policy acting on the dict API: stack observations and masks, act, build the
    action dict (what a PettingZoo user does)."""
    obs_d, infos = state
    obs = np.stack([obs_d[a] for a in names])
    mask = np.stack([infos[a]["action_mask"] for a in names])
    act = pol.act(obs, mask)
    return state, dict(zip(names, act, strict=True))


def emergency_latency(n_agents: int = 10_000, trust: str = "hmac",
                      seed: int = SEED) -> dict[str, Any]:
    """Run one whole ``emergency`` episode with the heuristic; its response latency.

    :return: ``{"n_agents", "trust", "emergency_response_latency_ms", "within_budget",
        "frequency_nadir_hz", "wall_s"}``.
    """
    env = GridSwarmEnv(scenario="emergency", n_agents=n_agents, trust=trust, seed=seed)
    pol = make_policy("heuristic")
    t0 = time.perf_counter()
    env.reset(seed=seed)
    pol.reset(env, seed=seed)
    obs = env.observations_array()
    while env.agents:
        act = pol.act(obs, env.action_masks())
        obs = env.step_arrays(act[:, 0], act[:, 1])[0]
    m = env.episode_metrics()
    latency = m["emergency_response_latency_ms"]
    return {"n_agents": n_agents, "trust": trust, "emergency_response_latency_ms": latency,
            "within_budget": latency is not None and latency <= LATENCY_BUDGET_MS,
            "frequency_nadir_hz": m["frequency_nadir_hz"],
            "wall_s": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- memory
def _rss_mib() -> float:
    """Current resident set size of this process, MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    """Peak resident set size of this process image so far, MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this program's own
    memory. Not ``ru_maxrss``: Linux carries the parent's high-water mark into a child
    over ``fork``/``exec`` (``subprocess`` spawns with ``vfork``), so a child started by
    a benchmark that had built 10 000-agent environments reported the parent's ~410-460
    MiB instead of its own ~195 MiB. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on
    macOS) is the fallback.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0   # kB
    except OSError:   # pragma: no cover - not Linux
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover
    return peak / (2**20 if sys.platform == "darwin" else 1024.0)  # pragma: no cover


def episode_memory_child(n_agents: int, trust: str, scenario: str) -> dict[str, Any]:
    """(In a fresh process) RSS before and the peak RSS after one whole episode."""
    before = _rss_mib()
    env = GridSwarmEnv(scenario=scenario, n_agents=n_agents, trust=trust, seed=SEED)
    pol = make_policy("heuristic")
    env.reset(seed=SEED)
    pol.reset(env, seed=SEED)
    obs = env.observations_array()
    steps = 0
    t0 = time.perf_counter()
    while env.agents:
        act = pol.act(obs, env.action_masks())
        obs = env.step_arrays(act[:, 0], act[:, 1])[0]
        steps += 1
    return {"n_agents": n_agents, "trust": trust, "scenario": scenario, "steps": steps,
            "rss_after_imports_mib": before, "peak_rss_mib": _peak_rss_mib(),
            "wall_s": time.perf_counter() - t0}


def long_run_memory_child(n_agents: int, steps: int, samples: int) -> dict[str, Any]:
    """(In a fresh process) RSS sampled over ``steps`` steps of back-to-back episodes
    (hmac, random policy: the cheapest driver, so the run is about the environment)."""
    cfg = EnvConfig(n_agents=n_agents, trust="hmac", audit_keep_entries=False)
    env = GridSwarmEnv(scenario="price_spike", config=cfg, seed=SEED)
    rng = np.random.default_rng(SEED)
    every = max(steps // samples, 1)
    trace: list[tuple[int, float]] = []
    episodes = 0
    env.reset(seed=SEED)
    t0 = time.perf_counter()
    for k in range(steps):
        if not env.agents:
            episodes += 1
            env.reset(seed=SEED + episodes)
        mask = env.action_masks()
        weights = rng.random(mask.shape) * mask
        n_power = env.config.market.n_power_levels
        env.step_arrays(np.argmax(weights[:, :n_power], axis=1),
                        np.argmax(weights[:, n_power:], axis=1))
        if (k + 1) % every == 0:
            trace.append((k + 1, _rss_mib()))
    warm = trace[min(1, len(trace) - 1)][1]   # the second sample: after warm-up (imports,
    # caches, the first episodes' allocations); growth is measured from there
    return {"n_agents": n_agents, "steps": steps, "episodes": episodes + 1,
            "audit_entries": env.audit_log.n_entries,
            "rss_trace_mib": trace, "rss_after_warmup_mib": warm,
            "rss_end_mib": trace[-1][1], "rss_growth_after_warmup_mib": trace[-1][1] - warm,
            "peak_rss_mib": _peak_rss_mib(), "wall_s": time.perf_counter() - t0}


def _child(call: str) -> dict[str, Any]:
    """Run ``benchmarks.bench_env.<call>`` in a fresh interpreter; its JSON result."""
    root = Path(__file__).resolve().parents[1]
    code = f"import json; from benchmarks import bench_env as b; print(json.dumps(b.{call}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory(quick: bool = False) -> dict[str, Any]:
    """Peak RSS of a 10 000-agent episode and RSS growth over a long 100-agent run.

    :param quick: the 120-step emergency episode and 5 000 steps instead of the 300-step
        price spike and 50 000 steps.
    """
    scenario = "emergency" if quick else "price_spike"
    steps = 5_000 if quick else 50_000
    return {
        "episode_10000": _child(f"episode_memory_child(10_000, 'hmac', {scenario!r})"),
        "long_run_100": _child(f"long_run_memory_child(100, {steps}, 10)"),
    }


# ----------------------------------------------------------------------------- all
def run(quick: bool = False, agents: tuple[int, ...] = AGENT_COUNTS,
        with_memory: bool = True) -> dict[str, Any]:
    """Every env row (both trust modes, each agent count; ``price_spike``), the dict-API
    row and the other scenarios' hmac rows at 100 agents (``"variant": "scenario
    <name>"``, ``step_over_price_spike`` their paired step time over price_spike's), the
    emergency latency at the largest count and, optionally, memory.

    :param quick: fewer steps and repeats (under a minute with memory).
    :param agents: agent counts.
    :param with_memory: include :func:`memory` (subprocesses).
    :return: ``{"env": [rows], "emergency": {...}, "memory": {...}, "load_average"}``.
    """
    settle_process()
    rows = []
    for n in agents:
        steps, repeats = _budget(n, "hmac", quick)
        # the padded control of the ed25519 comparison; --quick skips it at 10 000 agents
        # (another ~10 s) to stay under a minute
        # (at 100 agents, also what the second crypto thread gives)
        rows.extend(paired_rows(n, steps=steps, repeats=repeats,
                                control=not (quick and n >= 10_000), one_thread=n == 100))
        if n == 100:
            rows.append(variant_row(n, "arrays_speedup", steps=steps, repeats=repeats,
                                    api="dict"))
            # the other scenarios (the rate follows the contracts signed per step)
            for name in OTHER_SCENARIOS:
                rows.append(variant_row(n, "step_over_price_spike", steps=steps,
                                        repeats=repeats, variant=f"scenario {name}",
                                        scenario=name))
        if n == max(agents) and n >= 1_000 and not quick:
            # three times the row's steps: a full collection comes every ~14 steps there
            rows.append(variant_row(n, "pause_gc_speedup", steps=3 * steps, repeats=repeats,
                                    variant="collector not paused", pause_gc=False))
    out: dict[str, Any] = {"env": rows, "emergency": emergency_latency(max(agents))}
    if with_memory:
        out["memory"] = memory(quick)
    out["load_average"] = load_average()
    return out


def _budget(n_agents: int, trust: str, quick: bool) -> tuple[int, int]:
    """(steps, repeats) of a row. Both trust modes time the same steps of the same
    trajectory (the contracts per step vary along an episode), so their rows compare."""
    steps = {100: 100, 1_000: 20, 10_000: 5}.get(n_agents, 10)
    return (max(steps // 3, 3), 2) if quick else (steps, 5)


def print_rows(rows: list[dict[str, Any]]) -> None:
    """The env table."""
    print(f"{'agents':>7} {'trust':<11} {'api':<6} {'agent-steps/s':>14} {'per CPU-s':>10} "
          f"{'env ms/step':>12} {'us/agent-step':>14} {'policy ms':>10} {'contracts':>10} "
          f"{'crypto':>7} {'gc ms':>6}")
    for r in rows:
        crypto = f"{r['crypto_share']:.0%}" if "crypto_share" in r else "-"
        trust = r["trust"] + (f" x{r['crypto_threads']}" if r["trust"] == "ed25519" else "")
        print(f"{r['n_agents']:>7,} {trust:<11} {r['api']:<6} {r['agent_steps_per_s']:>14,.0f} "
              f"{r['agent_steps_per_cpu_s']:>10,.0f} {r['env_s_per_step'] * 1e3:>12.3f} "
              f"{r['env_us_per_agent_step']:>14.2f} {r['policy_s_per_step'] * 1e3:>10.3f} "
              f"{r['contracts_per_step']:>10.1f} {crypto:>7} {r['gc_s_per_step'] * 1e3:>6.2f}"
              + (f"  ({r['variant']}" + (f": paused is {r['pause_gc_speedup']:.2f}x faster"
                                         if "pause_gc_speedup" in r else "") + ")"
                 if "variant" in r else "")
              + (f"  (arrays API {r['arrays_speedup']:.2f}x faster, paired)"
                 if "arrays_speedup" in r else ""))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: print the table (and write JSON with ``--json``)."""
    from gridswarm_env.config import MAX_AGENTS
    from policies.cli_checks import OneLineParser, int_flag_type

    parser = OneLineParser(prog="python -m benchmarks.bench_env",
                           description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    # extend (default None: argparse would extend a default list): `--agents 100
    # --agents 1000` times both; with nargs alone the last --agents replaced the others
    parser.add_argument("--agents", type=int_flag_type("--agents", 1, MAX_AGENTS), nargs="+",
                        action="extend", default=None,
                        help="fleet sizes timed (default 100 1000 10000; repeatable)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    add_json_arguments(parser, "the figures")
    args = parser.parse_args(argv)
    check_json_path(parser, args.json, args.overwrite)
    agents = tuple(dict.fromkeys(args.agents)) if args.agents else tuple(AGENT_COUNTS)
    result = run(args.quick, agents, with_memory=not args.no_memory)
    print_rows(result["env"])
    e = result["emergency"]
    print(f"emergency at {e['n_agents']:,} agents: response {e['emergency_response_latency_ms']} ms"
          f" ({'within' if e['within_budget'] else 'OUTSIDE'} the {LATENCY_BUDGET_MS:.0f} ms budget)")
    if "memory" in result:
        print_memory(result["memory"])
    print(f"load average {result['load_average']:.2f}")
    if args.json:
        write_json(args.json, result, args.overwrite)
    return result


def print_memory(mem: dict[str, Any]) -> None:
    """The memory lines."""
    ep, lr = mem["episode_10000"], mem["long_run_100"]
    print(f"memory: 10,000-agent {ep['scenario']} episode ({ep['steps']} steps, {ep['trust']}): "
          f"peak RSS {ep['peak_rss_mib']:.0f} MiB (after imports {ep['rss_after_imports_mib']:.0f})")
    print(f"memory: 100 agents x {lr['steps']:,} steps ({lr['episodes']} episodes): RSS "
          f"{lr['rss_after_warmup_mib']:.1f} -> {lr['rss_end_mib']:.1f} MiB "
          f"(growth {lr['rss_growth_after_warmup_mib']:+.1f} MiB after warm-up)")


if __name__ == "__main__":
    main()
