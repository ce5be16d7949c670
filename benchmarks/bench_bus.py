"""Throughput and wall-clock cost of the Agent Message Bus (gridswarm_env/bus.py).

Every figure is end to end: publish, ``begin_step``, ``deliver`` and reading the delivered
topic's columns (``Delivery.topic(...)``, which gathers payloads and sorts), so that lazy
work inside :class:`~gridswarm_env.bus.Delivery` is paid for. Python's garbage collector
stays on. Rates are the median over repeats, per wall-clock second and per CPU second of
this process (the second is less sensitive to other processes sharing the cores; the
1-minute load average is printed with the table).

Rows of the table:

* single publish, unicast: ``publish(..., recipient=-1)`` once per message, 100 or
  10 000 messages per step (100 / 10 000 agents bidding) — the headline ``msgs_per_s``
  is the 10 000 row;
* single publish, broadcast: one ``publish(..., recipient=None)`` per step fanned out to
  1, 100 or 10 000 subscribers (messages counted per recipient);
* batch: one ``publish_batch`` of 1, 100 or 10 000 rows per step (structured payload
  ``power_mw``/``price_per_mwh``) — ``batch_msgs_per_s`` is the 10 000 row;
* wall-clock cost per message publish -> deliver: per step of 100 single publishes, the
  step's wall time divided by 100, p50/p99 over steps; and one message alone.

Usage: ``python benchmarks/bench_bus.py [--quick]``; ``run(quick) -> dict`` for callers.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gridswarm_env.bus import AgentMessageBus, BusConfig, Lane  # noqa: E402

BID_DTYPE = np.dtype([("power_mw", "f8"), ("price_per_mwh", "f8")])


def _bus(seed: int = 0) -> AgentMessageBus:
    """A bus with the default config (nothing binds at these loads)."""
    return AgentMessageBus(BusConfig(), rng=seed)


def _rate(
    step: Callable[[AgentMessageBus, float], int], steps: int, repeats: int
) -> tuple[float, float]:
    """Median messages per wall-clock second and per CPU second of this process.

    :param step: ``step(bus, now_s) -> messages`` run ``steps`` times per repeat.
    :return: ``(messages / wall s, messages / CPU s)``; the second is insensitive to other
        processes competing for the cores.
    """
    wall_rates, cpu_rates = [], []
    for repeat in range(repeats):
        bus = _bus(repeat)
        step(bus, 0.0)  # warm up: latency block, topic registration
        messages, now_s = 0, 1.0
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(steps):
            messages += step(bus, now_s)
            now_s += 1.0
        cpu_rates.append(messages / max(time.process_time() - cpu_start, 1e-9))
        wall_rates.append(messages / (time.perf_counter() - wall_start))
    return statistics.median(wall_rates), statistics.median(cpu_rates)


def _deliver_and_read(bus: AgentMessageBus, topic: str, n: int, now_s: float) -> int:
    """End a step: new capacity, deliver everything due, read the topic's columns."""
    bus.begin_step()
    got = len(bus.deliver(now_s + 0.5).topic(topic).payloads)
    if got != n:
        raise RuntimeError(f"delivered {got} of {n} messages on {topic}")
    return n


def unicast_step(n: int) -> Callable[[AgentMessageBus, float], int]:
    """Step: ``n`` single unicast publishes to the operator, then deliver and read."""

    def step(bus: AgentMessageBus, now_s: float) -> int:
        publish, market = bus.publish, Lane.MARKET
        for agent in range(n):
            publish("grid/bids", agent, lane=market, sender=agent, recipient=-1, now_s=now_s)
        return _deliver_and_read(bus, "grid/bids", n, now_s)

    return step


def broadcast_step(n: int) -> Callable[[AgentMessageBus, float], int]:
    """Step: one broadcast to ``n`` subscribers, then deliver and read."""

    def step(bus: AgentMessageBus, now_s: float) -> int:
        if now_s == 0.0:
            bus.subscribe_many("grid/price", np.arange(-1, n - 1))
        bus.publish("grid/price", {"price_per_mwh": 80.0}, sender=-1, now_s=now_s)
        return _deliver_and_read(bus, "grid/price", n, now_s)

    return step


def batch_step(n: int) -> Callable[[AgentMessageBus, float], int]:
    """Step: one ``publish_batch`` of ``n`` structured bids, then deliver and read."""
    payloads = np.zeros(n, BID_DTYPE)
    payloads["power_mw"] = np.linspace(-1.0, 1.0, n)
    senders = np.arange(n)

    def step(bus: AgentMessageBus, now_s: float) -> int:
        bus.publish_batch("grid/bids", payloads, senders=senders, now_s=now_s)
        return _deliver_and_read(bus, "grid/bids", n, now_s)

    return step


def wall_cost_us(messages_per_step: int, steps: int) -> tuple[float, float]:
    """p50/p99 over steps of (step wall time / messages), µs per message publish -> deliver."""
    bus = _bus()
    step = unicast_step(messages_per_step)
    step(bus, 0.0)
    costs = np.empty(steps)
    for k in range(steps):
        start = time.perf_counter()
        step(bus, float(k + 1))
        costs[k] = (time.perf_counter() - start) / messages_per_step * 1e6
    return float(np.quantile(costs, 0.5)), float(np.quantile(costs, 0.99))


SIZES = (1, 100, 10_000)


def run(quick: bool = False) -> dict:
    """Measure the bus; return the figures (messages/s, µs).

    :param quick: fewer messages (a few seconds instead of ~half a minute).
    :return: ``{"msgs_per_s", "batch_msgs_per_s", "publish_deliver_wall_us_p50",
        "publish_deliver_wall_us_p99", ...}``: every rate per wall-clock second, and the
        same per CPU second under ``*_per_cpu_s`` keys; ``"rates"`` holds the table rows
        ``{label: (wall rate, cpu rate)}``; ``"load_average"`` the 1-minute load before
        and after (other processes on the machine lower the wall-clock figures).
    """
    scale = 0.1 if quick else 1.0
    repeats = 3

    def steps(total_messages: float, per_step: int) -> int:
        return max(5, int(total_messages * scale / per_step))

    load_before = os.getloadavg()[0]
    rates: dict[str, tuple[float, float]] = {
        "single publish, unicast, 10 000/step": _rate(
            unicast_step(10_000), steps(2e6, 10_000), repeats
        ),
        "single publish, unicast, 100/step": _rate(unicast_step(100), steps(1e6, 100), repeats),
    }
    for n in SIZES:
        rates[f"single publish, broadcast to {n:,}"] = _rate(
            broadcast_step(n), steps(max(2e4, 2e2 * n), n), repeats
        )
    for n in SIZES:
        rates[f"publish_batch, {n:,} rows"] = _rate(
            batch_step(n), steps(max(2e4, 2e2 * n), n), repeats
        )
    result: dict = {"rates": rates}
    for key, label in (
        ("msgs_per_s", "single publish, unicast, 10 000/step"),
        ("msgs_per_s_100", "single publish, unicast, 100/step"),
        ("batch_msgs_per_s", "publish_batch, 10,000 rows"),
    ):
        result[key], result[key.replace("_per_s", "_per_cpu_s")] = rates[label]
    result["broadcast_msgs_per_s"] = {
        n: rates[f"single publish, broadcast to {n:,}"][0] for n in SIZES
    }
    result["batch_msgs_per_s_by_size"] = {n: rates[f"publish_batch, {n:,} rows"][0] for n in SIZES}
    p50, p99 = wall_cost_us(100, steps(3e5, 100))
    result["publish_deliver_wall_us_p50"], result["publish_deliver_wall_us_p99"] = p50, p99
    p50, p99 = wall_cost_us(1, steps(2e4, 1))
    result["single_message_wall_us_p50"], result["single_message_wall_us_p99"] = p50, p99
    result["load_average"] = (load_before, os.getloadavg()[0])
    return result


def format_table(result: dict) -> str:
    """The figures of :func:`run` as a small text table."""
    width = 42
    lines = [
        f"{'AMB benchmark (msg/s)':<{width}}  {'per wall s':>14}  {'per CPU s':>14}",
        "-" * (width + 32),
    ]
    lines += [
        f"{label:<{width}}  {wall:>14,.0f}  {cpu:>14,.0f}"
        for label, (wall, cpu) in result["rates"].items()
    ]
    lines += [
        "",
        f"{'publish -> deliver, wall clock per message':<{width}}  {'p50 us':>14}  {'p99 us':>14}",
    ]
    for label, key in (
        ("100 single publishes per step", "publish_deliver_wall_us"),
        ("one message per step", "single_message_wall_us"),
    ):
        lines.append(
            f"{label:<{width}}  {result[key + '_p50']:>14,.2f}  {result[key + '_p99']:>14,.2f}"
        )
    before, after = result["load_average"]
    target = "met" if result["msgs_per_s"] >= 1e6 else "NOT met"
    lines += [
        "",
        f"target >= 1 000 000 msg/s, single-publish path (wall): {target} "
        f"({result['msgs_per_s']:,.0f}; per CPU s {result['msgs_per_cpu_s']:,.0f})",
        f"load average (1 min) before/after: {before:.2f}/{after:.2f} on {os.cpu_count()} cores",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python benchmarks/bench_bus.py [--quick]``."""
    from policies.cli_checks import OneLineParser

    parser = OneLineParser(prog="python -m benchmarks.bench_bus",
                           description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, a few seconds")
    args = parser.parse_args(argv)
    print(format_table(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
