"""Throughput and memory benchmarks of gridswarm (DESIGN §10); not part of the test run.

``python -m benchmarks [--quick] [--json FILE]`` runs them all and prints one table:

* :mod:`benchmarks.bench_env` — environment agent-steps/s from 100 to 10 000 agents in
  both trust modes (policy time separate), the cryptography share in Ed25519 mode, the
  emergency response latency at 10 000 agents, and memory (peak RSS of a 10 000-agent
  episode, RSS growth over a long 100-agent run);
* :mod:`benchmarks.bench_bus` — Agent Message Bus messages/s;
* :mod:`benchmarks.bench_trust` — IATP sign+verify pipeline against the raw signature bound;
* :mod:`benchmarks.bench_train` — MaskablePPO agent-steps/s through ``train.adapter``;
* :mod:`benchmarks.bench_learning` — the time MaskablePPO takes to beat the heuristic on
  ``system_cost`` (training as ``python -m train`` does, evaluated on held-out seeds);
* :mod:`benchmarks.profile_step` — cProfile and a per-phase breakdown of one step.

Every module exposes ``run(quick: bool) -> dict`` and a command line. Timings are noisy
on a shared machine: each figure is a median over repeats and the 1-minute load average
is recorded with it.
"""
