"""``learned``: a trained MaskablePPO model bidding for every agent in one batched call.

The model is a shared policy (one network for all agents, trained with
``python -m train``); :meth:`LearnedPolicy.act` runs one masked forward pass over
all agents. Greedy actions are computed directly from the policy network
(:func:`greedy_actions`: the same operations, in the same order, as
``model.predict(obs, action_masks=mask, deterministic=True)``, so the same actions bit
for bit, in ~0.7x the time at 100 agents); sampled ones through ``model.predict``.

Default model: the shipped ``policies/pretrained/gridswarm_ppo_dagger.zip``
(:data:`DEFAULT_MODEL`, the model that answers randomized trips; its JSON record
beside it says how it was produced). The PPO model it descends from,
``gridswarm_ppo.zip`` (:data:`PPO_MODEL`, ``learned`` before), stays shipped and
loads by its path. Loading checks that the file is a readable MaskablePPO model
whose observation space is ``Box((OBS_DIM,))`` and whose action space is
``MultiDiscrete([n_power_levels, n_price_levels])`` of the environment it acts in,
and, when the training record ``<model>.json`` beside it lists ``obs_fields``, that
they are today's :data:`~gridswarm_env.env.OBS_FIELDS`;
anything else raises ``ValueError`` saying what was wrong and what is expected.

Inference runs on one torch thread by default (``LearnedPolicy(torch_threads=1)``, as
training does): several threads only wait for each other on a batch this small, and
on busy cores one call took 10x longer. torch is imported only when a model is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from gridswarm_env.env import OBS_DIM, OBS_FIELDS

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
#: PPO from behaviour cloning on the fixed scenarios (what ``learned`` loaded before);
#: the base ``python -m train.dagger`` distils by default
PPO_MODEL = PRETRAINED_DIR / "gridswarm_ppo.zip"
#: the model ``learned`` loads: PPO fine-tuning of the distilled ``gridswarm_dagger.zip``
DEFAULT_MODEL = PRETRAINED_DIR / "gridswarm_ppo_dagger.zip"


#: the most torch intra-op threads a policy or a training run may ask for (torch itself
#: accepts 10**6 and then crashes the process)
MAX_TORCH_THREADS = 256
#: why :data:`MAX_TORCH_THREADS` (appended to the messages that state the bound)
TORCH_THREADS_WHY = " (torch accepts 10**6 threads, then crashes the process)"

#: the attribute ``python -m train`` sets on every model it saves (final, checkpoints,
#: best): the observation fields it was trained on, checked on loading
OBS_FIELDS_ATTR = "gridswarm_obs_fields"
#: the attribute ``python -m train`` (and ``train.dagger``) sets on every model it saves:
#: ``TrainConfig.env_settings()`` of the run that trained it (SB3 saves a model's extra
#: attributes: checkpoints and best models too), e.g. ``env_config_file``, its ``--config``
ENV_SETTINGS_ATTR = "gridswarm_env_settings"
#: what a model file must be (the end of every message refusing one)
MODEL_EXPECTED = ("expected a MaskablePPO .zip saved by `python -m train` (or "
                  "`python -m train.dagger`)")

def check_model_file(path: str | Path) -> Path:
    """The model file ``path`` names, as a ``Path`` (its content is checked by
    :func:`load_maskable_ppo`).

    A path that does not exist and does not end in ``.zip`` names its ``.zip`` sibling
    when that exists, as ``python -m train --out m2`` writes ``m2.zip`` and
    Stable-Baselines3's own ``load`` appends ``.zip``: ``m2`` loads ``m2.zip``.

    :raises ValueError: the path is empty, has a name longer than the file system allows
        (:func:`~policies.cli_checks.check_path_names`), does not exist (nor its ``.zip``
        sibling) or is a directory.
    """
    from policies.cli_checks import check_path_names

    expected = MODEL_EXPECTED
    if not str(path):
        raise ValueError(f"model file '': empty path ({expected})")
    # not "OSError: [Errno 36] File name too long" from is_dir() (a traceback in evaluate.py)
    check_path_names(path, "model file")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"model file {str(p)!r} is a directory, not a model file ({expected})")
    if not p.is_file():
        sibling = zip_sibling(p)
        if sibling is not None and sibling.is_file():
            return sibling
        nor = f" (nor {str(sibling)!r})" if sibling is not None else ""
        raise ValueError(f"model file {str(p)!r} does not exist{nor} ({expected})")
    return p


def zip_sibling(path: str | Path) -> Path | None:
    """``path`` with ``.zip`` appended, or None when it already ends in ``.zip``."""
    p = Path(path)
    return None if p.name.lower().endswith(".zip") else p.with_name(p.name + ".zip")


def load_maskable_ppo(path: str | Path, data: bytes | None = None) -> Any:
    """Load a MaskablePPO model from ``path`` on the CPU and check its spaces.

    :param data: the file's bytes, already read (:class:`LearnedPolicy` hashes them and
        loads exactly those, so the recorded hash is the model's even when the file is
        rewritten meanwhile); None: read ``path``.
    :raises ValueError: the file is missing (or a directory), corrupt, not a MaskablePPO
        model, its observation space is not ``Box((OBS_DIM,))`` / its action space
        not a two-dimensional ``MultiDiscrete``, or a weight is NaN or infinite.
    """
    p = check_model_file(path)
    import io
    import zipfile

    source: Path | io.BytesIO = p if data is None else io.BytesIO(data)
    if not zipfile.is_zipfile(source):
        beside = p.with_suffix(".zip")
        hint = (f"; {str(beside)!r} beside it is the model this record belongs to"
                if p.suffix.lower() == ".json" and beside.is_file() else "")
        raise ValueError(f"model file {str(p)!r} is corrupt or not a model: not a zip archive "
                         f"({MODEL_EXPECTED}){hint}")
    from sb3_contrib import MaskablePPO

    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        model = MaskablePPO.load(source, device="cpu")
    except Exception as exc:   # zip members, pickle or torch payload unreadable
        raise ValueError(f"model file {str(p)!r} is corrupt or not a MaskablePPO model "
                         f"({_load_failure(exc, source)}); {MODEL_EXPECTED}") from None
    _check_spaces(model, f"model file {str(p)!r}")
    _check_weights(model, f"model file {str(p)!r}")
    _check_obs_fields(getattr(model, OBS_FIELDS_ATTR, None), p, "it stores")
    _check_record(p, data)
    return model


def _load_failure(exc: Exception, source: Any) -> str:
    """Why ``MaskablePPO.load`` failed, in one line: a torch member of the zip that does
    not unpickle is named (torch's own message is a paragraph advising
    ``weights_only=False``, which would run the file's code); otherwise the exception's
    type and first line.
    """
    import io
    import pickle
    import zipfile

    if isinstance(exc, pickle.UnpicklingError):
        import torch

        if isinstance(source, io.BytesIO):
            source.seek(0)
        with zipfile.ZipFile(source) as archive:
            for name in archive.namelist():
                if not name.endswith(".pth"):
                    continue
                try:
                    torch.load(io.BytesIO(archive.read(name)), map_location="cpu",
                               weights_only=True)
                except Exception:
                    return f"its weights {name!r} are not a readable torch file"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def nonfinite_tensors(model: Any, optimizer: bool = False) -> list[tuple[str, int]]:
    """``(name, number of NaN or inf values)`` of each tensor of ``model.policy``'s state
    (weights, biases, log std) and, with ``optimizer``, of its optimizer's state (Adam's
    moments, which a resumed run would step with, named ``optimizer state <i>.<key>``)
    that is not finite; empty when all are (or ``model`` has no policy state).
    """
    import torch

    state = getattr(getattr(model, "policy", None), "state_dict", None)
    if not callable(state):
        return []
    tensors = list(state().items())
    opt = getattr(model.policy, "optimizer", None) if optimizer else None
    if opt is not None:
        tensors += [(f"optimizer state {index}.{key}", t)
                    for index, entry in opt.state_dict()["state"].items()
                    for key, t in entry.items() if torch.is_tensor(t)]
    return [(name, int((~torch.isfinite(t)).sum())) for name, t in tensors
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _check_weights(model: Any, source: str) -> None:
    """Every tensor of ``model.policy``'s state must be finite (:func:`nonfinite_tensors`):
    a diverged run's NaN weights load fine and only fail, as a torch traceback, at the
    first action, after other policies' episodes may have run.

    :raises ValueError: naming the first non-finite tensor.
    """
    bad = nonfinite_tensors(model)
    if bad:
        name, count = bad[0]
        raise ValueError(f"{source} has {count} non-finite value(s) in {name} (a diverged "
                         "training run?); expected a trained MaskablePPO model with "
                         "finite weights")


def _check_spaces(model: Any, source: str) -> None:
    """``model``'s observation space must be ``Box((OBS_DIM,))`` and its action space a
    two-dimensional ``MultiDiscrete``.

    :param source: how the message names the model (e.g. ``model file 'x.zip'``).
    :raises ValueError: naming the space that does not fit and what is expected.
    """
    obs_space = getattr(model, "observation_space", None)
    act_space = getattr(model, "action_space", None)
    if not isinstance(obs_space, spaces.Box) or obs_space.shape != (OBS_DIM,):
        raise ValueError(f"{source} has observation space {obs_space}; expected "
                         f"Box of shape ({OBS_DIM},) (gridswarm observations)")
    if not isinstance(act_space, spaces.MultiDiscrete) or act_space.nvec.shape != (2,):
        raise ValueError(f"{source} has action space {act_space}; expected "
                         "MultiDiscrete([n_power_levels, n_price_levels])")


def _check_record(path: Path, data: bytes | None) -> None:
    """The training record ``<model>.json`` beside a model, if there is one, must
    describe it: its ``model_sha256`` (when it has one) must be the hash of the model's
    bytes (a record left over from another model would vouch for the wrong observation
    layout), and the observation fields it lists must be today's :data:`OBS_FIELDS`
    (same width is not enough: a renamed or re-scaled column silently changes what the
    network sees).

    :param data: the model's bytes, already read (None: read ``path``).
    """
    record_path = path.with_suffix(".json")
    if not record_path.is_file():
        return
    import json

    try:
        record = json.loads(record_path.read_text())
        fields_then, sha_then = record.get("obs_fields"), record.get("model_sha256")
    except (OSError, ValueError, AttributeError):
        raise ValueError(f"training record {str(record_path)!r} beside the model is not "
                         "valid JSON (expected the record `python -m train` writes)") from None
    if sha_then is not None:
        sha_now = hashlib.sha256(path.read_bytes() if data is None else data).hexdigest()
        if sha_then != sha_now:
            raise ValueError(f"training record {str(record_path)!r} describes another model "
                             f"(model_sha256 {str(sha_then)[:12]}…, this file's "
                             f"{sha_now[:12]}…): it is stale; remove or replace it, or "
                             "load the model it was written for")
    _check_obs_fields(fields_then, path, "its JSON record lists")


def check_model_action_levels(model: Any, nvec: Any, path: Path | None = None) -> None:
    """``model`` (a loaded ``MaskablePPO``, from the file ``path`` or None: in memory) must
    act in ``MultiDiscrete(nvec)``, the ``[n_power_levels, n_price_levels]`` of the
    environment it is to drive. The one message of every command line (each puts its
    flag in front: ``demo.py --policy``, ``evaluate.py --policies``, ``python -m train
    --resume``, ``python -m train.dagger --base``).

    :raises ValueError: naming the model, both action spaces and what to do: play it with
        the levels it was trained with, and where its training run's settings are
        (:func:`trained_settings_hint`).
    """
    have = np.asarray(model.action_space.nvec, dtype=np.int64)
    want = np.asarray(nvec, dtype=np.int64)
    if not np.array_equal(want, have):
        source = "the model in memory" if path is None else f"model {str(path)!r}"
        raise ValueError(f"{source} was trained for MultiDiscrete({have.tolist()}) actions; "
                         f"this environment expects MultiDiscrete({want.tolist()}) "
                         f"(n_power_levels, n_price_levels): {levels_fix(have, path, model)}")


def levels_fix(nvec: Any, path: Path | None, model: Any) -> str:
    """What to do when a model trained for ``MultiDiscrete(nvec)`` meets an environment of
    other action levels: the levels to play it with (``[market]`` of a ``--config`` file,
    the only way a training run sets them) and where the settings of its training run are
    (:func:`trained_settings_hint`)."""
    from gridswarm_env.config import MarketConfig

    power, price = (int(n) for n in nvec)
    default = MarketConfig()
    where = ("the defaults: a --config FILE without them in [market]"
             if (power, price) == (default.n_power_levels, default.n_price_levels)
             else "[market] of a --config FILE")
    hint = trained_settings_hint(path, model)
    return (f"play it with the settings it was trained with, n_power_levels = {power} and "
            f"n_price_levels = {price} ({where}" + (f"; {hint})" if hint else ")"))


def trained_settings_hint(path: Path | None, model: Any) -> str | None:
    """Where the environment settings a model was trained with are written, in words, or
    None: the ``--config`` file its training run read (stored in the model,
    :data:`ENV_SETTINGS_ATTR`, or in its training record ``<model>.json``'s ``config``),
    else the record's ``env_config_toml`` (those settings as a config file)."""
    stored = getattr(model, ENV_SETTINGS_ATTR, None)
    record = _read_record(path.with_suffix(".json")) if path is not None else {}
    recorded = record.get("config")
    for settings in (stored, recorded):
        file = settings.get("env_config_file") if isinstance(settings, dict) else None
        if isinstance(file, str) and file:
            return f"its training run used --config {file!r}"
    toml = record.get("env_config_toml")
    if isinstance(toml, str) and toml.strip() and path is not None:
        return (f"its training record {str(path.with_suffix('.json'))!r} holds the settings "
                "it ran with as env_config_toml: save that text as FILE")
    return None


def _read_record(record_path: Path) -> dict[str, Any]:
    """The training record at ``record_path`` as a dict; ``{}`` when there is none or it
    is not a JSON object (:func:`_check_record` refused a bad one on loading)."""
    import json

    try:
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _check_obs_fields(fields_then: Any, path: Path, where: str) -> None:
    """The observation fields a model was trained on (None: not known) must be today's
    :data:`OBS_FIELDS`.

    :param where: how the message names their source (the model itself or its record).
    """
    if fields_then is not None and list(fields_then) != list(OBS_FIELDS):
        changed = [f"{i}: {a!r} -> {b!r}" for i, (a, b) in
                   enumerate(zip(fields_then, OBS_FIELDS, strict=False)) if a != b]
        raise ValueError(f"model file {str(path)!r} was trained on other observation fields "
                         f"than this environment's ({where}: "
                         f"{'; '.join(changed[:4]) or 'lengths differ'}); "
                         "retrain it (python -m train)")


class LearnedPolicy:
    """A saved MaskablePPO model acting for all agents (shared policy).

    :param path: model file (default: :data:`DEFAULT_MODEL`, the shipped one). The
        file is read once; ``sha256`` and ``size_bytes`` describe the bytes loaded
        (None for :meth:`from_model`).
    :param deterministic: greedy actions (True) or samples from the policy.
    :param torch_threads: torch intra-op threads during :meth:`act` (default 1, as in
        training; the previous setting is restored after each call, nothing else in
        the process is affected); None leaves torch's own setting (one thread per
        core). One forward pass over 100 agents is too small to gain from more: with
        the 2 cores idle it took 1.2 ms on 2 threads vs 1.5 ms on 1, but with both
        cores busy 53-153 ms vs 6-16 ms (median of 300 calls; the threads wait for
        each other). The actions are the same.
    :raises ValueError: see :func:`load_maskable_ppo`; a bad ``torch_threads``.
    """

    name = "learned"
    #: greedy actions from the network directly (:func:`greedy_actions`); False: through
    #: ``model.predict``, the same actions more slowly (``benchmarks.bench_policy``
    #: times both)
    direct_greedy = True

    def __init__(self, path: str | Path | None = None, deterministic: bool = True,
                 torch_threads: int | None = 1) -> None:
        self.torch_threads = _checked_threads(torch_threads)
        # the file actually loaded (``m2`` names ``m2.zip``, see check_model_file)
        self.path: Path | None = check_model_file(path if path is not None else DEFAULT_MODEL)
        self.deterministic = bool(deterministic)
        # the bytes are read once: the SHA-256 names exactly the model that acts
        # (evaluate.py records it), even if the file is rewritten while it is in use
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ValueError(f"model file {str(self.path)!r} cannot be read "
                             f"({exc.strerror or type(exc).__name__})") from None
        self.sha256: str | None = hashlib.sha256(data).hexdigest()
        self.size_bytes: int | None = len(data)
        self.model = load_maskable_ppo(self.path, data=data)
        self._nvec = np.asarray(self.model.action_space.nvec, dtype=np.int64)
        self._sample_state: Any = None   # torch RNG state of seeded sampling (see reset)

    @classmethod
    def from_model(cls, model: Any, deterministic: bool = True,
                   torch_threads: int | None = 1) -> LearnedPolicy:
        """Act with a MaskablePPO model already in memory (e.g. one being trained; the
        benchmark of time to beat the heuristic evaluates it this way). Its spaces are
        checked as :func:`load_maskable_ppo` checks a file's.

        :raises ValueError: not a MaskablePPO-like model, spaces that do not fit, or
            non-finite weights.
        """
        if not callable(getattr(model, "predict", None)):
            raise ValueError(f"{type(model).__name__} has no predict(); expected a "
                             "MaskablePPO model")
        _check_spaces(model, "model")
        _check_weights(model, "model")
        policy = cls.__new__(cls)
        policy.path = None
        policy.sha256 = policy.size_bytes = None   # no file
        policy.deterministic = bool(deterministic)
        policy.torch_threads = _checked_threads(torch_threads)
        policy.model = model
        policy._nvec = np.asarray(model.action_space.nvec, dtype=np.int64)
        policy._sample_state = None
        return policy

    def check_action_levels(self, nvec: Any) -> None:
        """The model must act in ``MultiDiscrete(nvec)`` (``[n_power_levels,
        n_price_levels]`` of the environment it is to drive).

        :raises ValueError: :func:`check_model_action_levels`'s message.
        """
        check_model_action_levels(self.model, nvec, self.path)

    def reset(self, env: Any, seed: int | None = None) -> None:
        """Check the model fits ``env``'s action space; seed sampling when not greedy
        (with a torch generator state of the policy's own: the process's random, numpy
        and torch generators and the model's environment are left alone).

        :raises ValueError: the model's action space differs from the environment's.
        """
        raw = getattr(env, "unwrapped", env)
        self.check_action_levels(raw.action_space(raw.possible_agents[0]).nvec)
        self._sample_state = None
        if seed is not None and not self.deterministic:
            # a private torch generator state, swapped in around each sampling call: SB3's
            # model.set_random_seed (used before) reseeded the process's random, numpy and
            # torch generators and the model's env, so sampled evaluation of a model in
            # training (from_model) reset its minibatch order, its action sampling and
            # its environment's next episode seeds to the evaluation seed
            import torch

            self._sample_state = torch.Generator().manual_seed(int(seed)).get_state()

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``(n, 2)`` int64 actions for ``obs`` ``(n, OBS_DIM)`` and ``mask`` ``(n, L+P)``."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != OBS_DIM:
            raise ValueError(f"obs has shape {obs.shape}: expected (n_agents, {OBS_DIM})")
        width = int(self._nvec.sum())
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (obs.shape[0], width):
            raise ValueError(f"mask has shape {mask.shape}: expected ({obs.shape[0]}, {width})")
        finite = np.isfinite(obs)
        if not finite.all():   # (torch's own check is off: unvalidated_distributions)
            i, j = np.argwhere(~finite)[0]
            raise ValueError(f"obs[{i}, {j}] ({OBS_FIELDS[j]}) is {obs[i, j]}: observations "
                             f"must be finite ({int(finite.size - finite.sum())} value(s) "
                             "are NaN or infinite)")
        if self.path is None:   # from_model: a model that may still be training
            _check_live_weights(self.model)
        if self.deterministic and self.direct_greedy and _direct_greedy(self.model.policy):
            with using_torch_threads(self.torch_threads):
                return greedy_actions(self.model.policy, obs, mask)
        with using_torch_threads(self.torch_threads), _torch_rng(self), unvalidated_distributions():
            actions, _ = self.model.predict(obs, deterministic=self.deterministic,
                                            action_masks=mask)
        return np.asarray(actions, dtype=np.int64).reshape(obs.shape[0], 2)


def _direct_greedy(policy: Any) -> bool:
    """Whether :func:`greedy_actions` computes what ``policy.predict`` would: an
    sb3-contrib ``MaskableActorCriticPolicy`` (or a subclass that overrides none of the
    methods it replicates) with a ``MaskableMultiCategoricalDistribution`` over a flat
    ``Box`` observation (which SB3 only casts to float). Any other policy acts through
    ``predict``."""
    from sb3_contrib.common.maskable.distributions import MaskableMultiCategoricalDistribution
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy as Base

    cls = type(policy)
    space = getattr(policy, "observation_space", None)
    replicated = ("predict", "obs_to_tensor", "_predict", "get_distribution",
                  "_get_action_dist_from_latent")
    return (isinstance(policy, Base)
            and type(policy.action_dist) is MaskableMultiCategoricalDistribution
            and isinstance(space, spaces.Box) and len(space.shape) == 1   # no image scaling
            and all(getattr(cls, name) is getattr(Base, name) and name not in vars(policy)
                    for name in replicated))


def greedy_actions(policy: Any, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(n, len(nvec))`` int64 greedy actions of a MaskablePPO ``policy``, computed as
    ``policy.predict(obs, deterministic=True, action_masks=mask)`` computes them, without
    its wrapping (tensor conversions, shape checks) or the six ``Categorical`` objects
    it builds per call (~0.7x the time at 100 agents; ``python -m
    benchmarks.bench_policy``). For each action dimension ``k`` with logits ``z_k``
    (torch.distributions' and sb3-contrib's steps, in their order):

        ``l = z_k - logsumexp(z_k)``; ``m = where(mask_k, l, -1e8)``;
        ``a_k = argmax(softmax(m - logsumexp(m)))`` (the first of equal probabilities)

    Same actions bit for bit (tested against ``predict`` on the shipped models, on
    random observations and masks). Like ``predict``, it leaves the policy in eval mode,
    takes arrays of any memory layout and masks of any dtype (nonzero = allowed). Unlike
    ``predict``, it takes only a batch (2-D ``obs``), and with torch's distribution
    checks on or off it refuses non-finite logits (``predict`` with the checks off, as
    in :meth:`LearnedPolicy.act`, acts on them).

    :param obs: ``(n, OBS_DIM)`` observations (cast to float32, as SB3 does).
    :param mask: ``(n, sum(nvec))`` action masks.
    :raises ValueError: ``obs`` or ``mask`` of another shape (``predict`` reshapes a mask
        of the right size, a transposed one included); the network's logits are NaN or
        infinite (non-finite weights or observations).
    """
    import torch

    dims = [int(d) for d in policy.action_dist.action_dims]
    obs_dim = policy.observation_space.shape[0]
    if np.ndim(obs) != 2 or np.shape(obs)[1] != obs_dim:
        raise ValueError(f"obs has shape {np.shape(obs)}: expected (n_agents, {obs_dim})")
    if np.shape(mask) != (len(obs), sum(dims)):
        raise ValueError(f"mask has shape {np.shape(mask)}: expected ({len(obs)}, "
                         f"{sum(dims)}), one row per agent")
    if policy.training:   # what predict's set_training_mode(False) does, when it is needed
        policy.set_training_mode(False)
    device = policy.device
    with torch.inference_mode():
        # (SB3 copies with np.array: a view with negative strides, which torch refuses,
        # works there too)
        x = torch.as_tensor(np.ascontiguousarray(obs), device=device).float()
        features = policy.pi_features_extractor(x)   # preprocess_obs of a Box: float()
        logits = policy.action_net(policy.mlp_extractor.forward_actor(features))
        logits = logits.view(-1, sum(dims))
        # one sum (~2 us); the element-wise test only when it is not finite (an overflow
        # of finite logits passes)
        if not math.isfinite(float(logits.sum())) and not bool(torch.isfinite(logits).all()):
            raise ValueError("the policy's logits are NaN or infinite: its weights or the "
                             "observations are not finite; expected finite logits")
        masks = torch.as_tensor(np.ascontiguousarray(mask), device=device)
        masks = masks.to(torch.bool).view(-1, sum(dims))   # as sb3-contrib's masks
        huge_neg = torch.tensor(-1e8, dtype=logits.dtype, device=device)
        columns = []
        for z, m in zip(torch.split(logits, dims, dim=1), torch.split(masks, dims, dim=1),
                        strict=True):
            z = z - z.logsumexp(dim=-1, keepdim=True)
            z = torch.where(m.reshape(z.shape), z, huge_neg)
            z = z - z.logsumexp(dim=-1, keepdim=True)
            columns.append(torch.argmax(torch.softmax(z, dim=-1), dim=1))
        return torch.stack(columns, dim=1).cpu().numpy().astype(np.int64, copy=False)


def _check_live_weights(model: Any) -> None:
    """:func:`_check_weights` for a model in memory at every act: its weights can turn
    non-finite after :meth:`LearnedPolicy.from_model` (a training run that diverges), and
    with torch's distribution checks off a greedy policy would then act silently on NaN
    logits. One sum over the parameters (~0.03 ms at the shipped model's size); the full
    check, naming the tensor, only when that sum is not finite (an overflow of finite
    weights passes it)."""
    import torch

    with torch.no_grad():
        total = sum(float(p.sum()) for p in model.policy.parameters())
    if not math.isfinite(total):
        _check_weights(model, "model")


def _checked_threads(torch_threads: Any) -> int | None:
    """``torch_threads`` if it is None, else it as a Python int from 1 to
    :data:`MAX_TORCH_THREADS` (numpy integers accepted, as by ``TrainConfig``).

    :raises ValueError: anything else.
    """
    from gridswarm_env.config import is_int

    if torch_threads is None:
        return None
    if not is_int(torch_threads) or not 1 <= torch_threads <= MAX_TORCH_THREADS:
        raise ValueError(f"LearnedPolicy.torch_threads = {torch_threads!r}: expected an "
                         f"integer from 1 to {MAX_TORCH_THREADS}, or None for torch's own "
                         "setting")
    return int(torch_threads)


@contextlib.contextmanager
def _torch_rng(policy: LearnedPolicy) -> Iterator[None]:
    """Inside the block torch's CPU generator holds ``policy``'s seeded sampling state
    (kept for its next call); the process's own state is restored afterwards. Nothing
    changes when the policy is greedy or was reset without a seed."""
    if policy._sample_state is None:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(policy._sample_state)
        yield
        policy._sample_state = torch.get_rng_state()


_validation_lock = threading.Lock()
_unvalidated_users = 0             # blocks of unvalidated_distributions now running
_validation_before: bool = True    # the setting the first of them found


@contextlib.contextmanager
def unvalidated_distributions() -> Iterator[None]:
    """``torch.distributions`` argument validation off inside the block, restored after.

    MaskablePPO builds three ``Categorical`` objects per action dimension for every
    forward pass, and by default each re-checks its logits (finite, right shape): ~15-25 %
    of a :meth:`LearnedPolicy.act` through ``model.predict`` at 100 agents (sampled
    actions; greedy ones build no distribution, :func:`greedy_actions`) and 7-15 % of
    PPO's training time (``python -m benchmarks.bench_train``). The checks compute nothing
    the actions or the learning use: actions and trained weights are the same bit for bit
    (tested). What changes is where non-finite logits fail. :meth:`LearnedPolicy.act` refuses
    non-finite observations itself, and non-finite weights on loading (and, for a model
    in memory, at every call); in training a diverged network's NaN logits raise at the
    next sampling (``torch.multinomial``'s RuntimeError; when the NaN came from an update,
    the update runs to its end and the next rollout's first step raises) instead of at
    the distribution's construction (ValueError). Training reports either as a failure
    (a NaN left by the last update as non-finite weights) and refuses to save
    non-finite weights.

    The setting is process-wide: blocks may nest and run in several threads at once (the
    first to enter turns the checks off, the last to leave restores what it found).
    """
    from torch.distributions import Distribution

    global _unvalidated_users, _validation_before
    with _validation_lock:
        if not _unvalidated_users:
            _validation_before = Distribution._validate_args
            Distribution.set_default_validate_args(False)
        _unvalidated_users += 1
    try:
        yield
    finally:
        with _validation_lock:
            _unvalidated_users -= 1
            if not _unvalidated_users:
                Distribution.set_default_validate_args(_validation_before)


@contextlib.contextmanager
def using_torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block (None: unchanged)."""
    import torch

    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


#: ``EnvConfig`` fields a model's play does not depend on (the fleet size is compared on
#: its own): left out when a run's settings are compared with its training run's
_UNTRAINED_SETTINGS = frozenset({"n_agents", "trust", "crypto_threads", "contract_keys",
                                 "audit_keep_entries", "shadow", "audit_path"})


def _trained_env_config(toml_text: str) -> Any:
    """The :class:`~gridswarm_env.config.EnvConfig` a record's ``env_config_toml`` rebuilds
    (:func:`~gridswarm_env.config_file.env_config_from_dict`), or None when the text does
    not parse or holds settings this version does not take."""
    import tomllib

    from gridswarm_env.config_file import env_config_from_dict

    try:
        return env_config_from_dict(tomllib.loads(toml_text))
    except (tomllib.TOMLDecodeError, TypeError, ValueError):
        return None


def _scenario_differences(trained: str | list[str] | tuple[str, ...], file_record: Any,
                          played: Any) -> tuple[str, list[str]]:
    """(what :func:`trained_settings_note` says a model was trained on, what differs in
    ``played``): scenarios not trained on, and played scenarios of a trained name whose
    fields differ from the trained one's.

    :param trained: the recorded ``scenario``: a name, ``"all"``, a list of names or a
        scenario file's path.
    :param file_record: the record's ``scenario_file`` (``python -m train --scenario
        FILE.toml``), or None.
    """
    from gridswarm_env.scenarios import (
        SCENARIOS,
        Scenario,
        is_scenario_file,
        scenario_from_record,
    )

    trained_scenarios: dict[str, Any] = {}   # name -> Scenario (None: fields unknown)
    if isinstance(trained, str) and is_scenario_file(trained):
        fields_then = file_record.get("scenario") if isinstance(file_record, dict) else None
        try:
            sc = scenario_from_record(fields_then) if isinstance(fields_then, dict) else None
        except (TypeError, ValueError):   # fields this version's Scenario does not take
            sc = None
        if sc is None:   # the model without its record: the file's scenario is unknown
            return (f"scenario file {trained!r}",
                    ["scenarios not compared (the scenario file's scenario is not in its "
                     "record)"])
        trained_scenarios[sc.name] = sc
        then = f"scenario file {trained!r} ({sc.name})"
    else:
        names = (tuple(SCENARIOS) if trained == "all"
                 else (trained,) if isinstance(trained, str) else tuple(trained))
        trained_scenarios = {name: SCENARIOS.get(name) for name in names}
        then = "scenarios " + ("all" if trained == "all" else ",".join(names))
    others, changed = {}, {}   # (dicts: each name once)
    for item in played:
        name = item.name if isinstance(item, Scenario) else str(item)
        sc = item if isinstance(item, Scenario) else SCENARIOS.get(name)
        if name not in trained_scenarios:
            others[name] = None
        elif sc is not None and trained_scenarios[name] not in (None, sc):
            # (a name played as registered, by a model trained on a file's scenario
            # of that name, too)
            from gridswarm_env.config import field_changes

            diff = field_changes(sc, trained_scenarios[name],
                                 skip=("description", "success"))
            changed[f"{name} ({', '.join(c.partition(' = ')[0] for c in diff)})"
                    if diff else f"{name} (its texts)"] = None
    now = []
    if others:
        now.append("scenarios " + ",".join(others) + " (not trained on)")
    if changed:
        now.append("scenario " + ", ".join(changed) + " other than the one trained on")
    return then, now


def trained_settings_note(policy: Any, n_agents: int, scenarios: Any, randomize: bool,
                          env_config: Any = None) -> str | None:
    """One line saying how a run's settings differ from those ``policy``'s model was
    trained with (fleet size, scenarios, ``--randomize``, the environment settings of a
    ``--config`` file), or None: not a model from a file, nothing recorded, or nothing
    differs (fixed scenarios played by a model trained randomized do not: they are the
    centre of what it was trained on). What the model stores (:data:`ENV_SETTINGS_ATTR`) wins over its training
    record ``<model>.json``. A record that holds some settings but not one the run sets
    (``--randomize`` on a model whose record does not say whether it was trained
    randomized, environment settings other than the defaults on a record without
    ``env_config_toml``, as the shipped models') gets that said, not a default assumed;
    nothing recorded at all: nothing compared.

    :param scenarios: the scenarios played: names, or
        :class:`~gridswarm_env.scenarios.Scenario` objects (a scenario file's), which
        are also compared field by field with the one of their name the model was
        trained on (the registered one, or its ``--scenario`` file's from the record's
        ``scenario_file``).
    :param env_config: the run's :class:`~gridswarm_env.config.EnvConfig` (None: not
        compared).
    """
    path = getattr(policy, "path", None)
    model = getattr(policy, "model", None)
    if path is None or model is None:
        return None
    record = _read_record(Path(path).with_suffix(".json"))
    stored = getattr(model, ENV_SETTINGS_ATTR, None)
    recorded = record.get("config")
    settings = {**(recorded if isinstance(recorded, dict) else {}),
                **(stored if isinstance(stored, dict) else {})}
    then: list[str] = []
    now: list[str] = []
    trained_n = settings.get("n_agents")
    if isinstance(trained_n, int) and not isinstance(trained_n, bool):
        then.append(f"{trained_n} agents")
        if trained_n != int(n_agents):
            now.append(f"{int(n_agents)} agents")
    trained_sc = settings.get("scenario")
    if isinstance(trained_sc, str) or (isinstance(trained_sc, list | tuple)
                                       and all(isinstance(s, str) for s in trained_sc)):
        then_sc, now_sc = _scenario_differences(trained_sc, record.get("scenario_file"),
                                                scenarios)
        then.append(then_sc)
        now.extend(now_sc)
    trained_rand = settings.get("randomize")
    if isinstance(trained_rand, bool):
        then.append("randomized" if trained_rand else "not randomized")
        # the fixed scenarios are the centre of the randomized ones (the preset jitters
        # around them): only randomized play of a model trained without it differs
        if bool(randomize) and not trained_rand:
            now.append("randomized")
    elif bool(randomize) and settings:
        now.append("randomized (its record does not say whether it was trained "
                   "randomized)")
    toml = record.get("env_config_toml")
    trained = _trained_env_config(toml) if isinstance(toml, str) else None
    if env_config is not None and trained is not None:
        from gridswarm_env.config import field_changes

        then.append("the env settings in its record's env_config_toml")
        # field_changes' items read "table.key = value (trained value)": their keys
        differ = sorted(c.partition(" = ")[0]
                        for c in field_changes(env_config, trained, skip=_UNTRAINED_SETTINGS))
        if differ:
            now.append("other env settings (" + ", ".join(differ) + ")")
    elif env_config is not None and (settings or record):
        from gridswarm_env.config import EnvConfig, field_changes

        # no settings to compare with: say so when the run's are not the defaults
        differ = sorted(c.partition(" = ")[0] for c in field_changes(
            env_config, EnvConfig(), skip=_UNTRAINED_SETTINGS))
        if differ:
            why = ("does not hold in a form this version reads" if isinstance(toml, str)
                   else "has no")
            now.append("env settings other than the defaults (" + ", ".join(differ)
                       + f"), not compared: its record {why} env settings (env_config_toml)")
    if not now:
        return None
    return (f"model {str(path)!r} was trained with {', '.join(then)}; "
            f"this run: {', '.join(now)}")
