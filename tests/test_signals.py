"""Tests of what each agent knows from the operator's broadcasts (gridswarm_env/signals.py):
the emergency broadcast's arrivals (the round announcements are covered through the
environment in test_env_observations.py and test_env_behaviour.py)."""

from __future__ import annotations

import numpy as np

from gridswarm_env.bus import AgentMessageBus, BusConfig, Lane
from gridswarm_env.messages import EMERGENCY_DTYPE, OPERATOR, TOPIC_EMERGENCY, TOPIC_PRICE
from gridswarm_env.signals import AgentSignals


def _emergency(bus: AgentMessageBus, recipients: list[int], now_s: float) -> None:
    rows = np.zeros(len(recipients), dtype=EMERGENCY_DTYPE)
    bus.publish_batch(TOPIC_EMERGENCY, rows, lane=Lane.EMERGENCY, senders=OPERATOR,
                      recipients=np.array(recipients, dtype=np.int64), now_s=now_s)


def test_the_emergency_marks_who_it_reached_and_keeps_the_earliest_arrival() -> None:
    """Agent 1 gets two copies in one step (published at 0 and 0.02 s, 10 ms latency) and a
    third in the next step: its arrival stays the first copy's, 0.01 s. Agent 2 is reached
    in the second step only (0.11 s); agent 0 never (not seen, arrival inf). Price
    messages in the same deliveries are not emergencies."""
    bus = AgentMessageBus(BusConfig(latency_distribution="constant", latency_mean_s=0.01,
                                    latency_max_s=0.05), rng=0)
    bus.subscribe_many(TOPIC_EMERGENCY, np.arange(3))
    sig = AgentSignals(3, price_per_mwh=50.0, nominal_freq_hz=60.0, reorder=False)
    _emergency(bus, [1], 0.0)
    _emergency(bus, [1], 0.02)
    bus.publish_batch(TOPIC_PRICE, np.zeros(1, dtype=EMERGENCY_DTYPE), lane=Lane.MARKET,
                      senders=OPERATOR, recipients=np.array([0]), now_s=0.02)
    sig.receive_emergency((bus.deliver(0.05),))
    assert sig.emergency_seen.tolist() == [False, True, False]
    assert sig.emergency_arrival_s.tolist() == [np.inf, 0.01, np.inf]
    _emergency(bus, [2, 1], 0.1)
    first, second = bus.deliver(0.105), bus.deliver(0.2)
    sig.receive_emergency((first, second))
    assert sig.emergency_seen.tolist() == [False, True, True]
    assert sig.emergency_arrival_s[0] == np.inf and sig.emergency_arrival_s[1] == 0.01
    assert abs(sig.emergency_arrival_s[2] - 0.11) < 1e-12


def _spy_rounds(env) -> list:
    """Per delivery the environment's bus hands out: (recipients, rounds) of grid/price."""
    seen = []
    real = env.bus.deliver

    def deliver(now_s: float):
        d = real(now_s)
        batch = d.topic(TOPIC_PRICE)
        if len(batch.recipients):
            seen.append((np.asarray(batch.recipients).tolist(),
                         np.asarray(batch.payloads)["round"].tolist()))
        return d

    env.bus.deliver = deliver
    return seen


def _play_rounds(latency_mean_s: float, latency_max_s: float, capacity_market: int):
    """A 30-step heuristic episode part; returns the environment, whether a round was
    delivered after a newer one to the same agent, and whether each agent's signal
    round was, after every step, the newest round delivered to it."""
    from gridswarm_env.config import EnvConfig
    from gridswarm_env.env import GridSwarmEnv
    from policies import make_policy

    n = 12
    bus = BusConfig(latency_mean_s=latency_mean_s, latency_max_s=latency_max_s,
                    capacity_per_step=(10**6, 10**6, capacity_market, 10**6))
    env = GridSwarmEnv("price_spike", n_agents=n, trust="hmac",
                       config=EnvConfig(n_agents=n, trust="hmac", bus=bus))
    policy = make_policy("heuristic")
    env.reset(seed=2)
    policy.reset(env, seed=2)
    seen = _spy_rounds(env)
    newest, overtaken, kept = np.full(n, -1), False, True
    obs = env.observations_array()
    for _ in range(30):
        act = policy.act(obs, env.action_masks())
        obs = env.step_arrays(act[:, 0], act[:, 1])[0]
        while seen:
            for agent, rnd in zip(*seen.pop(0), strict=True):
                overtaken |= rnd < newest[agent]
                newest[agent] = max(newest[agent], rnd)
        kept &= bool(np.array_equal(env.sig_round, newest))
    return env, overtaken, kept


def test_at_a_latency_bound_of_gate_s_no_announcement_can_overtake_so_none_is_reordered():
    """The first two announcements are ``gate_s`` apart (reset, first gate closure), the
    later ones a step: one arrives after a newer one only if latencies differ by more
    than ``gate_s``; at ``latency_max_s == gate_s`` the tie is delivered in publish
    order. So ``AgentSignals`` does not reorder there (s28: it did, from ``>=``), also
    under MARKET congestion (deferred announcements share deliveries), and each agent's
    round is the newest delivered to it; above the bound announcements do overtake and
    the reordering keeps the newest."""
    from gridswarm_env.config import EnvConfig

    gate_s = EnvConfig().market.gate_s
    env, overtaken, kept = _play_rounds(0.6 * gate_s, gate_s, 20)
    assert not env.signals.reorder and not overtaken and kept
    assert env.bus.stats()["lanes"]["MARKET"]["deferred"] > 0
    env, overtaken, kept = _play_rounds(0.8, 3.0, 10**6)
    assert env.signals.reorder and overtaken and kept
