"""PettingZoo-to-SB3 adapter: every DER agent is one slot of a ``VecEnv``, one shared policy.

Description
-----------
:class:`GridSwarmVecEnv` subclasses :class:`stable_baselines3.common.vec_env.VecEnv`.
It holds ``n_envs`` copies of the gridswarm environment, each with ``n_agents``
agents, and exposes them as ``num_envs = n_envs x n_agents`` slots::

    slot s  <->  copy e = s // n_agents, agent i = s % n_agents

so one SB3 policy acts for every agent (parameter sharing). The environment is
driven through its array fast path (``raw.step_arrays``, ``raw.observations_array``,
``raw.action_masks``): no per-agent dicts are built in the hot loop and no
SuperSuit is needed.

Action masks
------------
``action_masks()`` returns ``(num_envs, n_power_levels + n_price_levels)`` bool, the
concatenated per-dimension masks of the ``MultiDiscrete`` action (what
``raw.action_masks()`` returns). sb3-contrib's ``MaskablePPO`` finds them through
``has_attr("action_masks")`` and ``env_method("action_masks")`` (a list of one row
per slot, which it stacks). They always belong to the observations last returned: after
a step that ended a copy's episode, to the new episode's first observation (the
terminal observation needs none: SB3 only evaluates its value).

Episodes, seeding and scenarios
-------------------------------
All agents of a copy share its episode: when it is truncated, every slot of that
copy is ``done`` with ``infos[s]["TimeLimit.truncated"] = True`` and
``infos[s]["terminal_observation"]`` (the agent's last observation), and the copy
is reset at once (auto-reset, SB3 semantics). At episode end ``infos[s]["episode"]``
holds the agent's return ``r`` and length ``l`` (like SB3's ``Monitor``), and the
first slot of the copy carries ``infos[s]["episode_metrics"]``: the KPI dict of
``raw.episode_metrics()`` (see :mod:`gridswarm_env.metrics`).

Seeding follows SB3 2.x: :meth:`seed` stores ``self._seeds`` (``seed + slot``, the list
SB3's ``VecEnv.seed`` returns) and the next :meth:`reset` reseeds every copy from the
seed given (slot 0's), then forgets the seeds. Each copy owns a
``numpy.random.Generator``; every episode it starts (explicit reset or auto-reset)
draws the environment seed from it, so a seed fixes the whole stream of episodes.
Copy ``e`` of seed ``s`` draws from :func:`copy_seed_sequence` ``(s, e)``: copy 0 from
``SeedSequence(s)`` (``default_rng(s)``), copy ``e >= 1`` from its spawned child
``SeedSequence(s, spawn_key=(e,))``, so no copy of one seed replays a copy of another
(with ``seed + slot`` per copy, copy 1 of seed 0 replayed copy 0 of seed ``n_agents``),
and one copy (``--envs 1``) plays the episodes it always did. The constructor's ``seed``
follows the same rule. An episode's seed is :func:`training_episode_seed`: drawn from
``[0, 2**31 - 1)`` and drawn again while it is one of the evaluation seeds
(:data:`policies.rollout.EVAL_SEEDS`, 0-99 999), so training never plays an episode
that evaluation plays (for seed 0 the first 6 634 draws of copy 0 lie above them, so its
episodes are the ones it played before the rule). ``scenario="all"`` (or a sequence of
names) mixes scenarios across episodes along one seeded permutation of the scenarios (drawn from
copy 0's generator), copy ``e`` starting at its position ``e``, so copies start on
different scenarios (while there are no more copies than scenarios). When a copy's
episode ends it moves on to the first scenario, in the cycle's order from its position,
that the fewest other copies are playing (one copy: the cycle's next), so with at least
as many copies as scenarios every step of every rollout plays all of them (``--envs 3``:
one copy each, a third of the agent-steps each), and with fewer the copies play
different ones (one environment object per scenario and copy is kept and reused; a name
listed twice weights the mix with one copy, not with several, where copies avoid a
scenario another copy plays). With
one copy (the default ``n_envs=1``) an episode (120-300 steps) spans several rollouts
of ``n_steps`` (64 by default), so most updates see one scenario only: ``--envs 3``
with ``--scenario all`` gives every rollout all three.

Rewards
-------
``reward="env"`` (default) passes the environment's per-agent reward through (see
:class:`gridswarm_env.config.RewardConfig`). ``reward="marginal"`` adds each agent's
averted value of lost load, :func:`marginal_reward_term` (a difference reward: the VOLL
part of ``system_cost`` without the agent's MW minus the same with them; under
pay-as-clear the market pays a short round only the marginal bid's price, so the
environment's reward barely tells an agent that its missing offer left load
unserved). Then
``r ← clip(reward_scale · r, −reward_clip, reward_clip)`` (defaults: 1 and no clip;
training uses 0.01 and 10, see :class:`~train.config.TrainConfig`).
``infos[s]["episode"]["r"]`` is the return of the rewards as given to the learner.

Reward scale: the environment's rewards are in $ x 100 per agent-step, and a
scenario's fleet MW are shared among the agents, so the market terms scale as
``1/n_agents``; the shared grid term does not (``scale · grid_weight · mean|Δf|/band_hz``:
0.04 per agent-step at 0.01 Hz, 0.2 at 0.05 Hz with the defaults), so with thousands of
agents it outweighs each agent's own terms (``price_spike``, heuristic, seed 0: 5.4 % of
the agents' own mean |r| at 100 agents, 54 % at 1 000; see
:class:`~gridswarm_env.config.RewardConfig`). At
100 agents, heuristic and random play (seeds 0-1, the three scenarios) gave per-step
standard deviations of 0.2-6.4 and ``|r| <= 46``; at 20 agents about 5x that (``|r| <=
215``), and at 1-3 agents up to ~1 000 under random play in ``price_spike`` (1 070 and
951 at 1 agent, 992 and 952 at 3, seeds 0 and 1; heuristic play <= 222 in every
scenario): scaled by 0.01 that is up to 10.7, so at 1-3 agents the default clip of 10
binds now and then under poor play even on the environment's reward (1 of the 300
agent-steps of random ``price_spike`` at 1 agent, seed 0, 0.33 %; none at 2-3 agents or
20, nor under the heuristic). An EV leaving short of its departure energy costs 300 $/MWh
of the shortfall (x 100) at once, ~10⁵ for a 100-agent EV agent leaving at its initial
SoC (the fleet's median shortfall, seed 0; up to ~3·10⁵); with the default :class:`~gridswarm_env.config.FleetConfig` no EV leaves
within the shipped scenarios (their departures are hours away), so there the default
clip binds on the environment's reward only in those rare 1-agent steps: it guards
configurations whose EVs do leave. It binds more often on ``reward="marginal"``, whose
value-of-lost-load term is paid for every MW a step needs and scales with the fleet's
MW, not ``n_agents`` (``price_spike``, seed 0, scale 0.01, heuristic play: max |r| 10.6
at 100 agents, 0.39 % of agent-steps above 10; 43 at 20 agents, 19 %;
``docs/training.md``): scale ``reward_scale`` with ``n_agents``, lower
``marginal_weight`` or raise the clip when training few agents with the marginal reward.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from gridswarm_env.config import (
    EnvConfig,
    check_bool,
    check_choice,
    check_int_at_least,
    check_non_negative,
    check_positive,
    override,
)
from gridswarm_env.env import GridSwarmEnv
from gridswarm_env.scenarios import SCENARIOS, Scenario, randomized
from policies.rollout import EVAL_SEEDS
from train.config import REWARD_MODES, resolve_scenarios

ACTION_MASKS = "action_masks"


def copy_seed_sequence(seed: int | None, copy: int) -> np.random.SeedSequence:
    """The seed sequence of copy ``copy``'s episode-seed generator for the seed ``seed``.

    Copy 0: ``SeedSequence(seed)``, the sequence ``default_rng(seed)`` uses. Copy
    ``e >= 1``: ``SeedSequence(seed, spawn_key=(e,))``, the child ``e`` of
    ``SeedSequence(seed).spawn`` (numpy's way to derive independent streams): distinct
    from every copy of every other seed, unlike SB3's ``seed + slot`` (seed 0's copy 1 was
    seed ``n_agents``'s copy 0). ``seed=None``: fresh entropy for every copy.

    :param seed: the adapter's seed (>= 0), or None.
    :param copy: the copy's index (>= 0).
    """
    if seed is None:
        return np.random.SeedSequence()
    return np.random.SeedSequence(int(seed), spawn_key=(copy,) if copy else ())


def training_episode_seed(rng: np.random.Generator) -> int:
    """The environment seed of a training episode, drawn from ``rng``.

    Rule: ``seed = rng.integers(2**31 - 1)``, drawn again while ``seed`` is in
    :data:`policies.rollout.EVAL_SEEDS`; the evaluation seeds are thus held out of
    training by construction. The redraw is deterministic (the next draws of the same
    generator), and a draw outside the range is returned as drawn: a stream that never
    meets the range is the stream drawn before this rule (seed 0's copy 0 first meets it
    at its 6 635th draw).
    """
    while True:
        seed = int(rng.integers(2**31 - 1))
        if seed not in EVAL_SEEDS:
            return seed


def marginal_reward_term(raw: GridSwarmEnv, info: dict[str, Any], weight: float) -> np.ndarray:
    """Per-agent shaping term of ``reward="marginal"``: the value of lost load each agent
    averted, a *difference reward* (Wolpert & Tumer, "Optimal payoff functions for
    members of collectives", Adv. Complex Syst. 4, 2001).

    ``r_marg,i = weight · scale · VOLL · h · (max(u + σ·p_i, 0) − max(u, 0))``

    with ``u = σ·(R̄ − D̄)`` the step's shortfall (MW; negative: a surplus), ``R̄`` the
    step's mean balancing requirement (``info["requirement_mw"]``), ``σ = sign(R̄)``
    (sign(0) = +1, as ``unserved_energy_mwh``), ``D̄`` the balancing power the fleet
    delivered (``info["delivered_mw"]``), ``p_i`` agent i's executed balancing power
    (``raw.last_p_mw``), ``h = dt_s/3600`` and ``scale``/``VOLL`` from the env config.
    ``VOLL·h·max(u, 0)`` is the step's VOLL part of ``system_cost``
    (:mod:`gridswarm_env.metrics`), and ``max(u + σ·p_i, 0)`` is what it would be
    without agent i's delivery, so the term is exactly the VOLL cost agent i's own MW
    averted, credited to the agent that earned it (a shared penalty would reach every
    agent alike, whatever it bid):

    * a short step (``u ≥ 0``): ``VOLL·h·σ·p_i`` — all of an agent's MW in the
      requirement's direction count, and an agent pushing the other way (``σ·p_i < 0``)
      pays for the shortfall it added (up to ``u``);
    * a covered step with a surplus ``s = −u > 0``: ``VOLL·h·max(σ·p_i − s, 0)`` — only
      the part of an agent's MW the surplus could not replace.

    It is continuous at exact coverage, so leaving load unserved never pays more than
    covering it (the first version paid the term only in short steps and so paid most
    for a small shortfall: README, *Recent changes*; ``docs/training.md``, *The reward*).

    :param raw: the (unwrapped) environment after the step.
    :param info: ``raw.last_info`` of the step.
    :param weight: multiplier of the term (>= 0).
    :returns: ``(n_agents,)`` reward terms (negative for an agent that deepened a
        shortfall).
    """
    req, got = float(info["requirement_mw"]), float(info["delivered_mw"])
    sign = 1.0 if req >= 0 else -1.0
    short_mw = sign * (req - got)
    cfg = raw.config
    per_mw = weight * cfg.reward.scale * cfg.costs.voll_per_mwh * cfg.dt_s / 3600.0
    without_i_mw = np.maximum(short_mw + sign * np.asarray(raw.last_p_mw, dtype=float), 0.0)
    return per_mw * (without_i_mw - max(short_mw, 0.0))


def scenario_table(scenario: str | Scenario | Sequence[str | Scenario]) -> dict[str, Scenario]:
    """``{name: Scenario}`` of a scenario argument of :class:`GridSwarmVecEnv`: a name,
    ``"all"``, a :class:`~gridswarm_env.scenarios.Scenario` or a sequence of names and
    scenarios (names as :func:`~train.config.resolve_scenarios` takes them).

    :raises ValueError: an unknown name, an empty sequence, or two different scenarios
        of one name (the metrics and the evaluation are keyed by it).
    """
    items = [scenario] if isinstance(scenario, str | Scenario) else list(scenario)
    table: dict[str, Scenario] = {}
    for item in items:
        found = ({item.name: item} if isinstance(item, Scenario)
                 else {name: SCENARIOS[name] for name in resolve_scenarios(item)})
        for name, sc in found.items():
            if table.get(name, sc) != sc:
                raise ValueError(f"scenario: two different scenarios named {name!r}; "
                                 "name them apart (the metrics are keyed by the name)")
            table[name] = sc
    if not table:
        resolve_scenarios(())   # its message for an empty sequence
    return table


class GridSwarmVecEnv(VecEnv):
    """``n_envs`` gridswarm copies x ``n_agents`` agents as one SB3 ``VecEnv``.

    :param scenario: a scenario name, ``"all"``, a
        :class:`~gridswarm_env.scenarios.Scenario` (e.g. a scenario file's,
        :meth:`train.config.TrainConfig.scenarios`) or a sequence of names and
        scenarios (mixed across episodes in a seeded cycle), each known by its name.
    :param randomize: play every scenario randomized per episode
        (:func:`gridswarm_env.scenarios.randomized`, ``--randomize``): each episode's
        load step and trip are drawn from its seed.
    :param n_agents: agents per copy.
    :param n_envs: environment copies stacked (``num_envs = n_envs * n_agents``).
    :param trust: ``"hmac"`` (default here: fast) or ``"ed25519"``.
    :param config: base :class:`EnvConfig` (``n_agents`` and ``trust`` override it;
        default: ``EnvConfig(audit_keep_entries=False)``, each environment keeping only
        its audit chain's head, which nothing in training reads).
    :param seed: seed of the copies' episode-seed generators (None: fresh entropy);
        SB3's :meth:`seed` + :meth:`reset` reseed them.
    :param reward: ``"env"`` or ``"marginal"`` (see the module docstring).
    :param marginal_weight: weight of the term of ``reward="marginal"``.
    :param reward_scale: multiplier of every reward (> 0).
    :param reward_clip: clip scaled rewards to ``[-reward_clip, reward_clip]`` (None: no clip).
    :param limits: kernel limits passed to every environment (dict, TOML path, None).
    :param render_mode: None, ``"ansi"`` (:meth:`render` returns one text frame per copy)
        or ``"human"`` (every environment prints its frame after each step, and
        :meth:`render` prints each copy's frame).
    :raises ValueError: for a bad argument (the message names it).
    """

    def __init__(self, scenario: str | Scenario | Sequence[str | Scenario] = "price_spike",
                 n_agents: int = 100,
                 n_envs: int = 1, trust: str = "hmac", config: EnvConfig | None = None,
                 seed: int | None = None, reward: str = "env", marginal_weight: float = 1.0,
                 reward_scale: float = 1.0, reward_clip: float | None = None,
                 limits: Any = None, render_mode: str | None = None,
                 randomize: bool = False) -> None:
        owner = type(self).__name__
        #: the scenarios played, by name (a registered name's registered scenario)
        self.scenario_table = scenario_table(scenario)
        self.scenarios = tuple(self.scenario_table)
        self.randomize = check_bool(f"{owner}.randomize", randomize)
        self.n_agents = check_int_at_least(owner, "n_agents", n_agents, 1)
        self.n_envs = check_int_at_least(owner, "n_envs", n_envs, 1)
        if seed is not None:
            seed = check_int_at_least(owner, "seed", seed, 0)
        self.reward_mode = check_choice(owner, "reward", reward, REWARD_MODES)
        self.marginal_weight = check_non_negative(owner, "marginal_weight", marginal_weight)
        self.reward_scale = check_positive(owner, "reward_scale", reward_scale)
        self.reward_clip = (None if reward_clip is None
                            else check_positive(owner, "reward_clip", reward_clip))
        # nothing in training reads the audit entries: by default keep only the chain's
        # head (the entries grew ~0.9 MB per 300-step episode and environment, up to the
        # audit window, ~180 MB per environment; trajectories are the same)
        self.config = override(config or EnvConfig(audit_keep_entries=False),
                               n_agents=self.n_agents, trust=trust)
        self.limits = limits
        self._render_mode = (None if render_mode is None else check_choice(
            owner, "render_mode", render_mode, tuple(GridSwarmEnv.metadata["render_modes"])))
        # one environment per (copy, scenario), built on first use (copy 0: all at once,
        # below); copy e plays _active[e]
        self._envs: list[dict[str, GridSwarmEnv]] = [{} for _ in range(self.n_envs)]
        # set_attr values per copy, also given to the copy's environments built later
        self._attrs: list[dict[str, Any]] = [{} for _ in range(self.n_envs)]
        self._rngs = [np.random.default_rng(copy_seed_sequence(seed, e))
                      for e in range(self.n_envs)]
        # the scenario cycle every copy follows; copy e starts at position e
        self._cycle = self._new_cycle()
        self._episode_count = np.arange(self.n_envs, dtype=np.int64)
        self._playing = [self._cycle[e % len(self._cycle)] for e in range(self.n_envs)]
        self._active = [self._env(e, name) for e, name in enumerate(self._playing)]
        for name in self.scenarios:   # copy 0 builds every scenario's now: one that
            # refuses the config (a dt_s its reserve rounds cannot answer in) fails here,
            # before any work, not when the cycle first reaches it mid-training
            self._env(0, name)
        first = self._active[0]
        self.possible_agents = list(first.possible_agents)
        action_space = first.action_space(first.possible_agents[0])
        self._returns = np.zeros((self.n_envs, self.n_agents))
        self._lengths = np.zeros(self.n_envs, dtype=np.int64)
        self._t_start = time.time()
        self._actions = np.zeros((self.n_envs * self.n_agents, 2), dtype=np.int64)
        super().__init__(self.n_envs * self.n_agents,
                         first.observation_space(first.possible_agents[0]), action_space)

    # ------------------------------------------------------------------ helpers
    def _env(self, e: int, name: str) -> GridSwarmEnv:
        if name not in self._envs[e]:
            sc = self.scenario_table[name]
            raw = GridSwarmEnv(scenario=randomized(sc) if self.randomize else sc,
                               config=self.config, limits=self.limits,
                               render_mode=self._render_mode)
            for attr_name, value in self._attrs[e].items():
                setattr(raw, attr_name, value)
            self._envs[e][name] = raw
        return self._envs[e][name]

    def _new_cycle(self) -> list[str]:
        """A permutation of the scenarios, drawn from copy 0's generator."""
        order = self._rngs[0].permutation(len(self.scenarios))
        return [self.scenarios[int(i)] for i in order]

    def _start_episode(self, e: int, options: dict[str, Any] | None = None,
                       first: bool = False) -> np.ndarray:
        """Switch copy ``e`` to its next scenario and reset it.

        The next scenario is the first, in the cycle's order from the copy's position,
        that the fewest *other* copies are playing now (``first``: the scenario at the
        copy's position, as :meth:`reset` starts copy ``e`` at position ``e``). With one
        copy that is simply the next in the cycle; with several, copies that start on
        different scenarios keep to different ones, so every step of every rollout plays
        each scenario when there are at least as many copies as scenarios (the episodes'
        unequal lengths made copies that each followed the cycle drift onto the same
        scenario: with ``--envs 3``, 12 of 40 rollouts lacked one and ``emergency`` got
        17 % of the agent-steps).
        """
        cycle = self._cycle
        k = len(cycle)
        pos = int(self._episode_count[e])
        if not first and self.n_envs > 1 and k > 1:
            others = [name for j, name in enumerate(self._playing) if j != e]
            counts = [others.count(cycle[(pos + d) % k]) for d in range(k)]
            pos += counts.index(min(counts))
        name = cycle[pos % k]
        self._episode_count[e] = pos + 1
        self._playing[e] = name
        raw = self._env(e, name)
        self._active[e] = raw
        raw.reset(seed=training_episode_seed(self._rngs[e]), options=options or None)
        self._returns[e] = 0.0
        self._lengths[e] = 0
        return raw.observations_array()

    def slots(self, e: int) -> slice:
        """The slots of copy ``e``: ``slice(e·n_agents, (e+1)·n_agents)``."""
        return slice(e * self.n_agents, (e + 1) * self.n_agents)

    def _copies(self, indices: VecEnvIndices) -> list[int]:
        """Copies touched by slot ``indices``, in order, each once."""
        return list(dict.fromkeys(int(s) // self.n_agents for s in self._get_indices(indices)))

    @property
    def active_envs(self) -> list[GridSwarmEnv]:
        """The environment each copy is playing now (unwrapped ``GridSwarmEnv``)."""
        return list(self._active)

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> np.ndarray:
        """Reset every copy (using and then clearing ``self._seeds`` / ``self._options``):
        after :meth:`seed` ``(s)``, copy ``e`` draws its episodes from
        :func:`copy_seed_sequence` ``(s, e)``."""
        obs = np.empty((self.num_envs, *self.observation_space.shape), dtype=np.float32)
        seed = self._seeds[0]   # the seed given to seed() (slot s holds seed + s)
        if seed is not None:
            for e in range(self.n_envs):
                self._rngs[e] = np.random.default_rng(copy_seed_sequence(seed, e))
            self._cycle = self._new_cycle()
            self._episode_count = np.arange(self.n_envs, dtype=np.int64)   # copy e at e
        for e in range(self.n_envs):
            obs[self.slots(e)] = self._start_episode(e, self._options[e * self.n_agents],
                                                     first=seed is not None)
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Store ``(num_envs, 2)`` integer actions [power level, price level] per slot.

        Every action is checked here, before any copy steps (so a bad one leaves every
        copy where it was): integers, or integral floats, within the action space; NaN,
        fractions (``10.5``) and out-of-range levels raise ``ValueError`` naming the first
        bad slot, its copy and agent, and what is allowed.
        """
        a = np.asarray(actions)
        if a.shape != (self.num_envs, 2):
            raise ValueError(f"actions have shape {a.shape}: expected ({self.num_envs}, 2)")
        nvec = self.action_space.nvec
        if a.dtype.kind in "iu":
            bad = (a < 0) | (a >= nvec)
        elif a.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(a) | (a != np.floor(a)) | (a < 0) | (a >= nvec)
        else:
            raise ValueError(f"actions have dtype {a.dtype}: expected integers")
        if bad.any():
            slot = int(np.argmax(bad.any(axis=1)))
            e, i = divmod(slot, self.n_agents)
            agent = self._active[e].possible_agents[i]
            raise ValueError(f"action of slot {slot} (copy {e}, {agent}) = {a[slot].tolist()}: "
                             f"expected integer levels, power in 0..{nvec[0] - 1} and price "
                             f"in 0..{nvec[1] - 1}")
        self._actions = a.astype(np.int64, copy=False)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every copy; auto-reset finished copies (see the module docstring)."""
        n = self.n_agents
        obs = np.empty((self.num_envs, *self.observation_space.shape), dtype=np.float32)
        rewards = np.empty(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for e in range(self.n_envs):
            raw, sl = self._active[e], self.slots(e)
            act = self._actions[sl]
            o, r, truncated, info = raw.step_arrays(act[:, 0], act[:, 1])
            if self.reward_mode == "marginal":
                r = r + marginal_reward_term(raw, info, self.marginal_weight)
            r = r * self.reward_scale
            if self.reward_clip is not None:
                r = np.clip(r, -self.reward_clip, self.reward_clip)
            rewards[sl] = r
            self._returns[e] += r
            self._lengths[e] += 1
            if truncated:
                dones[sl] = True
                elapsed = round(time.time() - self._t_start, 6)
                length = int(self._lengths[e])
                for i in range(n):
                    infos[e * n + i] = {"TimeLimit.truncated": True, "terminal_observation": o[i],
                                        "episode": {"r": float(self._returns[e, i]), "l": length,
                                                    "t": elapsed}}
                infos[e * n]["episode_metrics"] = raw.episode_metrics()
                o = self._start_episode(e)
            obs[sl] = o
        return obs, rewards, dones, infos

    def action_masks(self) -> np.ndarray:
        """``(num_envs, n_power_levels + n_price_levels)`` bool masks, one row per slot."""
        return np.concatenate([raw.action_masks() for raw in self._active], axis=0)

    def _slot_mask(self, slot: int) -> np.ndarray:
        """Slot ``slot``'s ``(n_power_levels + n_price_levels,)`` mask row."""
        e, i = divmod(slot, self.n_agents)
        return self._active[e].action_masks()[i]

    def render(self, mode: str | None = None) -> str | None:
        """``"ansi"``: the copies' text frames, one line per copy (``copy e: …``); other
        modes as SB3's :meth:`VecEnv.render` (``"human"`` prints each copy's frame)."""
        if self.render_mode == "ansi" and mode in (None, "ansi"):
            return "\n".join(f"copy {e}: {raw.render()}" for e, raw in enumerate(self._active))
        return super().render(mode)

    def close(self) -> None:
        for envs in self._envs:
            for raw in envs.values():
                raw.close()

    def has_attr(self, attr_name: str) -> bool:
        """True if the adapter provides ``attr_name`` per slot (``action_masks`` does)."""
        return attr_name == ACTION_MASKS or hasattr(self._active[0], attr_name)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attribute of the environment behind each slot (copies repeat it per agent);
        ``action_masks``: per slot, a callable returning that slot's own mask row (as
        :meth:`env_method` does; it returned the adapter's method, whose call gave the
        masks of every slot)."""
        if attr_name == ACTION_MASKS:
            return [functools.partial(self._slot_mask, int(s)) for s in self._get_indices(indices)]
        return [getattr(self._active[int(s) // self.n_agents], attr_name)
                for s in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute on every environment behind ``indices``: all its scenarios,
        also those a mixed-scenario copy builds later."""
        for e in self._copies(indices):
            self._attrs[e][attr_name] = value
            for raw in self._envs[e].values():
                setattr(raw, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call a method per slot. ``action_masks`` returns each slot's own mask row; any
        other method runs once per copy and its result is repeated for the copy's slots."""
        idx = [int(s) for s in self._get_indices(indices)]
        if method_name == ACTION_MASKS:
            return list(self.action_masks()[idx])
        results = {e: getattr(self._active[e], method_name)(*method_args, **method_kwargs)
                   for e in self._copies(idx)}
        return [results[s // self.n_agents] for s in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """No gymnasium wrappers are used: False for every slot."""
        return [False] * len(list(self._get_indices(indices)))
