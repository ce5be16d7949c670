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
