"""``python -m benchmarks [--quick] [--json FILE] [--overwrite] [--skip SECTION ...]``:
every benchmark, one table, one JSON.

JSON layout::

    {"env": [{"n_agents", "trust", "policy", "api", "agent_steps_per_s", "env_s_per_step",
              "policy_s_per_step", "contracts_per_step", "crypto_share"?, ...}, ...],
     "emergency": {"n_agents", "emergency_response_latency_ms", "within_budget", ...},
     "bus": {"msgs_per_s", "batch_msgs_per_s", ...},
     "trust": {"pipeline_contracts_per_s", "raw_bound_contracts_per_s", "ratio", ...},
     "train": {"agent_steps_per_s", ...} | {"skipped": reason},
     "policy": {"n_agents", "rows": [{"policy", "act_ms"}, ...],
                "learned_predict_ms", "learned_direct_speedup", ...},
     "learning": {"beaten", "train_s_to_beat", "agent_steps_to_beat", "curve", ...}
                 | {"skipped": reason},
     "memory": {"episode_10000": {"peak_rss_mib", ...},
                "long_run_100": {"rss_growth_after_warmup_mib", ...}},
     "summary": {...}, "machine": {...}}

``--quick`` keeps the whole run under about a minute (fewer steps and repeats, shorter
memory runs, no learning run); the full run takes a few minutes, of which one to two for
the time MaskablePPO needs to beat the heuristic (:mod:`benchmarks.bench_learning`).
Figures are wall-clock rates, medians over repeats, on a machine other processes may
share: the load average is recorded.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any

from benchmarks import (
    add_json_arguments,
    bench_bus,
    bench_env,
    bench_learning,
    bench_policy,
    bench_train,
    bench_trust,
    check_json_path,
    write_json,
)

SECTIONS = ("env", "bus", "trust", "train", "policy", "learning", "memory")
#: the other targets the run judges (earlier issues and DESIGN.md section 10)
TRUST_RATIO_TARGET = 0.8          # contract pipeline >= 80 % of the raw sign+verify bound
BUS_MSGS_TARGET = 1_000_000.0     # bus messages/s on the single-publish path
RSS_GROWTH_LIMIT_MIB = 5.0        # "flat": long-run RSS growth after warm-up


def run(quick: bool = False, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the benchmarks not in ``skip``; the combined figures (layout in the docstring)."""
    out: dict[str, Any] = {"quick": quick}
    t0 = time.perf_counter()
    if "env" not in skip:
        env = bench_env.run(quick, with_memory=False)
        out["env"], out["emergency"] = env["env"], env["emergency"]
    if "bus" not in skip:
        out["bus"] = bench_bus.run(quick)
    if "trust" not in skip:
        out["trust"] = bench_trust.run(quick)
    if "train" not in skip:
        out["train"] = bench_train.run(quick)
    if "policy" not in skip:
        out["policy"] = bench_policy.run(quick)
    if "learning" not in skip:
        out["learning"] = ({"skipped": "not in --quick (python -m benchmarks.bench_learning)"}
                           if quick else _learning())
    if "memory" not in skip:
        out["memory"] = bench_env.memory(quick)
    out["summary"] = summary(out)
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                      "platform": platform.platform(), "load_average": os.getloadavg()[0],
                      "wall_s": time.perf_counter() - t0}
    return out


def _learning() -> dict[str, Any]:
    """The learning benchmark; stopped (Ctrl-C, SIGTERM, a failed training), one line and
    the exit status, as ``python -m benchmarks.bench_learning``: its own message names a
    model in the temporary directory the benchmark has removed by then."""
    from train.errors import TrainingError  # loads no torch

    try:
        return bench_learning.run()
    except (KeyboardInterrupt, TrainingError) as exc:
        sys.exit(bench_learning.stopped_message("python -m benchmarks", exc))


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The headline checks of the issue: 100-agent hmac rate, crypto share, scaling,
    latency, memory."""
    s: dict[str, Any] = {}
    rows = {(r["n_agents"], r["trust"], r["api"]): r for r in result.get("env", [])
            if "variant" not in r}
    hmac100 = rows.get((100, "hmac", "arrays"))
    if hmac100:
        s["hmac_100_agent_steps_per_s"] = hmac100["agent_steps_per_s"]
        s["hmac_100_target_300k_met"] = hmac100["agent_steps_per_s"] >= 300_000
    for n in sorted({k[0] for k in rows}):
        ed, hm = rows.get((n, "ed25519", "arrays")), rows.get((n, "hmac", "arrays"))
        if ed and hm and "non_crypto_s_per_step" in ed:
            s[f"ed25519_{n}_crypto_share"] = ed["crypto_share"]
            # paired (alternating repeats) when measured so, else from the two rows
            s[f"ed25519_{n}_non_crypto_over_hmac_step"] = ed.get(
                "non_crypto_over_hmac_step", ed["non_crypto_s_per_step"] / hm["env_s_per_step"])
            if "non_crypto_over_padded" in ed:   # the control (bench_env.PaddedCalls)
                s[f"ed25519_{n}_padded_control_over_hmac_step"] = ed[
                    "padded_non_crypto_over_hmac_step"]
                s[f"ed25519_{n}_non_crypto_over_padded_control"] = ed["non_crypto_over_padded"]
            if "crypto_threads_speedup" in ed:   # default crypto threads vs one, paired
                s[f"ed25519_{n}_crypto_threads_speedup"] = ed["crypto_threads_speedup"]
    for r in result.get("env", []):
        for key in ("pause_gc_speedup", "arrays_speedup"):   # paired variant rows
            if key in r:
                s[f"hmac_{r['n_agents']}_{key}"] = r[key]
    by_scenario = {r["scenario"]: {"agent_steps_per_s": r["agent_steps_per_s"],
                                   "contracts_per_step": r["contracts_per_step"]}
                   for r in result.get("env", [])
                   if r["n_agents"] == 100 and r["trust"] == "hmac" and r["api"] == "arrays"
                   and r.get("variant", "").startswith("scenario ")}
    if hmac100 and by_scenario:   # the same target, per scenario (headline: price_spike)
        s["hmac_100_by_scenario"] = {
            hmac100["scenario"]: {"agent_steps_per_s": hmac100["agent_steps_per_s"],
                                  "contracts_per_step": hmac100["contracts_per_step"]},
            **by_scenario}
    per_agent = {n: rows[(n, "hmac", "arrays")]["env_us_per_agent_step"]
                 for n in sorted({k[0] for k in rows}) if (n, "hmac", "arrays") in rows}
    if len(per_agent) > 1:
        lo, hi = min(per_agent), max(per_agent)
        s["hmac_us_per_agent_step"] = per_agent
        # the target: the largest fleet no dearer per agent-step than 100 agents
        s["cost_per_agent_step_not_higher_at_scale"] = per_agent[hi] <= per_agent[lo]
        # DESIGN §10's stricter reading: no growth from one size to the next
        sizes = sorted(per_agent)
        s["cost_per_agent_step_max_growth"] = max(
            per_agent[b] / per_agent[a] for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    if "emergency" in result:
        s["emergency_latency_ms"] = result["emergency"]["emergency_response_latency_ms"]
        s["emergency_within_100_ms"] = result["emergency"]["within_budget"]
    if "trust" in result:
        s["trust_pipeline_over_raw_bound"] = result["trust"]["ratio"]
        s["trust_pipeline_target_80_met"] = result["trust"]["ratio"] >= TRUST_RATIO_TARGET
    if "bus" in result:
        s["bus_msgs_per_s"] = result["bus"]["msgs_per_s"]
        s["bus_target_1m_met"] = result["bus"]["msgs_per_s"] >= BUS_MSGS_TARGET
    learning = result.get("learning", {})
    if "beaten" in learning:
        s["learning_beats_heuristic"] = learning["beaten"]
        s["learning_train_s_to_beat"] = learning["train_s_to_beat"]
        s["learning_agent_steps_to_beat"] = learning["agent_steps_to_beat"]
        # the final model on held-out seeds (the figures above come from the stopping seeds)
        s["learning_heldout_relative_to_heuristic"] = learning.get(
            "heldout_relative_to_heuristic")
    if "memory" in result:
        peak = result["memory"]["episode_10000"]["peak_rss_mib"]
        growth = result["memory"]["long_run_100"]["rss_growth_after_warmup_mib"]
        s["peak_rss_10000_mib"] = peak
        s["peak_rss_under_1_gib"] = peak < 1024.0
        s["rss_growth_long_run_mib"] = growth
        s["rss_flat"] = growth <= RSS_GROWTH_LIMIT_MIB
    return s


def print_table(result: dict[str, Any]) -> None:
    """The human-readable report."""
    if "env" in result:
        print("Environment step (heuristic policy; policy time excluded from agent-steps/s)")
        bench_env.print_rows(result["env"])
        e = result["emergency"]
        latency = e["emergency_response_latency_ms"]
        print(f"emergency at {e['n_agents']:,} agents: response "
              f"{'none' if latency is None else f'{latency:.1f} ms'} simulated "
              f"({'within' if e['within_budget'] else 'OUTSIDE'} the 100 ms budget)")
    if "bus" in result:
        b = result["bus"]
        print(f"bus: {b['msgs_per_s']:,.0f} msgs/s single publish, "
              f"{b['batch_msgs_per_s']:,.0f} msgs/s batch")
    if "trust" in result:
        t = result["trust"]
        print(f"trust: ed25519 ({t['ed25519_backend']}) pipeline "
              f"{t['pipeline_contracts_per_s']:,.0f} contracts/s vs raw "
              f"bound {t['raw_bound_contracts_per_s']:,.0f} ({t['ratio']:.0%}; OpenSSL raw bound "
              f"{t['openssl_raw_bound_contracts_per_s']:,.0f}); hmac pipeline "
              f"{t['hmac_pipeline_contracts_per_s']:,.0f} contracts/s")
    if "train" in result:
        t = result["train"]
        if "skipped" in t:
            print(f"train: skipped ({t['skipped']})")
        else:
            print(f"train: MaskablePPO {t['agent_steps_per_s']:,.0f} agent-steps/s "
                  f"(environment {t['env_share']:.0%} of the time)")
    if "policy" in result:
        print(bench_policy.describe(result["policy"]))
    if "learning" in result:
        print(bench_learning.describe(result["learning"]))
    if "memory" in result:
        bench_env.print_memory(result["memory"])
    print_targets(result.get("summary", {}))
    m = result["machine"]
    print(f"{m['cpus']} CPUs, load average {m['load_average']:.2f}, "
          f"run took {m['wall_s']:.0f} s")


def rise_text(growth: float) -> str:
    """The largest ratio of the cost per agent-step from one fleet size to the next,
    said plainly (below 1: it never rose)."""
    if growth <= 1.0:
        return (f"cost per agent-step never rose from one fleet size to the next (it fell "
                f"or stayed: the largest ratio was {growth:.2f}x)")
    return f"cost per agent-step rose from one fleet size to the next: by up to {growth:.2f}x"


def print_targets(s: dict[str, Any]) -> None:
    """The issue's targets, each with its figure and whether this run meets it."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    if "hmac_100_agent_steps_per_s" in s:
        print(f"target >= 300,000 agent-steps/s at 100 agents (hmac): "
              f"{s['hmac_100_agent_steps_per_s']:,.0f} -> "
              f"{verdict(s['hmac_100_target_300k_met'])}")
        if "hmac_100_by_scenario" in s:
            parts = [f"{name} {v['agent_steps_per_s']:,.0f} "
                     f"({v['contracts_per_step']:.1f} contracts/step)"
                     for name, v in s["hmac_100_by_scenario"].items()]
            print(f"  by scenario (the target's figure is price_spike's): {'; '.join(parts)}")
    for key in sorted((k for k in s if k.endswith("_non_crypto_over_hmac_step")),
                      key=lambda k: int(k.split("_")[1])):
        n = key.split("_")[1]
        ratio = s[key]
        print(f"target ed25519 step outside crypto <= hmac step ({n} agents): "
              f"{ratio:.2f}x (crypto {s[f'ed25519_{n}_crypto_share']:.0%} of the ed25519 "
              f"step) -> {verdict(ratio <= 1.0)}")
        if f"ed25519_{n}_padded_control_over_hmac_step" in s:
            print(f"  control: hmac with each sign/verify batch padded to the Ed25519 batch's length: "
                  f"outside the calls {s[f'ed25519_{n}_padded_control_over_hmac_step']:.2f}x "
                  f"the hmac step; ed25519 outside crypto = "
                  f"{s[f'ed25519_{n}_non_crypto_over_padded_control']:.2f}x the control")
    for key in (k for k in s if k.endswith("_crypto_threads_speedup")):
        print(f"  ed25519 at {key.split('_')[1]} agents with the default crypto threads vs one: "
              f"{s[key]:.2f}x the agent-steps/s (median of paired repeats)")
    if "cost_per_agent_step_not_higher_at_scale" in s:
        per = s["hmac_us_per_agent_step"]
        figures = ", ".join(f"{n:,}: {us:.1f} us" for n, us in per.items())
        print(f"target cost per agent-step at scale <= at 100 agents (hmac; {figures}) -> "
              f"{verdict(s['cost_per_agent_step_not_higher_at_scale'])}")
        growth = s["cost_per_agent_step_max_growth"]
        print(f"  {rise_text(growth)}")
    for key in (k for k in s if k.endswith("_pause_gc_speedup")):
        print(f"  hmac at {key.split('_')[1]} agents with the garbage collector paused during "
              f"steps (the default) vs left running: {s[key]:.2f}x faster (median of pairs)")
    for key in (k for k in s if k.endswith("_arrays_speedup")):
        print(f"  hmac at {key.split('_')[1]} agents, the array path (step_arrays) vs the "
              f"PettingZoo dict API: {s[key]:.2f}x faster (median of pairs)")
    if "emergency_within_100_ms" in s:
        print(f"target emergency response within 100 ms simulated: "
              f"{s['emergency_latency_ms']:.1f} ms -> {verdict(s['emergency_within_100_ms'])}")
    if "trust_pipeline_target_80_met" in s:
        print(f"target contract pipeline >= {TRUST_RATIO_TARGET:.0%} of the raw signature "
              f"bound: {s['trust_pipeline_over_raw_bound']:.0%} -> "
              f"{verdict(s['trust_pipeline_target_80_met'])}")
    if "bus_target_1m_met" in s:
        print(f"target bus >= {BUS_MSGS_TARGET:,.0f} msgs/s (single publish): "
              f"{s['bus_msgs_per_s']:,.0f} -> {verdict(s['bus_target_1m_met'])}")
    if "peak_rss_under_1_gib" in s:
        print(f"target peak RSS of a 10,000-agent episode < 1 GiB: "
              f"{s['peak_rss_10000_mib']:.0f} MiB -> {verdict(s['peak_rss_under_1_gib'])}")
        print(f"target RSS flat over a long run (growth <= {RSS_GROWTH_LIMIT_MIB:.0f} MiB): "
              f"{s['rss_growth_long_run_mib']:+.1f} MiB -> {verdict(s['rss_flat'])}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line."""
    from policies.cli_checks import OneLineParser

    parser = OneLineParser(
        prog="python -m benchmarks",
        description="Run every benchmark: one table, and one JSON with --json.")
    parser.add_argument("--quick", action="store_true", help="under a minute")
    add_json_arguments(parser, "all figures")
    # extend: `--skip env --skip memory` leaves out both (with nargs alone the last
    # --skip replaced the earlier ones, and a bare --skip left out nothing)
    parser.add_argument("--skip", nargs="+", action="extend", default=[], choices=SECTIONS,
                        metavar="SECTION",
                        help=f"sections to leave out, among {', '.join(SECTIONS)} (repeatable)")
    args = parser.parse_args(argv)
    check_json_path(parser, args.json, args.overwrite)
    result = run(args.quick, tuple(args.skip))
    print_table(result)
    if args.json:
        write_json(args.json, result, args.overwrite)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
