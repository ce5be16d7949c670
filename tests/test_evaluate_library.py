"""evaluate.py as a library user calls it: ``evaluate.evaluate(...)`` with custom
scenarios and policies, errors that name the keyword, readable exceptions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import evaluate


def test_a_stopped_run_reads_as_one_line_not_a_tuple(tmp_path):
    """Library review: ``str(EvaluationFailed(...))`` was the tuple repr
    ``('bad / emergency / seed 0', ValueError(...))``; ``message(out_dir)`` stays the
    command line's line."""
    saved = tmp_path / "results-failed.json"
    exc = evaluate.EvaluationFailed("bad / emergency / seed 0", ValueError("policy\nbug"),
                                    0, 2, saved)
    assert str(exc) == ("failed during bad / emergency / seed 0 (ValueError: policy bug) "
                        f"after 0 of 2 episodes; the traceback is saved in {str(saved)!r}")
    assert exc.message("eval_out") == f"{exc}; --out 'eval_out' was left as it was"
    stopped = evaluate.EvaluationInterrupted(3, 12, saved)
    assert str(stopped) == ("interrupted after 3 of 12 episodes; their results are saved in "
                            f"{str(saved)!r}")
    assert stopped.message(Path("o")) == f"{stopped}; --out 'o' was left as it was"
    assert isinstance(stopped, KeyboardInterrupt) and isinstance(exc, RuntimeError)


# --------------------------------------------------------------------------- helpers
def _small(out: Path, **kwargs):
    args = {"policies": ["heuristic"], "scenarios": ["emergency"], "episodes": 1, "seed": 0,
            "n_agents": 5, "out_dir": out, "trust": "hmac", "progress": False,
            "counterfactual": False, **kwargs}
    return evaluate.evaluate(**args)


def _refused(out: Path, **kwargs) -> str:
    with pytest.raises(evaluate.UsageError) as info:
        _small(out, **kwargs)
    text = str(info.value)
    assert "\n" not in text
    assert not out.exists()   # refused before any output
    return text


@pytest.fixture
def own_registry(monkeypatch):
    """policies.register() into a copy of the registry, dropped after the test."""
    import policies

    policies.policy_names()   # the built-ins loaded
    monkeypatch.setattr(policies, "_REGISTRY", dict(policies._REGISTRY))
    return policies


# --------------------------------------------------------------------------- scenarios
def test_scenario_objects_are_played_under_their_name_and_recorded(tmp_path):
    """Library review: ``evaluate(scenarios=[get_scenario("emergency",
    contingency_mw=80.0)])`` raised ``AttributeError: 'Scenario' object has no attribute
    'strip'``, though the environment takes Scenario objects."""
    import gridswarm_env
    from gridswarm_env.scenarios import get_scenario
    from policies import make_policy
    from policies.rollout import run_episode

    trip_80 = get_scenario("emergency", contingency_mw=80.0)
    ramp = get_scenario("price_spike", name="ramp_40", load_step_mw=40.0, episode_steps=40)
    result = _small(tmp_path / "o", scenarios=[trip_80, "solar_surplus", ramp, trip_80])
    config = result["summary"]["config"]
    assert config["scenarios"] == ["emergency", "solar_surplus", "ramp_40"]
    assert list(result["summary"]["scenarios"]) == config["scenarios"]
    # the custom scenario was played: the same episode as the environment gives it
    env = gridswarm_env.parallel_env(scenario=trip_80, n_agents=5, trust="hmac")
    alone = run_episode(env, make_policy("heuristic"), seed=0).metrics
    run = next(r for r in result["runs"] if r["scenario"] == "emergency")
    assert run["metrics"]["system_cost"] == alone["system_cost"]
    # recorded field by field (the registered solar_surplus is not), and rebuilt from it
    assert sorted(config["custom_scenarios"]) == ["emergency", "ramp_40"]
    assert evaluate.scenario_from_record(config["custom_scenarios"]["emergency"]) == trip_80
    assert evaluate.scenario_from_record(config["custom_scenarios"]["ramp_40"]) == ramp
    md = (tmp_path / "o" / "results.md").read_text()
    assert ("- scenario emergency: custom, changed from the registered one (in parentheses): "
            "contingency_mw = 80.0 (100.0)") in md
    assert "- scenario ramp_40: custom, not a registered scenario" in md
    assert "- scenario solar_surplus" not in md and "- environment" not in md
    assert (tmp_path / "o" / "freq_ramp_40.png").is_file()
    # a run of the shipped scenarios records none
    plain = _small(tmp_path / "p", scenarios="emergency")
    assert plain["summary"]["config"]["custom_scenarios"] == {}


def test_a_rerun_removes_the_plot_of_a_custom_scenario_it_did_not_run(tmp_path):
    """Review: a re-run removed freq_<name>.png only for registered names, so an earlier
    run's freq_ramp_40.png stayed beside a results.json that no longer listed it. The
    earlier results.json's scenarios count too; a freq_mine.png of the user's stays."""
    from gridswarm_env.scenarios import get_scenario

    out = tmp_path / "o"
    ramp = get_scenario("price_spike", name="ramp_40", load_step_mw=40.0, episode_steps=40)
    _small(out, scenarios=["emergency", ramp])
    assert (out / "freq_ramp_40.png").is_file()
    (out / "freq_mine.png").write_text("mine")
    _small(out, scenarios="emergency")
    assert sorted(p.name for p in out.glob("freq_*.png")) == ["freq_emergency.png",
                                                              "freq_mine.png"]


@pytest.mark.parametrize("earlier", [
    None, b"{not json", b"\xff\xfe", b"[1, 2]", b'{"summary": {"config": {"scenarios": 3}}}',
    b'{"summary": null}', b"[" * 100_000 + b"]" * 100_000,
    b'{"summary": {"config": {"scenarios": ["ramp_40", "x/../../escape", 7, "a/b"]}}}',
], ids=["missing", "not-json", "not-utf8", "a-list", "names-not-a-list", "no-config",
        "too-deep", "odd-names"])
def test_an_earlier_results_json_that_cannot_be_read_removes_nothing_more(tmp_path,
                                                                          earlier):
    """A missing, corrupt or odd earlier results.json is ignored (no crash); a listed
    name unfit for a file name removes nothing; only freq_<listed name>.png goes."""
    outside = tmp_path / "escape.png"   # out / "freq_x/../../escape.png"
    out = tmp_path / "o"
    (out / "freq_x").mkdir(parents=True)
    for path in (outside, out / "freq_ramp_40.png", out / "freq_mine.png"):
        path.write_text("x")
    if earlier is not None:
        (out / "results.json").write_bytes(earlier)
    names = evaluate.earlier_scenarios(out)
    removed = evaluate.remove_stale_outputs(out, ["emergency"], set(), earlier=names)
    listed = earlier is not None and b"ramp_40" in earlier
    assert [p.name for p in removed] == (["freq_ramp_40.png"] if listed else [])
    assert outside.is_file() and (out / "freq_mine.png").is_file()


def test_a_scenario_given_alone_and_all_with_a_custom_one(tmp_path):
    from gridswarm_env.scenarios import get_scenario, scenario_names

    trip = get_scenario("emergency", name="trip_90", contingency_mw=90.0)
    assert list(evaluate.resolve_scenarios(trip)) == ["trip_90"]
    assert list(evaluate.resolve_scenarios(["all", trip])) == [*scenario_names(), "trip_90"]
    assert list(evaluate.resolve_scenarios("emergency, price_spike")) == ["emergency",
                                                                          "price_spike"]


def test_scenarios_and_policies_may_come_from_any_ordered_iterable():
    """Undone item of the last pass: ``evaluate(scenarios=<generator>)`` was refused
    (lists and tuples only); a generator or a tuple now gives the names in its order."""
    names = ("solar_surplus", "emergency")
    assert list(evaluate.resolve_scenarios(n for n in names)) == list(names)
    assert list(evaluate.resolve_scenarios(names)) == list(names)
    assert evaluate.resolve_policies(p for p in ("random", "heuristic"))[0] == [
        "random", "heuristic"]


@pytest.mark.parametrize("scenarios, says", [
    ([3], "scenarios (--scenarios): item 3 of type int; expected 'all', scenario names"),
    (["emergency", None], "scenarios (--scenarios): item None of type NoneType; expected"),
    (3, "scenarios (--scenarios) = 3: expected 'all', scenario names or files (FILE.toml; "
        "a comma-separated string or a list) or Scenario objects"),
    ({"emergency"}, "scenarios (--scenarios) = {'emergency'}: expected"),
    ({"emergency": 1}, "scenarios (--scenarios) = {'emergency': 1}: expected"),
    (b"emergency", "scenarios (--scenarios) = b'emergency': expected"),
    (["nowhere"], "scenarios (--scenarios): unknown scenario 'nowhere'; known scenarios: "),
    ([], "scenarios (--scenarios) is empty"),
])
def test_bad_scenarios_are_refused_naming_the_keyword(tmp_path, scenarios, says):
    assert _refused(tmp_path / "o", scenarios=scenarios).startswith(says)


def test_two_scenarios_of_one_name_are_refused(tmp_path):
    from gridswarm_env.scenarios import get_scenario

    trip_80 = get_scenario("emergency", contingency_mw=80.0)
    text = _refused(tmp_path / "o", scenarios=["emergency", trip_80])
    assert text == ("scenarios (--scenarios): two different scenarios named 'emergency' "
                    "(results, plots and tags are keyed by the name); name the custom one "
                    "apart: name = \"emergency_2\" in its file, or get_scenario(scenario, "
                    "name='emergency_2')")
    text = _refused(tmp_path / "o", scenarios=[get_scenario(trip_80, name="a/b")])
    assert text.startswith("scenarios (--scenarios): scenario name 'a/b' names output files")


def test_a_scenario_the_configuration_cannot_play_is_refused_before_any_output(tmp_path):
    """The environment's own refusal (here: no reserve round before the trip at
    dt_s = 6 s) comes before the first episode, as a UsageError."""
    from gridswarm_env.config import EnvConfig

    text = _refused(tmp_path / "o", n_agents=None, trust=None,
                    env_config=EnvConfig(n_agents=5, trust="hmac", dt_s=6.0))
    assert text.startswith("EnvConfig.dt_s = 6.0 leaves scenario 'emergency' no reserve round")


def test_a_custom_scenario_the_randomize_preset_would_break_is_refused(tmp_path):
    from gridswarm_env.scenarios import get_scenario

    early = get_scenario("emergency", name="early_trip", event_time_s=3.0)
    text = _refused(tmp_path / "o", scenarios=[early], randomize=True)
    assert text.startswith("scenarios (--scenarios) with randomize (--randomize): "
                           "Scenario('early_trip')"
                           ".timing_jitter_s = 5.0: would move the trip")


# --------------------------------------------------------------------------- argument names
@pytest.mark.parametrize("kwargs, says", [
    ({"n_agents": 2.0}, "n_agents (--agents) = 2.0: must be an integer >= 1"),
    ({"episodes": 0}, "episodes (--episodes) = 0: must be an integer >= 1"),
    ({"seed": -1}, "seed (--seed) = -1: must be an integer >= 0"),
    ({"trust": "rsa"}, "trust (--trust) = 'rsa': allowed values are ed25519, hmac"),
    ({"n_agents": 2_000_000}, "n_agents (--agents) = 2000000: at most 1,000,000 agents"),
    ({"policies": ["bogus"]}, "policies (--policies): unknown policy 'bogus'; known"),
    ({"policies": [3]}, "policies (--policies): item 3 of type int; expected policy names or "
                        "model paths (str); a policy of your own: policies.register(name, "
                        "factory), then its name"),
    ({"policies": []}, "policies (--policies) is empty"),
    ({"crypto_threads": 0}, "crypto_threads (--crypto-threads) = 0: expected an integer from "
                            "1 to"),
    ({"contract_keys": "x"}, "contract_keys (--contract-keys) = 'x': expected one of seeded, "
                             "random"),
])
def test_a_library_call_names_the_keyword_and_its_flag(tmp_path, kwargs, says):
    """Library review: ``evaluate(n_agents=2.0)`` said ``--agents 2.0: must be an
    integer >= 1``, a flag the caller never typed."""
    assert _refused(tmp_path / "o", **kwargs).startswith(says)


def test_the_command_line_keeps_naming_the_flags_alone(tmp_path, capsys):
    """The command line's messages are unchanged (README and tests quote them), and a
    library call after main() names the keyword again."""
    out = tmp_path / "o"
    assert evaluate.main(["--agents", "0", "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        "evaluate.py: error: --agents 0: expected an integer from 1 to 1,000,000 (~10 kB of "
        "state each; 10 000 is the benchmarked scale) (see evaluate.py --help)\n")
    assert evaluate.main(["--policies", "random", "--scenarios", "emergency", "--episodes",
                          "1", "--agents", "3", "--crypto-threads", "0", "--out", str(out),
                          "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("evaluate.py: error: --crypto-threads 0: "
                                              "expected an integer from 1 to")
    assert _refused(out, n_agents=0).startswith("n_agents (--agents) = 0:")


# --------------------------------------------------------------------------- env_config
def test_env_config_applies_to_every_environment_and_is_recorded(tmp_path):
    from gridswarm_env.config import EnvConfig, FleetConfig

    fleet = FleetConfig(share_solar=0.5, share_battery=0.3, share_ev=0.2)
    cfg = EnvConfig(n_agents=10, trust="hmac", dt_s=0.5, fleet=fleet)
    # solar_004 exists in this fleet of 10 (5 solar), not in the default one (3 solar)
    limits = {"agents": {"solar_004": {"ramp_mw_per_s": 10.0}}}
    result = _small(tmp_path / "o", n_agents=None, trust=None, env_config=cfg,
                    limits=limits, counterfactual=True)
    config = result["summary"]["config"]
    assert config["n_agents"] == 10 and config["trust"] == "hmac"
    assert config["env_config"]["dt_s"] == 0.5
    assert config["env_config"]["fleet"]["share_solar"] == 0.5
    assert config["env_config"]["n_agents"] == 10 and config["env_config"]["shadow"] is False
    md = (tmp_path / "o" / "results.md").read_text()
    assert ("- environment: custom EnvConfig, changed from the defaults (in parentheses): "
            "dt_s = 0.5 (1.0), fleet.share_solar = 0.5 (0.3)") in md
    # the same value given twice is fine; a default run records the defaults
    _small(tmp_path / "p", n_agents=10, trust="hmac", env_config=cfg)
    plain = _small(tmp_path / "q")
    assert plain["summary"]["config"]["env_config"]["dt_s"] == 1.0


@pytest.mark.parametrize("kwargs, says", [
    ({"env_config": {"n_agents": 5}}, "env_config: a dict; expected a "
                                      "gridswarm_env.config.EnvConfig, or None for the defaults"),
    ({"n_agents": 10}, "n_agents (--agents) = 10 disagrees with env_config.n_agents = 5 "
                       "(changed from the default 100): leave it out (None: env_config's) "
                       "or give the same value"),
    ({"trust": "ed25519"}, "trust (--trust) = 'ed25519' disagrees with env_config.trust = "
                           "'hmac' (changed from the default 'ed25519')"),
    ({"contract_keys": "random", "keys": "seeded"},
     "contract_keys (--contract-keys) = 'random' disagrees with env_config.contract_keys = "
     "'seeded' (changed from the default 'random')"),
    ({"shadow": True}, "env_config.shadow = True: evaluate() plays every policy live"),
    ({"audit_path": "audit.jsonl"}, "env_config.audit_path = 'audit.jsonl': evaluate() keeps "
                                    "no audit file"),
])
def test_env_config_conflicts_are_refused(tmp_path, kwargs, says):
    from gridswarm_env.config import EnvConfig

    fields = {k: kwargs.pop(k) for k in ("shadow", "audit_path") if k in kwargs}
    if "keys" in kwargs:
        fields["contract_keys"] = kwargs.pop("keys")
    args = {"n_agents": None, "trust": None,
            "env_config": EnvConfig(n_agents=5, trust="hmac", **fields), **kwargs}
    assert _refused(tmp_path / "o", **args).startswith(says)


def test_an_argument_overrides_an_env_config_field_left_at_its_default(tmp_path):
    """Review: ``evaluate(trust="hmac", env_config=EnvConfig(fleet=...))`` was refused
    (``trust = 'hmac' disagrees with env_config.trust = 'ed25519'``), as was
    ``crypto_threads=1`` against the default None, which changes no result. An argument
    now overrides a field still at ``EnvConfig()``'s default, and the configuration
    played is the one recorded."""
    from gridswarm_env.config import EnvConfig, FleetConfig

    cfg = EnvConfig(fleet=FleetConfig(ev_power_mw=40.0))   # n_agents, trust: defaults
    result = _small(tmp_path / "o", env_config=cfg, crypto_threads=1,
                    contract_keys="random")
    config = result["summary"]["config"]
    assert config["n_agents"] == 5 and config["trust"] == "hmac"
    assert config["contract_keys"] == "random"
    recorded = config["env_config"]
    assert recorded["n_agents"] == 5 and recorded["trust"] == "hmac"
    assert recorded["crypto_threads"] == 1 and recorded["contract_keys"] == "random"
    assert recorded["fleet"]["ev_power_mw"] == 40.0


def test_crypto_threads_given_always_wins(tmp_path):
    """``crypto_threads`` does not change the results: given, it overrides even a value
    env_config set (1 is allowed on every machine)."""
    from gridswarm_env.config import EnvConfig

    cfg = EnvConfig(n_agents=5, trust="hmac", crypto_threads=2)
    result = _small(tmp_path / "o", n_agents=None, trust=None, env_config=cfg,
                    crypto_threads=1)
    assert result["summary"]["config"]["env_config"]["crypto_threads"] == 1


# --------------------------------------------------------------------------- failures
def test_a_policy_that_raises_ends_in_a_readable_evaluation_failed(tmp_path, own_registry):
    class Broken:
        name = "broken"

        def reset(self, env, seed=None):
            pass

        def act(self, obs, mask):
            raise ValueError("policy bug")

    own_registry.register("broken", Broken)
    with pytest.raises(evaluate.EvaluationFailed) as info:
        _small(tmp_path / "o", policies=["broken"])
    text = str(info.value)
    assert text.startswith("failed during broken / emergency / seed 0 (ValueError: policy "
                           "bug) after 0 of 1 episodes; the traceback is saved in '")
    Path(text.split("saved in '")[1].rstrip("'")).unlink()


# --------------------------------------------------------------------------- README
def _library_use_snippets() -> list[str]:
    """The python blocks of README's "## Library use" section, in order."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Library use\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3, "README's Library use section changed: update this test"
    return blocks


def test_readme_library_use_snippets_run(tmp_path, monkeypatch, own_registry):
    """Every snippet of README's "Library use", run as written (one namespace, in a
    temporary directory), and what its text claims."""
    import numpy as np

    import gridswarm_env

    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for block in _library_use_snippets():
        exec(compile(block, "README.md (Library use)", "exec"), ns)
    # block 1: the array API, shapes and dtypes as commented
    raw = ns["raw"]
    assert ns["obs_arr"].shape == (10, gridswarm_env.OBS_DIM) == (10, 28)
    assert ns["obs_arr"].dtype == np.float32 and ns["rewards"].dtype == np.float64
    assert ns["rewards"].shape == (10,) and ns["truncated"] is True
    assert "freq_hz" in ns["info"] and ns["kpis"]["system_cost"] > 0
    assert ns["lo_mw"] <= ns["hi_mw"]
    # block 2: a registered policy of one's own
    assert "full_offer" in own_registry.policy_names()
    assert len(ns["freq_hz"]) == raw.scenario.episode_steps and ns["nadir_hz"] > 59.0
    # block 3: custom scenarios and an EnvConfig through evaluate
    config = ns["results"]["summary"]["config"]
    assert config["scenarios"] == ["trip_80", "trip_90", "ramp"]
    assert config["policies"] == ["heuristic", "full_offer"]
    assert sorted(config["custom_scenarios"]) == ["ramp", "trip_80", "trip_90"]
    assert config["n_agents"] == 10 and config["trust"] == "hmac"
    # walkthrough review: the snippet read a summary dict where it meant the mean cost
    summary = ns["results"]["summary"]["scenarios"]["trip_80"]["full_offer"]["kpis"]
    assert summary["system_cost"]["n"] == 2
    assert isinstance(ns["cost"], float) and ns["cost"] == summary["system_cost"]["mean"]
    assert (tmp_path / "eval_custom" / "results.json").is_file()


def test_readme_array_api_claims():
    """README "Library use": the constructor's seed is reset(seed)'s, observations_array()
    is the dict observations as rows and action_masks() the values of the info masks
    (tests/test_env_api.py checks that step_arrays' rewards and observations are
    step()'s)."""
    import numpy as np

    import gridswarm_env

    seeded = gridswarm_env.parallel_env(scenario="emergency", n_agents=10, trust="hmac", seed=4)
    later = gridswarm_env.parallel_env(scenario="emergency", n_agents=10, trust="hmac")
    obs, infos = seeded.reset()
    obs_later, _ = later.reset(seed=4)
    rows = np.stack([obs[a] for a in seeded.possible_agents])
    np.testing.assert_array_equal(rows, np.stack(list(obs_later.values())))
    raw = seeded.unwrapped
    np.testing.assert_array_equal(rows, raw.observations_array())
    masks = np.stack([infos[a]["action_mask"] for a in seeded.possible_agents])
    assert masks.dtype == np.int8 and raw.action_masks().dtype == bool
    np.testing.assert_array_equal(masks, raw.action_masks())
    assert all(isinstance(infos[a]["feasible_mw"], tuple) for a in seeded.possible_agents)


@pytest.mark.parametrize(("kwargs", "says"), [
    # fuzzing: any value was taken for the flags (progress="abc" showed a bar), notes=1.5
    # and out_dir=0 were TypeErrors naming nothing, notes="ab" became two notes
    ({"progress": "abc"}, "progress = 'abc': expected True or False"),
    ({"counterfactual": float("nan")}, "counterfactual = nan: expected True or False"),
    ({"notes": 1.5}, "notes = 1.5: expected a list of strings or None"),
    ({"notes": "ab"}, "notes = 'ab': expected a list of strings or None"),
    ({"out_dir": 0}, "out_dir (--out) = 0: expected a directory path"),
])
def test_flags_notes_and_out_dir_of_the_wrong_type_are_refused(tmp_path, kwargs, says):
    out = tmp_path / "out"
    if "out_dir" in kwargs:
        with pytest.raises(evaluate.UsageError, match=re.escape(says)):
            _small(out, **kwargs)
    else:
        assert _refused(out, **kwargs) == says
