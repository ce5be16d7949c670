"""The operator prices with the PV forecasts the bus delivered to it (code review s20,
item 2; DESIGN §2: the operator reads forecasts, every signal travels over the bus).

Before: solar agents published their forecasts on ``grid/forecast``, but nothing read the
delivered messages; the operator's downward flexibility (and so its surplus price
signal) read ``fleet.solar_forecast_mw`` directly, so withholding, delaying or dropping
the forecasts changed nothing. Now the operator keeps each solar agent's newest
delivered forecast (``GridSwarmEnv.operator_forecast_mw``), starting from the forecasts
filed at reset.
"""

from __future__ import annotations

import numpy as np
import pytest

from gridswarm_env import market
from gridswarm_env.bus import BusConfig
from gridswarm_env.config import EnvConfig
from gridswarm_env.env import TOPIC_FORECAST, GridSwarmEnv

N = 20
BIG = 10**6


def _env(bus: BusConfig) -> GridSwarmEnv:
    env = GridSwarmEnv("solar_surplus", n_agents=N, trust="hmac",
                       config=EnvConfig(n_agents=N, trust="hmac", bus=bus))
    env.reset(seed=0)
    return env


def _price_with(env: GridSwarmEnv, forecast_mw: np.ndarray) -> float:
    """The round's price signal if the operator's PV forecasts were ``forecast_mw``."""
    down = env.operator.flex_down_mw.copy()
    solar = env.fleet.kind == 0
    down[solar] = forecast_mw[solar]
    sc = env.scenario
    return market.price_signal_per_mwh(env.round_request_mw, float(down.sum()),
                                       sc.price_floor_per_mwh, sc.price_cap_per_mwh)


def _priced_with(env: GridSwarmEnv, held_mw: np.ndarray) -> bool:
    """Check that the round just announced was priced with the PV forecasts
    ``held_mw``; tell whether the fleet's current forecasts (the old code's) give another
    price."""
    assert env.round_price_signal_per_mwh == pytest.approx(_price_with(env, held_mw), rel=1e-12)
    return env.round_price_signal_per_mwh != pytest.approx(
        _price_with(env, env.fleet.solar_forecast_mw), rel=1e-9)


def _idle_step(env: GridSwarmEnv) -> None:
    env.step_arrays(np.full(N, env.config.market.n_power_levels // 2),
                    np.zeros(N, dtype=np.int64))


def _play(env: GridSwarmEnv, at_gate, after_step, steps: int = 40) -> tuple[int, int]:
    """Idle steps; after each, check that the round just announced was priced with the
    forecasts ``at_gate()`` and that the operator holds ``after_step()``. Returns the
    surplus rounds and how many of them the old code would have priced otherwise."""
    solar = env.fleet.kind == 0
    rounds = differs = 0
    for _ in range(steps):
        _idle_step(env)
        if env.round_request_mw < 0:
            rounds += 1
            differs += _priced_with(env, at_gate())
        np.testing.assert_array_equal(env.operator_forecast_mw[solar], after_step()[solar])
    return rounds, differs


def _spy_deliveries(env: GridSwarmEnv) -> list:
    """Every ``Delivery`` the environment's bus hands out, in order."""
    seen = []
    real = env.bus.deliver

    def deliver(now_s: float):
        d = real(now_s)
        seen.append(d)
        return d

    env.bus.deliver = deliver
    return seen


def test_withheld_forecasts_leave_the_operator_with_those_filed_at_reset() -> None:
    """No message arrives within the episode (a constant 1 000 s latency): the surplus
    price signal is priced with the forecasts filed at reset, not the fleet's current
    ones (which the old code read: they follow the irradiance)."""
    env = _env(BusConfig(latency_distribution="constant", latency_mean_s=1000.0,
                         latency_max_s=1000.0))
    filed = env.fleet.solar_forecast_mw.copy()
    surplus_rounds, differs = _play(env, lambda: filed, lambda: filed)
    assert surplus_rounds > 10 and differs == surplus_rounds


def test_a_forecast_not_yet_delivered_is_not_used() -> None:
    """Every message takes 0.3 s (after gate closure at 0.25 s, before the step's end):
    the round announced at step k's gate is priced with the forecasts published at step
    k − 1 (delivered at its end), not with those published at step k, still in flight."""
    env = _env(BusConfig(latency_distribution="constant", latency_mean_s=0.3,
                         latency_max_s=0.3))
    solar = env.fleet.kind == 0
    previous = env.fleet.solar_forecast_mw.copy()   # filed at reset
    surplus_rounds = 0
    for _ in range(40):
        published = env.fleet.solar_forecast_mw.copy()   # sent at this step's start
        _idle_step(env)
        if env.round_request_mw < 0:
            surplus_rounds += 1
            _priced_with(env, previous)
            assert env.round_price_signal_per_mwh != pytest.approx(_price_with(env, published),
                                                           rel=1e-9)
        # delivered at the step's end: held for the next round
        np.testing.assert_array_equal(env.operator_forecast_mw[solar], published[solar])
        previous = published
    assert surplus_rounds > 10


def _replay(deliveries: list, start: np.ndarray, *, by_publish_time: bool) -> np.ndarray:
    """Each sender's last delivered forecast (or, ``by_publish_time``, the newest
    published among those delivered), message by message."""
    held = start.copy()
    sent = np.full(held.size, -np.inf)
    for d in deliveries:
        batch = d.topic(TOPIC_FORECAST)
        for s, v, t in zip(batch.senders.tolist(), batch.payloads.tolist(),
                           batch.publish_times_s.tolist(), strict=True):
            if not by_publish_time or t >= sent[s]:
                held[s], sent[s] = v, t
    return held


def test_under_telemetry_congestion_the_operator_keeps_the_last_delivered_forecasts() -> None:
    """TELEMETRY delivers 5 messages a step and keeps at most 12 queued (oldest dropped):
    the operator's forecasts are the last ones delivered, message by message, and the
    price signal is priced with them."""
    env = _env(BusConfig(capacity_per_step=(BIG, BIG, BIG, 5),
                         high_water_mark=(100_000, 100_000, 100_000, 12),
                         queue_limit=(500_000, 500_000, 500_000, 12)))
    start = env.fleet.solar_forecast_mw.copy()
    seen = _spy_deliveries(env)
    surplus_rounds, differs = _play(   # announced at gate closure: before the step-end delivery
        env, lambda: _replay(seen[:-1], start, by_publish_time=False),
        lambda: _replay(seen, start, by_publish_time=False))
    assert env.bus.stats()["lanes"]["TELEMETRY"]["dropped"] > 0
    assert surplus_rounds > 10 and differs > 0


def test_an_older_forecast_arriving_late_never_replaces_a_newer_one() -> None:
    """Latencies up to 3 s (mean 0.8 s) reach past a step, so a forecast can arrive after
    one its sender published later: the operator keeps the newest published."""
    env = _env(BusConfig(latency_mean_s=0.8, latency_max_s=3.0))
    start = env.fleet.solar_forecast_mw.copy()
    seen = _spy_deliveries(env)
    _play(env, lambda: _replay(seen[:-1], start, by_publish_time=True),
          lambda: _replay(seen, start, by_publish_time=True))
    assert any(_overtaken(seen))   # the case arose


def _overtaken(deliveries: list):
    """Whether some delivered forecast was older than one its sender had delivered before."""
    last = {}
    for d in deliveries:
        batch = d.topic(TOPIC_FORECAST)
        for s, t in zip(batch.senders.tolist(), batch.publish_times_s.tolist(), strict=True):
            yield t < last.get(s, -np.inf)
            last[s] = max(t, last.get(s, -np.inf))


def test_a_reset_starts_the_operator_from_the_new_fleets_forecasts() -> None:
    """Session review: nothing failed when ``operator_forecast_mw`` was carried over from
    the previous episode. After a played episode, ``reset`` gives the operator the new
    fleet's filed forecasts (a copy, not the fleet's own array), as a fresh env has."""
    import gridswarm_env
    from policies import make_policy
    from policies.rollout import run_episode

    env = gridswarm_env.parallel_env(scenario="solar_surplus", n_agents=20, trust="hmac")
    raw = env.unwrapped
    run_episode(env, make_policy("heuristic"), seed=3)
    raw.reset(seed=4)
    fresh = gridswarm_env.parallel_env(scenario="solar_surplus", n_agents=20, trust="hmac")
    fresh.reset(seed=4)
    np.testing.assert_array_equal(raw.operator_forecast_mw, fresh.unwrapped.operator_forecast_mw)
    np.testing.assert_array_equal(raw.operator_forecast_mw, raw.fleet.solar_forecast_mw)
    assert raw.operator_forecast_mw is not raw.fleet.solar_forecast_mw


def test_at_a_latency_bound_of_one_step_no_forecast_can_overtake_so_none_is_reordered() -> None:
    """Mutation review (s27: ``latency_max_s >= dt_s`` -> ``>`` survived; s28 made it
    ``>``). Forecasts are published once a step, ``dt_s`` apart: one published later
    arrives first only if ``L_older − L_newer > dt_s``, impossible when latencies are
    clipped at ``dt_s``; the tie (``dt_s`` against 0) is delivered in publish order
    (the bus: equal times in lane, then publish order). So at ``latency_max_s == dt_s``
    the operator keeps the last forecast delivered, without reordering, also when
    congestion defers older forecasts into a later delivery (TELEMETRY 5 a step); above
    it, it reorders by publish time."""
    dt = EnvConfig().dt_s
    env = _env(BusConfig(latency_mean_s=0.6 * dt, latency_max_s=dt,
                         capacity_per_step=(BIG, BIG, BIG, 5)))
    assert not env.operator.forecasts_reorder
    start = env.fleet.solar_forecast_mw.copy()
    seen = _spy_deliveries(env)
    _play(env, lambda: _replay(seen[:-1], start, by_publish_time=False),
          lambda: _replay(seen, start, by_publish_time=False))
    assert not any(_overtaken(seen))
    deferred = env.bus.stats()["lanes"]["TELEMETRY"]["deferred"]
    assert deferred > 0   # older forecasts did share deliveries with newer ones
    above = _env(BusConfig(latency_mean_s=0.6 * dt, latency_max_s=np.nextafter(dt, 2 * dt)))
    assert above.operator.forecasts_reorder
