"""Heuristic roles and the perfect-foresight oracle: hand-solved LPs, masks, targets.

The oracle's LP is checked on tiny instances solved by hand; the policies are run
through the real environment (market, contracts, kernel) and compared on
``system_cost`` as measured by the environment.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import gridswarm_env
from gridswarm_env.config import CostConfig, EnvConfig, FleetConfig, MarketConfig
from gridswarm_env.env import OBS_FIELDS
from gridswarm_env.metrics import SHEDDING_STAGE_HZ
from policies import make_policy
from policies.heuristic import HeuristicConfig, HeuristicPolicy
from policies.oracle import FREE, BalancingProblem, OraclePolicy, build_lp, solve_balancing
from policies.rollout import run_episode
from tests.episodes import play

SCENARIOS = ("price_spike", "solar_surplus", "emergency")
N_SMALL = 20
COSTS = CostConfig()
VOLL = COSTS.voll_per_mwh


# --------------------------------------------------------------------------- tiny LPs
def tiny_problem(n: int, requirement: list[float], **fields) -> BalancingProblem:
    """A problem with ``dt_s = 3600`` (h = 1, so MW·step = MWh) and neutral defaults."""
    k = len(requirement)
    base = dict(
        dt_s=3600.0, costs=COSTS, requirement_mw=np.array(requirement, float),
        round_direction=np.array([FREE] + [1] * (k - 1)), request_mw=np.array(requirement, float),
        reserve_coupled=np.zeros(k, bool), reserve_share=np.zeros(k),
        up_max_mw=np.zeros((n, k)), down_max_mw=np.zeros((n, k)),
        up_cost_per_mwh=np.zeros(n), down_cost_per_mwh=np.zeros(n),
        energy0_mwh=np.zeros(n), energy_min_mwh=np.zeros((n, k)),
        energy_max_mwh=np.full((n, k), 1e6), charge_gain=np.zeros(n),
        discharge_gain=np.zeros(n), energy_drift_mwh=np.zeros((n, k)),
        reserve_min_mw=np.zeros(n), reserve_max_mw=np.zeros(n), reserve_target_mw=0.0,
        departure_step=np.full(n, -1), departure_energy_mwh=np.zeros(n),
        ramp_mw=np.full(n, np.inf), last_p_mw=np.zeros(n), first_step_p_mw=np.zeros(n))
    base.update(fields)
    return BalancingProblem(**base)


def test_lp_shortage_merit_order_with_battery_energy_limit():
    """Battery (40 $/MWh, 3 MW, 2.7 MWh above its floor, η_d = 0.9) and an EV fleet
    deferring charging (60 $/MWh, 4 MW) cover 5 MW for two hours.

    The battery can deliver at most 2.7 · 0.9 = 2.43 MWh in total; the EV covers the
    remaining 10 − 2.43 = 7.57 MWh (<= 2 · 4 MWh). Cost = 40·2.43 + 60·7.57 = 551.40 $,
    nothing unserved, the battery ends at its floor.
    """
    pb = tiny_problem(
        2, [0.0, 5.0, 5.0],
        up_max_mw=np.array([[3.0] * 3, [4.0] * 3]), up_cost_per_mwh=np.array([40.0, 60.0]),
        energy0_mwh=np.array([2.7, 0.0]), discharge_gain=np.array([1 / 0.9, 0.0]),
        charge_gain=np.array([0.9, 0.0]), energy_max_mwh=np.array([[10.0] * 3, [0.0] * 3]))
    plan = solve_balancing(pb)
    assert plan.cost == pytest.approx(40 * 2.43 + 60 * 7.57, abs=1e-6)
    assert plan.p_mw[0, 1:].sum() == pytest.approx(2.43, abs=1e-7)
    assert plan.p_mw[1, 1:].sum() == pytest.approx(7.57, abs=1e-7)
    assert plan.energy_mwh[0, -1] == pytest.approx(0.0, abs=1e-7)
    np.testing.assert_allclose(plan.unserved_mw, 0.0, atol=1e-7)
    np.testing.assert_allclose(plan.p_mw[:, 0], 0.0, atol=1e-9)   # fixed first step


def test_lp_surplus_cheapest_absorbers_first_then_unserved():
    """A 4 MW surplus for one hour: EV extra charging (free, 1 MW), PV curtailment
    (27.5 $/MWh, 2 MW), battery charging (40 $/MWh, 1 MW but only 0.5 MWh of room).

    Optimum: 1 + 2 + 0.5 = 3.5 MW absorbed, 0.5 MWh unserved.
    Cost = 27.5·2 + 40·0.5 + 9000·0.5 = 4575 $.
    """
    pb = tiny_problem(
        3, [0.0, -4.0], round_direction=np.array([FREE, -1]),
        down_max_mw=np.array([[1.0, 1.0], [2.0, 2.0], [1.0, 1.0]]),
        down_cost_per_mwh=np.array([0.0, 27.5, 40.0]), up_cost_per_mwh=np.array([60.0, 0, 40.0]),
        energy0_mwh=np.array([0.0, 0.0, 9.5]), charge_gain=np.array([0.0, 0.0, 1.0]),
        discharge_gain=np.array([0.0, 0.0, 1.0]),
        energy_max_mwh=np.array([[1e6] * 2, [0.0] * 2, [10.0] * 2]))
    plan = solve_balancing(pb)
    assert plan.cost == pytest.approx(27.5 * 2 + 40 * 0.5 + VOLL * 0.5, abs=1e-6)
    np.testing.assert_allclose(plan.p_mw[:, 1], [-1.0, -2.0, -0.5], atol=1e-7)
    assert plan.unserved_mw[1] == pytest.approx(0.5, abs=1e-7)


def test_lp_market_never_exceeds_or_opposes_the_request():
    """Requirement 5 MW but the round requests only 3 MW: 2 MWh stay unserved even
    though the battery could do more; a surplus round forbids injection."""
    pb = tiny_problem(
        1, [0.0, 5.0, 0.0], request_mw=np.array([0.0, 3.0, 0.0]),
        round_direction=np.array([FREE, 1, 0]), up_max_mw=np.full((1, 3), 10.0),
        down_max_mw=np.full((1, 3), 10.0), up_cost_per_mwh=np.array([40.0]),
        down_cost_per_mwh=np.array([40.0]), energy0_mwh=np.array([50.0]),
        charge_gain=np.ones(1), discharge_gain=np.ones(1))
    plan = solve_balancing(pb)
    assert plan.p_mw[0, 1] == pytest.approx(3.0, abs=1e-7)
    assert plan.p_mw[0, 2] == pytest.approx(0.0, abs=1e-9)
    assert plan.cost == pytest.approx(40 * 3 + VOLL * 2, abs=1e-6)


def test_lp_reserve_coupling_and_activation_share():
    """Emergency: 10 MW lost from step 1 on; the reserve activates half-way through step
    1 (a = 0.5) and step 2's energy round requests 10 − Σr.

    Two batteries may hold 6 MW of reserve each (target 10 MW). Best: Σr = 10 MW,
    step 1 delivers 5 MW (5 MWh unserved), step 2 delivers 10 MW from the reserve.
    Cost = 40·(5 + 10) + 9000·5 = 45 600 $.
    """
    pb = tiny_problem(
        2, [0.0, 10.0, 10.0], round_direction=np.array([FREE, 0, 1]),
        request_mw=np.array([0.0, 0.0, 10.0]), reserve_coupled=np.array([False, False, True]),
        reserve_share=np.array([0.0, 0.5, 1.0]), up_max_mw=np.full((2, 3), 6.0),
        up_cost_per_mwh=np.full(2, 40.0), energy0_mwh=np.full(2, 100.0),
        discharge_gain=np.ones(2), charge_gain=np.ones(2), reserve_max_mw=np.full(2, 6.0),
        reserve_target_mw=10.0)
    plan = solve_balancing(pb)
    assert plan.reserve_mw.sum() == pytest.approx(10.0, abs=1e-7)
    assert plan.cost == pytest.approx(40 * 15 + VOLL * 5, abs=1e-5)
    np.testing.assert_allclose(plan.energy_part_mw[:, 1:], 0.0, atol=1e-7)
    assert plan.request_mw[2] == pytest.approx(0.0, abs=1e-7)   # 10 − Σr


def test_lp_ramp_limit_binds():
    """A 1 MW/step ramp from 0: the battery can give 1 then 2 MW of a 3 MW need."""
    pb = tiny_problem(
        1, [0.0, 3.0, 3.0], up_max_mw=np.full((1, 3), 5.0), up_cost_per_mwh=np.array([40.0]),
        energy0_mwh=np.array([50.0]), discharge_gain=np.ones(1), ramp_mw=np.array([1.0]))
    plan = solve_balancing(pb)
    np.testing.assert_allclose(plan.p_mw[0], [0.0, 1.0, 2.0], atol=1e-7)
    assert plan.cost == pytest.approx(40 * 3 + VOLL * 3, abs=1e-6)


def test_lp_is_sparse_and_sized_per_agent_step():
    pb = tiny_problem(3, [0.0, 1.0, 1.0, 1.0])
    lp = build_lp(pb)
    n, k = pb.shape
    assert lp.c.size == 3 * n * k + k + 2 * n
    assert lp.a_eq.shape == (n * k, lp.c.size)
    assert lp.a_eq.nnz <= 4 * n * k


def test_problem_validation_names_the_field():
    with pytest.raises(ValueError, match="up_max_mw"):
        tiny_problem(2, [0.0, 1.0], up_max_mw=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="round_direction"):
        tiny_problem(1, [0.0, 1.0], round_direction=np.array([FREE, 5]))
    with pytest.raises(ValueError, match="reserve_share"):
        tiny_problem(1, [0.0, 1.0], reserve_share=np.array([0.0, 1.5]))


# --------------------------------------------------------------------------- episodes
def _env(scenario: str, n_agents: int = N_SMALL, **kwargs):
    return gridswarm_env.parallel_env(scenario=scenario, n_agents=n_agents, trust="hmac",
                                      **kwargs)


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, str], dict]:
    """Metrics of heuristic, oracle and random on every scenario (20 agents, seed 0)."""
    out: dict[tuple[str, str], dict] = {}
    for sc in SCENARIOS:
        for name in ("heuristic", "oracle", "random"):
            policy = make_policy(name)
            res = run_episode(_env(sc), policy, seed=0)
            out[(name, sc)] = res.metrics
            if name == "oracle":
                out[("oracle_plan", sc)] = {"cost": policy.planned_cost,
                                            "failures": list(policy.replan_failures)}
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_oracle_not_worse_than_heuristic(runs, scenario):
    oracle = runs[("oracle", scenario)]["system_cost"]
    heuristic = runs[("heuristic", scenario)]["system_cost"]
    assert oracle <= heuristic * (1 + 1e-9) + 1e-9, (oracle, heuristic)
    assert runs[("oracle", scenario)]["executed_violations"] == 0
    assert runs[("oracle_plan", scenario)]["failures"] == []


@pytest.mark.parametrize("scenario", ("price_spike", "solar_surplus"))
def test_oracle_measured_cost_matches_its_plan(runs, scenario):
    """Its dispatch goes through market and kernel, and lands where the LP said."""
    measured = runs[("oracle", scenario)]["system_cost"]
    planned = runs[("oracle_plan", scenario)]["cost"]
    assert measured == pytest.approx(planned, rel=1e-3)


@pytest.mark.parametrize("scenario", ("price_spike", "solar_surplus"))
def test_heuristic_beats_random(runs, scenario):
    heuristic = runs[("heuristic", scenario)]
    random = runs[("random", scenario)]
    assert heuristic["system_cost"] < random["system_cost"]
    # the heuristic's EVs protect their departure energy conservatively, so at the
    # price spike's peak (110 MW > 100 MW of batteries) a sliver stays unserved; it
    # still serves far more than random
    assert heuristic["unserved_energy_mwh"] < 0.1 * max(random["unserved_energy_mwh"], 1e-6)


def test_heuristic_beats_random_in_the_emergency_on_average():
    """In the emergency every policy that buys the reserve from batteries pays the
    same floor up to the bus-latency draw of the activation (~±1 $); random
    does not always buy the whole reserve and then pays VOLL. Mean of 5 seeds, 100
    agents."""
    costs = {}
    for name in ("heuristic", "random"):
        env = _env("emergency", 100)
        costs[name] = [run_episode(env, make_policy(name), seed=s).metrics["system_cost"]
                       for s in range(5)]
    assert np.mean(costs["heuristic"]) < np.mean(costs["random"]), costs


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_heuristic_respects_masks(runs, scenario):
    assert runs[("heuristic", scenario)]["blocked_attempts"] == 0
    assert runs[("oracle", scenario)]["blocked_attempts"] == 0
    assert runs[("heuristic", scenario)]["executed_violations"] == 0


def test_heuristic_actions_inside_every_mask_step_by_step():
    raw = _env("price_spike", 12, limits={"battery": {"soc_min": 0.4, "soc_max": 0.6}}).unwrapped
    policy = HeuristicPolicy()
    raw.reset(seed=3)
    policy.reset(raw, 3)
    obs = raw.observations_array()
    n_power = raw.config.market.n_power_levels
    rows = np.arange(raw.n_agents)
    for _ in range(60):
        mask = raw.action_masks()
        act = policy.act(obs, mask)
        assert act.shape == (raw.n_agents, 2) and act.dtype == np.int64
        assert mask[rows, act[:, 0]].all()
        assert mask[rows, n_power + act[:, 1]].all()
        obs, _, _, info = raw.step_arrays(act[:, 0], act[:, 1])
        assert info["blocked"] == 0


def test_emergency_targets_with_the_heuristic():
    """Nadir >= 59.5 Hz (the no-DER counterfactual falls to ~59.35 Hz) and the DER
    response starts within 100 ms of the trip."""
    m = run_episode(_env("emergency"), HeuristicPolicy(), seed=1).metrics
    assert m["frequency_nadir_hz"] >= SHEDDING_STAGE_HZ
    assert m["emergency_response_latency_ms"] is not None
    assert 0 < m["emergency_response_latency_ms"] <= 100.0
    shadow = run_episode(_env("emergency", shadow=True), HeuristicPolicy(), seed=1).metrics
    assert shadow["frequency_nadir_hz"] < 59.4


def test_a_trip_above_the_reserve_target_is_covered_by_the_free_batteries():
    """``emergency`` with a 108 MW trip and its 100 MW reserve target: the reserve (75 MW
    of batteries, 25 MW of EV deferral) answers 100 MW, every energy round after the trip
    asks the other 8 MW, and 25 MW of battery power is still free. Every such round
    reaches consensus and only the oracle's unserved energy is left (the trip's first
    steps, before an energy round can deliver). Before the fix the free batteries offered
    0.2 of their room (5.2 MW): 1 of 110 rounds reached consensus and 2.8 MW stayed
    unserved for the rest of the episode (0.074 MWh here vs the oracle's 0.0054)."""
    from gridswarm_env.scenarios import get_scenario

    sc = get_scenario("emergency", contingency_mw=108.0)
    heuristic = run_episode(_env(sc), HeuristicPolicy(), seed=0).metrics
    oracle = run_episode(_env(sc), make_policy("oracle"), seed=0).metrics
    assert heuristic["consensus_rate"] == 1.0
    assert heuristic["unserved_energy_mwh"] <= 1.05 * oracle["unserved_energy_mwh"], (
        heuristic["unserved_energy_mwh"], oracle["unserved_energy_mwh"])


# --------------------------------------------------------------------------- roles
@pytest.fixture()
def shortage_obs():
    raw = _env("price_spike", 30).unwrapped
    raw.reset(seed=0)
    policy = HeuristicPolicy()
    policy.reset(raw, 0)
    obs = raw.observations_array()
    col = {name: i for i, name in enumerate(OBS_FIELDS)}
    obs[:, col["request_rel"]] = 0.3
    obs[:, col["product_reserve"]] = 0.0
    return policy, obs, col


def test_battery_sell_price_rises_as_soc_falls(shortage_obs):
    policy, obs, col = shortage_obs
    bat = np.flatnonzero(obs[:, col["is_battery"]] > 0.5)[:5]
    obs = obs[bat].copy()
    obs[:, col["feasible_hi_rel"]] = 1.0
    obs[:, col["soc"]] = [0.9, 0.6, 0.4, 0.25, 0.1]
    target, price, _ = policy.bids(obs)
    assert (target > 0).all()
    assert np.all(np.diff(price) >= 0) and price[-1] > price[0]
    # at a full SoC: the true cost of selling, wear + the stored energy spent (1/η_d)
    fleet = FleetConfig()
    assert price[0] == pytest.approx(COSTS.battery_degradation_per_mwh
                                     + COSTS.stored_energy_value_per_mwh
                                     / fleet.battery_eta_discharge)


def test_ev_defers_only_with_departure_slack(shortage_obs):
    policy, obs, col = shortage_obs
    ev = np.flatnonzero(obs[:, col["is_ev"]] > 0.5)[:2]
    obs = obs[ev].copy()
    obs[:, col["feasible_hi_rel"]] = 0.5
    obs[:, col["ev_departure_12h"]] = 1.0 / 12.0
    obs[:, col["ev_shortfall_soc"]] = [0.0, 0.5]     # plenty of slack / none
    target, price, _ = policy.bids(obs)
    assert target[0] > 0 and target[1] == 0.0
    assert price[0] >= COSTS.ev_deferral_per_mwh


def test_surplus_roles_merit_order(shortage_obs):
    """In a surplus EVs pay to charge, batteries at mid SoC ask their wear less the
    stored energy gained (11.5 $/MWh), solar its curtailment cost (27.5 $/MWh): the
    surplus is stored before it is spilled."""
    policy, obs, col = shortage_obs
    obs = obs.copy()
    obs[:, col["request_rel"]] = -0.5
    obs[:, col["feasible_lo_rel"]] = -0.8
    obs[:, col["soc"]] = np.where(obs[:, col["is_solar"]] > 0.5, 0.0, 0.5)
    target, price, _ = policy.bids(obs)
    kinds = [obs[:, col[k]] > 0.5 for k in ("is_solar", "is_battery", "is_ev")]
    assert (target < 0).all()
    solar_p, bat_p, ev_p = (price[k].max() for k in kinds)
    assert ev_p >= 0 > bat_p > solar_p
    assert price[kinds[0]].max() == pytest.approx(-COSTS.solar_curtailment_per_mwh)


def test_solar_stays_out_of_shortages_and_reserve(shortage_obs):
    policy, obs, col = shortage_obs
    solar = obs[:, col["is_solar"]] > 0.5
    target, _, _ = policy.bids(obs)
    assert (target[solar] == 0).all()
    obs = obs.copy()
    obs[:, col["product_reserve"]] = 1.0
    target, _, _ = policy.bids(obs)
    assert (target[solar] == 0).all() and (target[~solar] >= 0).all()


def test_configs_validate_with_field_names():
    with pytest.raises(ValueError, match="overoffer"):
        HeuristicConfig(overoffer=0.0)
    with pytest.raises(ValueError, match="soc_low"):
        HeuristicConfig(soc_low=0.6, soc_mid=0.5)
    with pytest.raises(ValueError, match="replan_drift"):
        OraclePolicy(replan_drift=-1.0)
    assert dataclasses.replace(HeuristicConfig(), overoffer=3.0).overoffer == 3.0


def test_policies_are_deterministic_for_a_seed():
    a = run_episode(_env("solar_surplus", 8), make_policy("heuristic"), seed=5, max_steps=80)
    b = run_episode(_env("solar_surplus", 8), make_policy("heuristic"), seed=5, max_steps=80)
    assert a.metrics["system_cost"] == b.metrics["system_cost"]
    assert a.trace["delivered_mw"] == b.trace["delivered_mw"]


def test_run_episode_without_a_second_reset_is_the_same_episode():
    from gridswarm_env.env import GridSwarmEnv
    from policies import make_policy
    from policies.rollout import run_episode

    a = GridSwarmEnv("emergency", n_agents=12, trust="hmac")
    b = GridSwarmEnv("emergency", n_agents=12, trust="hmac")
    ma = run_episode(a, make_policy("heuristic"), seed=4).metrics
    b.reset(seed=4)
    mb = run_episode(b, make_policy("heuristic"), seed=4, reset_env=False).metrics
    assert ma == mb
    with pytest.raises(ValueError, match="reset_env=False"):
        run_episode(b, make_policy("heuristic"), seed=4, reset_env=False)


@pytest.mark.parametrize(("policy", "env", "says"), [
    (None, "env", "run_episode(policy=...): a NoneType; expected a policy with reset(env, "
     "seed) and act(obs, mask) (policies.base.Policy), e.g. policies.make_policy('heuristic')"),
    ("heuristic", "env", "run_episode(policy=...): a str; expected a policy with"),
    (HeuristicPolicy, "env", "run_episode(policy=...): the class HeuristicPolicy (pass an "
     "instance: HeuristicPolicy()); expected a policy"),
    (HeuristicPolicy(), None, "run_episode(env=...): a NoneType; expected a gridswarm "
     "environment (gridswarm_env.parallel_env(...), wrapped or not)"),
])
def test_run_episode_refuses_what_is_no_policy_or_environment(policy, env, says):
    """Fuzzing (session 23): ``run_episode(env, None)`` failed as AttributeError
    "'NoneType' object has no attribute 'reset'"; a clear TypeError before any reset."""
    from gridswarm_env.env import GridSwarmEnv

    real = GridSwarmEnv("emergency", n_agents=4, trust="hmac")
    with pytest.raises(TypeError) as err:
        run_episode(real if env == "env" else env, policy, seed=0)
    assert str(err.value).startswith(says)
    assert not real.agents      # refused before the reset


@pytest.mark.parametrize("shape", [(12, 3), (12,), (11, 2), (12, 2, 1)])
def test_run_episode_refuses_actions_of_the_wrong_shape(shape):
    """Fuzzing review (session 23): a policy whose act() returned a third column had it
    ignored without a word (``actions[:, 0]``, ``actions[:, 1]``), and a 1-D array failed
    as IndexError "too many indices" (a list as TypeError "list indices must be
    integers or slices, not tuple"), naming neither the policy nor the expected shape."""
    from gridswarm_env.env import GridSwarmEnv

    class Shaped:
        name = "shaped"

        def reset(self, env, seed=None):
            pass

        def act(self, obs, mask):
            return np.zeros(shape, np.int64)

    env = GridSwarmEnv("emergency", n_agents=12, trust="hmac")
    with pytest.raises(ValueError) as err:
        run_episode(env, Shaped(), seed=0)
    assert str(err.value) == (f"policy 'shaped': act() returned shape {shape}; expected shape "
                              "(12, 2), one row of integer levels [power level, price level] "
                              "per agent (policies.base.Policy)")
    assert env.step_index == 0      # refused before any step


def test_run_episode_takes_a_policy_returning_lists_of_levels():
    """A list of ``[power, price]`` rows is the same bids as the int64 array."""
    from gridswarm_env.env import GridSwarmEnv

    class Lists:
        name = "lists"

        def reset(self, env, seed=None):
            self.inner = make_policy("heuristic")
            self.inner.reset(env, seed)

        def act(self, obs, mask):
            return self.inner.act(obs, mask).tolist()

    def play(policy):
        return run_episode(GridSwarmEnv("emergency", n_agents=12, trust="hmac"), policy,
                           seed=0, max_steps=20).metrics
    assert play(Lists()) == play(make_policy("heuristic"))


def test_solar_curtailment_offer_keeps_its_forecast_margin(shortage_obs):
    """In a surplus that asks for everything (share 1), solar offers curtailment only up to
    its forecast shrunk by ``solar_margin_sigmas`` forecast-error sigmas (2 x (0.05 + 0.01):
    88 % of its feasible 0.8 = 0.704 of rated), rounded *towards* 0 MW onto a power level
    (-0.7, level 3), not away from it (-0.8, which the mask allows)."""
    policy, obs, col = shortage_obs
    obs = obs.copy()
    obs[:, col["request_rel"]] = -1.0
    obs[:, col["feasible_lo_rel"]] = -0.8
    solar = np.flatnonzero(obs[:, col["is_solar"]] > 0.5)
    target, _, bound = policy.bids(obs)
    np.testing.assert_allclose(bound[solar], -0.8 * (1 - 2 * (0.05 + 0.01)))
    np.testing.assert_allclose(target[solar], bound[solar])
    mask = np.ones((obs.shape[0], 21 + 11), dtype=bool)
    assert (policy.act(obs, mask)[solar, 0] == 3).all()


def test_ev_pays_at_most_its_deferral_cost_for_extra_charging(shortage_obs):
    """In a surplus an EV pays ``c_ev · clip(shortfall / ev_pay_full_shortfall_soc, 0, 1)``
    for extra charging: half of ``c_ev`` at a 0.25 shortfall, ``c_ev`` (60 $/MWh), never
    more, from a 0.5 shortfall on."""
    policy, obs, col = shortage_obs
    ev = np.flatnonzero(obs[:, col["is_ev"]] > 0.5)[:3]
    obs = obs[ev].copy()
    obs[:, col["request_rel"]] = -0.5
    obs[:, col["feasible_lo_rel"]] = -0.5
    obs[:, col["ev_shortfall_soc"]] = [0.25, 0.5, 0.9]
    _, price, _ = policy.bids(obs)
    np.testing.assert_allclose(price, [30.0, 60.0, 60.0])


def test_a_zero_request_gets_a_zero_bid_also_in_a_reserve_round(shortage_obs):
    """A round whose request is 0 (a reserve round whose target is already awarded)
    gets a 0 MW bid from every agent (power level n//2)."""
    policy, obs, col = shortage_obs
    obs = obs.copy()
    obs[:, col["request_rel"]] = 0.0
    obs[:, col["product_reserve"]] = 1.0
    obs[:, col["feasible_hi_rel"]] = 1.0
    target, _, _ = policy.bids(obs)
    assert (target == 0.0).all()
    assert (policy.act(obs, np.ones((obs.shape[0], 32), dtype=bool))[:, 0] == 10).all()


def test_after_the_emergency_broadcast_upward_offers_are_the_whole_room(shortage_obs):
    """After the broadcast the activated reserve holds an unknown part of the fleet's
    upward flexibility, so ``request_rel`` (a share of the whole fleet) no longer sizes
    an offer: in an upward energy round every battery offers its whole feasible room
    (the 108 MW trip's 8 MW request is 0.064 of the fleet but 0.32 of the 25 MW left).
    Without the broadcast, and in a surplus, the sizing is unchanged."""
    policy, obs, col = shortage_obs
    bat = obs[:, col["is_battery"]] > 0.5
    obs = obs.copy()
    obs[:, col["request_rel"]] = 0.064
    obs[bat, col["feasible_hi_rel"]] = 0.75
    obs[bat, col["feasible_lo_rel"]] = -0.5
    before, _, _ = policy.bids(obs)
    np.testing.assert_allclose(before[bat], 0.2 * 0.75)   # min_offer_share of the room
    obs[:, col["emergency"]] = 1.0
    after, _, bound = policy.bids(obs)
    np.testing.assert_allclose(bound[bat], 0.75)
    np.testing.assert_array_equal(after, bound)            # solar: 0 in a shortage
    obs[:, col["request_rel"]] = -0.064
    surplus, _, _ = policy.bids(obs)
    np.testing.assert_allclose(surplus[bat], -0.2 * 0.5)


def test_heuristic_bids_are_projected_onto_the_mask(shortage_obs):
    """A level the mask forbids is never chosen: with only 0 MW allowed every agent bids
    level n//2, whatever it would have offered."""
    policy, obs, _ = shortage_obs
    mask = np.ones((obs.shape[0], 21 + 11), dtype=bool)
    assert (policy.act(obs, mask)[:, 0] != 10).any()   # it would bid something
    mask[:, :21] = False
    mask[:, 10] = True
    assert (policy.act(obs, mask)[:, 0] == 10).all()


def test_heuristic_act_before_reset_says_call_reset():
    obs = np.zeros((3, len(OBS_FIELDS)), dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"reset\(env\)"):
        HeuristicPolicy().act(obs, np.ones((3, 32), dtype=bool))


# --------------------------------------------------------------------------- random
def test_random_policy_uses_the_environments_number_of_power_levels():
    """``random`` on a market with 11 power levels (not the default 21) bids only levels
    its masks allow, power and price alike, and spreads its prices over the price levels:
    the policy takes the split of the mask from the environment it is reset on."""
    from policies.random import RandomPolicy

    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=20, trust="hmac",
                                     config=EnvConfig(market=MarketConfig(n_power_levels=11)))
    env.reset(seed=0)
    raw = env.unwrapped
    policy = RandomPolicy(seed=0)
    policy.reset(raw, seed=0)
    prices = set()
    for _ in range(5):
        mask = raw.action_masks()
        actions = policy.act(raw.observations_array(), mask)
        assert mask[np.arange(20), actions[:, 0]].all()
        assert mask[np.arange(20), 11 + actions[:, 1]].all()
        prices |= set(actions[:, 1].tolist())
        raw.step_arrays(actions[:, 0], actions[:, 1])
    assert len(prices) > 3


def test_random_policy_reset_with_a_seed_replays_its_bids():
    """``RandomPolicy.reset(env, seed)`` reseeds the bids: the same seed gives the same
    bids, whether the policy was built with a seed or not and whatever it played before
    (evaluate.py reuses one policy object across its seeds)."""
    from policies.random import RandomPolicy

    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=10, trust="hmac")
    env.reset(seed=0)
    raw = env.unwrapped
    obs, mask = raw.observations_array(), raw.action_masks()

    def bids(policy):
        policy.reset(raw, seed=7)
        return np.concatenate([policy.act(obs, mask) for _ in range(3)])

    reused = RandomPolicy()
    first = bids(reused)
    reused.act(obs, mask)                     # plays on, then is reset again
    np.testing.assert_array_equal(bids(reused), first)
    np.testing.assert_array_equal(bids(RandomPolicy()), first)
    np.testing.assert_array_equal(bids(RandomPolicy(seed=123)), first)


def _saved_maskable_ppo(path, action_space):
    """A tiny untrained MaskablePPO with gridswarm's observation space and
    ``action_space``, saved to ``path``."""
    import gymnasium as gym
    from sb3_contrib import MaskablePPO

    class Env(gym.Env):
        observation_space = gym.spaces.Box(-5, 5, (len(OBS_FIELDS),), np.float32)

        def reset(self, seed=None, options=None):
            return np.zeros(len(OBS_FIELDS), np.float32), {}

        def step(self, action):
            return np.zeros(len(OBS_FIELDS), np.float32), 0.0, True, False, {}

        def action_masks(self):
            return np.ones(int(np.sum(self.action_space.nvec)), bool)

    Env.action_space = action_space
    model = MaskablePPO("MlpPolicy", Env(), n_steps=8, batch_size=8, device="cpu")
    model.save(path)
    return model


def test_learned_policy_refuses_a_model_whose_actions_are_not_power_and_price(tmp_path):
    """A model must act in ``MultiDiscrete([n_power_levels, n_price_levels])``: one with a
    third action dimension is refused when loaded (file or memory), not at its first
    batch."""
    from gymnasium import spaces

    from policies.learned import LearnedPolicy

    path = tmp_path / "three_dims.zip"
    model = _saved_maskable_ppo(path, spaces.MultiDiscrete([21, 11, 2]))
    for make in (lambda: LearnedPolicy(path), lambda: LearnedPolicy.from_model(model)):
        with pytest.raises(ValueError, match=r"action space .*; expected "
                                             r"MultiDiscrete\(\[n_power_levels, n_price_levels"):
            make()


@pytest.mark.parametrize("deterministic", [True, False])
def test_learned_policy_refuses_observations_and_masks_of_another_shape(deterministic,
                                                                        tmp_path):
    """``act`` names a batch whose observations are not ``(n, OBS_DIM)`` or whose mask is
    not ``(n, n_power_levels + n_price_levels)`` instead of acting on it, greedy or
    sampling. A mask of the right size but transposed is refused too: ``model.predict``
    (which a sampling policy calls) would reshape it silently and sample each agent's bid
    under another agent's (scrambled) mask."""
    from gymnasium import spaces

    from policies.learned import LearnedPolicy

    model = _saved_maskable_ppo(tmp_path / "m.zip", spaces.MultiDiscrete([21, 11]))
    policy = LearnedPolicy.from_model(model, deterministic=deterministic)
    obs = np.zeros((3, len(OBS_FIELDS)), np.float32)
    assert policy.act(obs, np.ones((3, 32), bool)).shape == (3, 2)
    with pytest.raises(ValueError, match=r"mask has shape \(32, 3\): expected \(3, 32\)"):
        policy.act(obs, np.ones((32, 3), bool))
    with pytest.raises(ValueError, match=r"mask has shape \(3, 30\): expected \(3, 32\)"):
        policy.act(obs, np.ones((3, 30), bool))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 32\): expected \(3, 32\)"):
        policy.act(obs, np.ones((2, 32), bool))
    with pytest.raises(ValueError, match=r"obs has shape \(3, 27\): expected \(n_agents, 28\)"):
        policy.act(obs[:, :27], np.ones((3, 32), bool))


def test_learned_policy_refuses_an_environment_with_other_action_levels():
    """The shipped model acts in 21 power x 11 price levels: reset on an environment
    with 11 power levels is refused with both action spaces named, instead of bidding
    levels that mean other MW (or lie outside the action space)."""
    from policies.learned import LearnedPolicy

    policy = LearnedPolicy()
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=3, trust="hmac",
                                     config=EnvConfig(market=MarketConfig(n_power_levels=11)))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"was trained for MultiDiscrete\(\[21, 11\]\) actions; "
                                         r"this environment expects MultiDiscrete\(\[11, 11\]\)"):
        policy.reset(env.unwrapped)
    same = gridswarm_env.parallel_env(scenario="emergency", n_agents=3, trust="hmac")
    same.reset(seed=0)
    policy.reset(same)   # the levels it was trained for


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_learned_policy_refuses_non_finite_observations(bad, tmp_path):
    """``act`` names a NaN or infinite observation (agent, field) instead of acting on it:
    torch's check of the logits is off for speed (unvalidated_distributions), and before
    a NaN gave torch's message about the logits of a MaskableCategorical while an
    infinity was silently acted on."""
    from gymnasium import spaces

    from policies.learned import LearnedPolicy

    policy = LearnedPolicy.from_model(
        _saved_maskable_ppo(tmp_path / "m.zip", spaces.MultiDiscrete([21, 11])))
    obs = np.zeros((3, len(OBS_FIELDS)), np.float32)
    obs[1, 4] = bad
    obs[2, 0] = bad
    with pytest.raises(ValueError, match=rf"obs\[1, 4\] \({OBS_FIELDS[4]}\) is {bad}: "
                       r"observations must be finite \(2 value\(s\) are NaN or infinite\)"):
        policy.act(obs, np.ones((3, 32), bool))


@pytest.mark.parametrize("deterministic", [True, False])
def test_a_live_model_that_diverges_after_from_model_is_refused_at_act(deterministic,
                                                                      tmp_path):
    """Review: with torch's distribution checks off, a greedy policy over a model whose
    weights turned NaN after from_model (a run still training) acted silently ([0, 0]
    for every agent, masks or not). act re-checks such a model's weights."""
    import torch
    from gymnasium import spaces

    from policies.learned import LearnedPolicy

    model = _saved_maskable_ppo(tmp_path / "m.zip", spaces.MultiDiscrete([21, 11]))
    policy = LearnedPolicy.from_model(model, deterministic=deterministic)
    obs, mask = np.zeros((3, len(OBS_FIELDS)), np.float32), np.ones((3, 32), bool)
    assert policy.act(obs, mask).shape == (3, 2)
    with torch.no_grad():
        next(model.policy.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="model has .* non-finite value"):
        policy.act(obs, mask)


def test_learned_actions_are_the_same_with_torchs_distribution_checks(tmp_path):
    """``act`` runs ``model.predict`` with torch.distributions' argument checks off (~15-25
    % of its time at 100 agents): greedy (through ``predict``, not the direct path) and
    seeded sampled actions equal those with the checks on, and the process's setting is
    left as it was."""
    import contextlib

    from gymnasium import spaces
    from torch.distributions import Distribution

    import policies.learned as learned

    model = _saved_maskable_ppo(tmp_path / "m.zip", spaces.MultiDiscrete([21, 11]))
    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=40, trust="hmac")
    obs = np.random.default_rng(0).normal(size=(40, len(OBS_FIELDS))).astype(np.float32)
    mask = np.random.default_rng(1).random((40, 32)) < 0.7
    mask[:, 0] = mask[:, 21] = True   # at least one level allowed in each part

    def actions(deterministic: bool) -> list[np.ndarray]:
        policy = learned.LearnedPolicy.from_model(model, deterministic=deterministic)
        policy.direct_greedy = False
        policy.reset(env.unwrapped, seed=3)
        return [policy.act(obs, mask) for _ in range(4)]

    before = Distribution._validate_args
    fast = {d: actions(d) for d in (True, False)}
    assert Distribution._validate_args is before
    checked_calls = []

    @contextlib.contextmanager
    def checked():
        checked_calls.append(Distribution._validate_args)
        yield

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(learned, "unvalidated_distributions", checked)
        for deterministic, got in fast.items():
            for a, b in zip(got, actions(deterministic), strict=True):
                np.testing.assert_array_equal(a, b)
    assert checked_calls and all(checked_calls)   # the comparison ran with the checks on


def _random_masks(rng, n: int, keep: float) -> np.ndarray:
    """Masks with a share ``keep`` of levels allowed, at least one power and one price
    level per agent (some rows end with exactly one)."""
    mask = rng.random((n, 32)) < keep
    mask[np.arange(n), rng.integers(0, 21, n)] = True
    mask[np.arange(n), 21 + rng.integers(0, 11, n)] = True
    return mask


@pytest.mark.parametrize("model_file", ["gridswarm_ppo_dagger.zip", "gridswarm_ppo.zip",
                                        "gridswarm_dagger.zip"])
def test_direct_greedy_actions_are_sb3_predicts(model_file):
    """Greedy ``act`` computes its actions from the network directly (~0.7x the time of
    ``model.predict`` at 100 agents, ``python -m benchmarks.bench_policy``): the same
    actions as sb3-contrib's ``predict``, for every shipped model, on a real episode's
    observations with and without noise and on random masks."""
    from policies.learned import PRETRAINED_DIR, LearnedPolicy, greedy_actions

    policy = LearnedPolicy(PRETRAINED_DIR / model_file)
    assert policy.direct_greedy
    raw = gridswarm_env.parallel_env(scenario="emergency", n_agents=150,
                                     trust="hmac").unwrapped
    raw.reset(seed=0)
    rng = np.random.default_rng(0)
    for trial in range(24):
        if trial % 3 == 0:   # a real step's observations and masks
            real_obs, real_mask = raw.observations_array(), raw.action_masks()
            a = policy.act(real_obs, real_mask)
            raw.step_arrays(a[:, 0], a[:, 1])
        noise = (0.0, 0.3, 3.0)[trial % 3]
        obs = (real_obs + noise * rng.normal(size=real_obs.shape)).astype(np.float32)
        mask = real_mask if trial % 3 == 0 else _random_masks(rng, 150, rng.uniform(0.05, 1))
        expected, _ = policy.model.predict(obs, deterministic=True, action_masks=mask)
        np.testing.assert_array_equal(policy.act(obs, mask), expected)
        np.testing.assert_array_equal(greedy_actions(policy.model.policy, obs, mask), expected)
    # far outside training's range: saturated softmax, logits beyond the mask's -1e8
    for scale in (1e4, 1e9):
        obs = (scale * rng.normal(size=real_obs.shape)).astype(np.float32)
        mask = _random_masks(rng, 150, 0.3)
        expected, _ = policy.model.predict(obs, deterministic=True, action_masks=mask)
        np.testing.assert_array_equal(policy.act(obs, mask), expected)


def test_direct_greedy_breaks_ties_as_predict_does(tmp_path):
    """Equal probabilities (an action head of zeros: every allowed level ties; a bias
    that ties two levels): the first allowed level wins, as in ``predict``'s argmax."""
    import torch
    from gymnasium import spaces

    from policies.learned import LearnedPolicy

    model = _saved_maskable_ppo(tmp_path / "m.zip", spaces.MultiDiscrete([21, 11]))
    policy = LearnedPolicy.from_model(model)
    rng = np.random.default_rng(5)
    obs = rng.normal(size=(60, len(OBS_FIELDS))).astype(np.float32)
    head = model.policy.action_net
    for bias in (np.zeros(32), np.r_[np.arange(21) % 3, np.arange(11) % 2] * 1.0):
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))
        for keep in (0.1, 0.5, 1.0):
            mask = _random_masks(rng, 60, keep)
            expected, _ = model.predict(obs, deterministic=True, action_masks=mask)
            np.testing.assert_array_equal(policy.act(obs, mask), expected)
        if not bias.any():   # all tie: the first allowed level of each part
            np.testing.assert_array_equal(policy.act(obs, mask)[:, 0], mask[:, :21].argmax(1))


def test_direct_greedy_leaves_a_training_policy_in_eval_mode_as_predict_does(tmp_path):
    """A model being trained (``from_model``) is in training mode between updates;
    ``predict`` switches it to eval mode and leaves it there, and so does ``act``."""
    from gymnasium import spaces

    from policies.learned import LearnedPolicy

    model = _saved_maskable_ppo(tmp_path / "m.zip", spaces.MultiDiscrete([21, 11]))
    model.policy.set_training_mode(True)
    LearnedPolicy.from_model(model).act(np.zeros((2, len(OBS_FIELDS)), np.float32),
                                        np.ones((2, 32), bool))
    assert not any(m.training for m in model.policy.modules())


def test_direct_greedy_takes_what_predict_takes(tmp_path):
    """Review: a reversed view of the observations (negative strides, which torch
    refuses) raised on the direct path where ``predict`` copies and acts; masks of
    another dtype (int, float: nonzero = allowed, as sb3-contrib converts them) raised
    in ``greedy_actions``."""
    from policies.learned import LearnedPolicy, greedy_actions

    policy = LearnedPolicy()
    rng = np.random.default_rng(8)
    obs = rng.normal(size=(40, len(OBS_FIELDS))).astype(np.float32)
    mask = _random_masks(rng, 40, 0.5)
    expected, _ = policy.model.predict(obs[::-1], deterministic=True, action_masks=mask)
    np.testing.assert_array_equal(policy.act(obs[::-1], mask), expected)
    np.testing.assert_array_equal(policy.act(np.asfortranarray(obs), mask),
                                  policy.act(obs, mask))
    for dtype in (np.int64, np.float32, np.uint8):
        np.testing.assert_array_equal(
            greedy_actions(policy.model.policy, obs, mask.astype(dtype)),
            policy.act(obs, mask))
    np.testing.assert_array_equal(policy.act(obs, mask.tolist()), policy.act(obs, mask))
    # user-path review: a list mask was an AttributeError in act; greedy_actions gave
    # torch's shape errors (and took a transposed mask, as predict does, acting wrongly)
    for bad_obs, bad_mask, says in (
            (obs, mask[:, :-1], r"mask has shape \(40, 31\): expected \(40, 32\)"),
            (obs, mask.T, r"mask has shape \(32, 40\): expected \(40, 32\)"),
            (obs[0], mask, r"obs has shape \(28,\): expected \(n_agents, 28\)"),
            (obs[:, :-1], mask, r"obs has shape \(40, 27\): expected \(n_agents, 28\)")):
        with pytest.raises(ValueError, match=says):
            greedy_actions(policy.model.policy, bad_obs, bad_mask)


def test_direct_greedy_refuses_non_finite_logits(tmp_path):
    """Review: train.bc and train.dagger called ``predict`` with torch's checks on, which
    refused NaN logits; the direct path would have returned argmax-of-NaN actions. It
    raises instead."""
    import torch
    from gymnasium import spaces

    from policies.learned import greedy_actions

    model = _saved_maskable_ppo(tmp_path / "m.zip", spaces.MultiDiscrete([21, 11]))
    obs, mask = np.zeros((3, len(OBS_FIELDS)), np.float32), np.ones((3, 32), bool)
    assert greedy_actions(model.policy, obs, mask).shape == (3, 2)
    obs[1, 2] = np.nan
    with pytest.raises(ValueError, match="logits are NaN or infinite"):
        greedy_actions(model.policy, obs, mask)
    with torch.no_grad():
        model.policy.action_net.bias.fill_(float("inf"))
    with pytest.raises(ValueError, match="logits are NaN or infinite"):
        greedy_actions(model.policy, np.zeros((3, len(OBS_FIELDS)), np.float32), mask)


def test_a_policy_class_that_changes_the_distribution_acts_through_predict(tmp_path):
    """The direct path replicates sb3-contrib's ``MaskableActorCriticPolicy``; a subclass
    that overrides how the distribution is made (or sampling) keeps its own behaviour."""
    from gymnasium import spaces
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

    from policies.learned import LearnedPolicy, _direct_greedy

    model = _saved_maskable_ppo(tmp_path / "m.zip", spaces.MultiDiscrete([21, 11]))
    assert _direct_greedy(model.policy)
    calls = []

    class Custom(MaskableActorCriticPolicy):
        def get_distribution(self, obs, action_masks=None):
            calls.append(len(obs))
            return super().get_distribution(obs, action_masks)

    model.policy.__class__ = Custom
    assert not _direct_greedy(model.policy)
    LearnedPolicy.from_model(model).act(np.zeros((3, len(OBS_FIELDS)), np.float32),
                                        np.ones((3, 32), bool))
    assert calls == [3]

    class OwnTensors(MaskableActorCriticPolicy):   # review: predict's conversion replaced
        def obs_to_tensor(self, observation):
            return super().obs_to_tensor(observation)

    model.policy.__class__ = OwnTensors
    assert not _direct_greedy(model.policy)
    model.policy.__class__ = MaskableActorCriticPolicy
    assert _direct_greedy(model.policy)
    model.policy.predict = model.policy.predict   # an instance's own predict
    assert not _direct_greedy(model.policy)


def test_a_whole_episode_is_the_same_through_predict(tmp_path):
    """The shipped model plays an emergency the same with the direct greedy path as
    through ``model.predict``: every step's trace and the KPIs."""
    from policies.learned import LearnedPolicy

    results = []
    for direct in (True, False):
        policy = LearnedPolicy()
        policy.direct_greedy = direct
        env = gridswarm_env.parallel_env(scenario="emergency", n_agents=60, trust="hmac")
        results.append(run_episode(env, policy, seed=2))
    assert results[0].metrics == results[1].metrics
    assert results[0].trace == results[1].trace


def test_unvalidated_blocks_in_threads_leave_torchs_setting_as_they_found_it():
    """Review: each block saved the setting it found and restored it, so two threads whose
    blocks overlapped (A enters, B enters and saves "off", A leaves, B leaves) left
    torch's distribution checks off for the whole process. The first block to enter now
    saves the setting and the last to leave restores it; nested blocks too."""
    import threading

    from torch.distributions import Distribution

    from policies.learned import unvalidated_distributions

    before = Distribution._validate_args
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    inside = []

    def a():
        with unvalidated_distributions():
            a_in.set()
            b_in.wait(5)
            inside.append(Distribution._validate_args)
        a_out.set()

    def b():
        a_in.wait(5)
        with unvalidated_distributions():
            b_in.set()
            a_out.wait(5)
            inside.append(Distribution._validate_args)   # A left: still off for B
            with unvalidated_distributions():   # nested
                pass
            inside.append(Distribution._validate_args)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert inside == [False, False, False]
    assert Distribution._validate_args is before


def test_the_record_check_hashes_the_bytes_loaded_not_the_file_now(tmp_path):
    """``load_maskable_ppo(path, data)`` checks the training record against the bytes it
    was given (the model that acts), even when the file was rewritten since they were
    read; the file as it is now is refused by that record."""
    import hashlib
    import json

    from gymnasium import spaces

    from policies.learned import load_maskable_ppo

    path = tmp_path / "m.zip"
    _saved_maskable_ppo(path, spaces.MultiDiscrete([21, 11]))
    data = path.read_bytes()
    path.with_suffix(".json").write_text(json.dumps(
        {"model_sha256": hashlib.sha256(data).hexdigest(), "obs_fields": list(OBS_FIELDS)}))
    _saved_maskable_ppo(path, spaces.MultiDiscrete([21, 11]))   # rewritten meanwhile
    assert path.read_bytes() != data
    assert load_maskable_ppo(path, data=data).action_space.nvec.tolist() == [21, 11]
    for now in (None, path.read_bytes()):   # read here or handed over: refused
        with pytest.raises(ValueError, match="describes another model"):
            load_maskable_ppo(path, data=now)


def test_a_sampling_learned_policy_samples_and_a_greedy_one_does_not(tmp_path):
    """``deterministic=False`` draws each action from the policy's distribution (an
    untrained network's is spread over the levels, so repeated calls differ),
    reproducibly for a reset seed; ``deterministic=True`` acts greedily (always the same)."""
    from gymnasium import spaces

    from policies.learned import LearnedPolicy

    model = _saved_maskable_ppo(tmp_path / "m.zip", spaces.MultiDiscrete([21, 11]))
    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=4, trust="hmac")
    obs = np.zeros((4, len(OBS_FIELDS)), np.float32)
    mask = np.ones((4, 32), bool)

    def actions(deterministic: bool, seed: int) -> list[np.ndarray]:
        policy = LearnedPolicy.from_model(model, deterministic=deterministic)
        policy.reset(env.unwrapped, seed=seed)
        return [policy.act(obs, mask) for _ in range(5)]

    greedy = actions(True, 0)
    assert all(np.array_equal(a, greedy[0]) for a in greedy)
    sampled = actions(False, 0)
    assert not all(np.array_equal(a, sampled[0]) for a in sampled)
    assert all(np.array_equal(a, b) for a, b in zip(sampled, actions(False, 0), strict=True))


@pytest.mark.parametrize("event_time_s", [10.0, 10.5])
def test_oracle_plans_the_operators_rounds_as_the_environment_announces_them(event_time_s):
    """The oracle mirrors the operator: reserve rounds until the trip is detected (at
    event + 20 ms), energy rounds covering the trip from the first round announced at a
    gate closure after it (round k - 1, for step k's window, is announced at (k - 2)·dt +
    gate_s). A trip at 10.5 s is known at 11.25 s, so step 12's window is still a reserve
    round's; the oracle planned it as covering the trip (it took detection at (k - 1)·dt)."""
    from gridswarm_env.scenarios import get_scenario
    from policies.oracle import problem_from_env

    sc = get_scenario("emergency", event_time_s=event_time_s)
    raw = gridswarm_env.parallel_env(scenario=sc, n_agents=20, trust="hmac").unwrapped
    raw.reset(seed=0)
    planned = problem_from_env(raw).reserve_coupled   # per step: a round covering the trip
    products = [raw.round_product]   # round r's product, r = 0, 1, ...
    policy = make_policy("heuristic", seed=0)
    policy.reset(raw, seed=0)
    while raw.agents and raw.t_s < 20.0:
        act = policy.act(raw.observations_array(), raw.action_masks())
        raw.step_arrays(act[:, 0], act[:, 1])
        products.append(raw.round_product)
    # step k's window belongs to round k - 1: energy (0) rounds are those after detection
    announced = [products[k - 1] == 0 for k in range(2, 20)]
    assert list(planned[2:20]) == announced
    assert announced.index(True) + 2 == (12 if event_time_s == 10.0 else 13)


@pytest.mark.parametrize("case", ["target_met", "target_short"])
def test_oracle_plans_the_energy_rounds_before_the_trip(case):
    """The operator buys the forecast shortage as energy before the trip once its reserve
    target is met or a reserve round held cleared short (``market.operator_request``);
    the oracle, which takes its own reserve round to meet the target, plans those rounds
    as the environment announces them. ``target_met``: it planned none and re-planned
    at each (with 100 agents the episode took 72 s instead of 3 s on the project's
    2-core VM). ``target_short``: a target the fleet cannot reach (``solar_surplus``,
    120 MW target and trip at 200 s, EVs at 85-95 %: 119.51 MW held) kept every round a
    reserve round, planned as such; after the first reserve round held (round 1, cleared
    short) the rounds with a forecast surplus are energy rounds."""
    from gridswarm_env.scenarios import get_scenario
    from policies.oracle import problem_from_env

    if case == "target_met":
        sc = get_scenario("price_spike", contingency_mw=50.0, event_time_s=200.0,
                          reserve_target_mw=50.0)
        cfg, start, until_s = EnvConfig(n_agents=20, trust="hmac"), 0, 60.0
    else:
        sc = get_scenario("solar_surplus", contingency_mw=120.0, event_time_s=200.0,
                          reserve_target_mw=120.0)
        cfg = EnvConfig(n_agents=100, trust="hmac",
                        fleet=FleetConfig(ev_soc_init_low=0.85, ev_soc_init_high=0.95))
        start, until_s = 3, 120.0
    raw = gridswarm_env.parallel_env(scenario=sc, config=cfg).unwrapped
    raw.reset(seed=0)
    problem = problem_from_env(raw)
    announced = [(raw.round_product, raw.round_request_mw)]   # round start, start + 1, ...
    for _ in play(raw, until_s=until_s):
        if raw.step_index == start:
            problem = problem_from_env(raw)
            announced = []
        announced.append((raw.round_product, raw.round_request_mw))
    # the problem's step j is round start + j - 1's window (announced[j - 1])
    steps = range(2, int(until_s) - start)
    energy = [announced[j - 1][0] == 0 and abs(announced[j - 1][1]) > 0.05 for j in steps]
    assert sum(energy) > 10
    assert [problem.round_direction[j] != 0 for j in steps] == energy
    assert np.allclose(problem.request_mw[list(steps)][energy],
                       [announced[j - 1][1] for j, e in zip(steps, energy, strict=True) if e])
    assert raw.reserve_short == (case == "target_short")


def test_oracle_plans_pre_trip_energy_inside_a_holders_room():
    """Reserve held before the trip stays on top of its holder's energy bid
    (``Kernel.bid_interval``: hi = max(hi_net − base − reserve, 0)). The oracle's LP did
    not count it (a holder planned up to its full room as energy in the rounds before the
    trip), and in the reserve round its backup bids filled the operator's 50 MW target
    where the plan held 15.9 MW: measured 3 913 $ against its plan's 344 $ and the
    heuristic's 3 689 $ (seed 0, 100 agents). Now every planned pre-trip energy award of
    a holder lies inside the kernel's interval (with the plan's reserve), the reserve held
    is the plan's, and the oracle is below the heuristic (518 $)."""
    from gridswarm_env.scenarios import PRODUCT_RESERVE, get_scenario

    sc = get_scenario("price_spike", contingency_mw=50.0, event_time_s=200.0,
                      reserve_target_mw=50.0)
    costs, checked, held = {}, [], [0.0]
    for name in ("heuristic", "oracle"):
        env = gridswarm_env.parallel_env(scenario=sc,
                                         config=EnvConfig(n_agents=100, trust="hmac"))
        policy = make_policy(name)
        held[0] = 0.0

        def check(raw, info, policy=policy, name=name):
            held[0] = max(held[0], float(raw.reserve_standing_mw().sum()))
            if (name != "oracle" or raw.round_product == PRODUCT_RESERVE
                    or raw.round_request_mw <= 0 or raw.t_s >= sc.event_time_s):
                return
            plan = policy.plan
            col = raw.step_index + 1 - plan.first_step
            standing = raw.reserve_standing_mw()
            holders = standing > 0
            if holders.any() and col < plan.p_mw.shape[1]:
                # the kernel's room above the baseline (hi + the reserve it held), less
                # the plan's reserve (its bid is rounded up to a power level)
                room = raw._hi + standing - plan.reserve_mw
                planned = plan.energy_part_mw[holders, col]
                checked.append(float(np.max(planned - room[holders])))

        costs[name] = run_episode(env, policy, seed=0, on_step=check).metrics["system_cost"]
        if name == "oracle":   # the reserve it held is the plan's, below the target
            assert held[0] == pytest.approx(float(policy.plans[0].reserve_mw.sum()), abs=1.0)
            assert held[0] < sc.reserve_target_mw - 1.0
    assert len(checked) > 100
    assert max(checked) <= 1e-6, max(checked)
    assert costs["oracle"] < 0.5 * costs["heuristic"], costs


def test_oracle_replan_failures_belong_to_their_own_episode(monkeypatch):
    """evaluate.py reuses one oracle across seeds and reports each episode's failed
    re-plans: a failure in one episode must not be reported again for the next, whose
    re-plans all succeeded."""
    import policies.oracle as oracle

    original = oracle.solve_balancing

    def fail_replans(problem, first_step=0):
        if first_step > 0:
            raise RuntimeError("oracle LP not solved (HiGHS status 4): numerical trouble")
        return original(problem, first_step=first_step)

    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=5, trust="hmac")
    policy = oracle.OraclePolicy()
    monkeypatch.setattr(oracle, "solve_balancing", fail_replans)
    run_episode(env, policy, seed=0)
    assert policy.replan_failures
    monkeypatch.setattr(oracle, "solve_balancing", original)
    run_episode(env, policy, seed=1)
    assert len(policy.plans) > 1          # it did re-plan, successfully
    assert policy.replan_failures == []


def test_oracle_replans_when_a_battery_drifts_from_its_plan():
    """The oracle re-plans from the measured state when a storage agent's energy drifts
    from its plan by more than ``replan_drift`` (1 %) of its capacity: a 5 % drift makes
    it re-plan at its next bid (else it would keep bidding energy the battery lacks)."""
    from gridswarm_env.fleet import KIND_BATTERY

    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=5, trust="hmac")
    env.reset(seed=0)
    raw = env.unwrapped
    policy = OraclePolicy()
    policy.reset(raw)
    for _ in range(3):
        actions = policy.act(raw.observations_array(), raw.action_masks())
        raw.step_arrays(actions[:, 0], actions[:, 1])
    plans = len(policy.plans)
    policy.act(raw.observations_array(), raw.action_masks())
    assert len(policy.plans) == plans     # on plan: no re-plan
    i = int(np.flatnonzero(raw.fleet.kind == KIND_BATTERY)[0])
    cap = raw.fleet.energy_capacity_mwh[i]
    raw.fleet.energy_mwh[i] += -0.05 * cap if raw.fleet.energy_mwh[i] > cap / 2 else 0.05 * cap
    policy.act(raw.observations_array(), raw.action_masks())
    assert len(policy.plans) == plans + 1


def test_oracle_unplanned_agents_bid_their_room_as_backup():
    """With ``backup_bids`` (the default) every agent the plan does not use but that can
    move in the round's direction offers its whole room (the extreme allowed level) behind
    the planned bids, so a request the plan did not foresee is still covered."""
    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=20, trust="hmac")
    env.reset(seed=0)
    raw = env.unwrapped
    policy = OraclePolicy()
    policy.reset(raw)
    mid = (raw.config.market.n_power_levels - 1) // 2
    backups = 0
    for _ in range(40):
        mask = raw.action_masks()
        actions = policy.act(raw.observations_array(), mask)
        request = raw.round_request_mw
        col = raw.step_index + 1 - policy.plan.first_step
        if abs(request) > raw.config.market.deadband_mw and col < policy.plan.p_mw.shape[1]:
            d = 1 if request > 0 else -1
            power = mask[:, :2 * mid + 1]
            room = power & ((np.arange(2 * mid + 1)[None, :] - mid) * d > 0)
            unplanned = (policy.plan.energy_part_mw[:, col] * d <= 1e-6) & room.any(axis=1)
            levels = actions[unplanned, 0]
            want = (np.argmax(room, axis=1) if d < 0
                    else 2 * mid - np.argmax(room[:, ::-1], axis=1))[unplanned]
            np.testing.assert_array_equal(levels, want)
            backups += int(unplanned.sum())
        raw.step_arrays(actions[:, 0], actions[:, 1])
    assert backups > 0


def test_a_first_registration_keeps_the_built_in_policies():
    """Library-user review: ``register()`` before any lookup filled the registry, and the
    built-ins were only loaded into an empty one, so ``heuristic`` and the rest became
    unknown. Checked in a fresh interpreter, where nothing has looked a policy up."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from policies import make_policy, policy_names, register\n"
        "from policies.random import RandomPolicy\n"
        "register('idle', RandomPolicy)\n"
        "print(','.join(policy_names()))\n"
        "print(type(make_policy('heuristic')).__name__)\n"
        "from policies.heuristic import HeuristicPolicy\n"
        "register('random', HeuristicPolicy)\n"   # a built-in's name replaces it
        "print(type(make_policy('random')).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout.split()
    assert out[0].split(",") == ["heuristic", "random", "oracle", "learned", "idle"]
    assert out[1:] == ["HeuristicPolicy", "HeuristicPolicy"]


@pytest.mark.parametrize(("name", "factory", "says"), [
    ("", dict, "expected a non-empty string"),
    (3, dict, "expected a non-empty string"),
    ("x", "not callable", "the factory must be callable"),
    # fuzzing (session 23): evaluate.py --policies could never choose these
    ("a,b", dict, "policy name 'a,b': any characters but ',' and no whitespace at either end "
     "(evaluate.py --policies A,B splits on commas and strips each name)"),
    (" mine", dict, "policy name ' mine': any characters but ','"),
    ("mine\n", dict, "no whitespace at either end"),
])
def test_register_refuses_a_bad_name_or_factory(name, factory, says):
    from policies import register

    with pytest.raises(ValueError, match=re.escape(says)):
        register(name, factory)
