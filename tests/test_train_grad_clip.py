"""The gradient-clip monitor: how much PPO's shared gradient-norm clip shrinks the
actor's steps (train/grad_clip_factor), read without changing the training."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import Logger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from train.callbacks import (
    STARVED_CLIP_FACTOR,
    DumpAfterUpdate,
    GradientClipMonitor,
    is_critic_parameter,
)
from train.config import TrainConfig
from train.trainer import make_model, make_venv, train

AGENTS, N_STEPS, BATCH, EPOCHS = 10, 32, 128, 2
#: minibatch steps per update: EPOCHS passes over a rollout of N_STEPS x AGENTS samples
STEPS_PER_UPDATE = EPOCHS * -(-N_STEPS * AGENTS // BATCH)


def config(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(scenario="price_spike", total_timesteps=3 * N_STEPS * AGENTS, n_agents=AGENTS,
                n_steps=N_STEPS, batch_size=BATCH, n_epochs=EPOCHS, checkpoint_every=0,
                logdir=str(tmp_path / "runs"), run_name="clip", progress_bar=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def learn(cfg: TrainConfig, callbacks: list) -> object:
    venv = make_venv(cfg)
    model = make_model(cfg, venv)
    model.set_logger(Logger(folder=None, output_formats=[]))   # no tempdir/SB3-<time> left
    model.learn(cfg.total_timesteps, callback=callbacks + [DumpAfterUpdate()],
                log_interval=None)
    venv.close()
    return model


def test_the_critic_parameters_are_the_value_networks(tmp_path):
    model = make_model(config(tmp_path), make_venv(config(tmp_path)))
    names = [n for n, _ in model.policy.named_parameters()]
    critic = [n for n in names if is_critic_parameter(n)]
    assert critic and len(critic) < len(names)
    assert all(n.startswith(("mlp_extractor.value_net.", "value_net.")) for n in critic)
    assert all(n.startswith(("mlp_extractor.policy_net.", "action_net."))
               for n in names if n not in critic)


@pytest.mark.filterwarnings("ignore:PPO's gradient clip:RuntimeWarning")
def test_the_factor_is_the_one_sb3_clips_by(tmp_path, monkeypatch):
    """Every minibatch's norm as torch's clip_grad_norm_ (which SB3 calls) returns it:
    the monitor's update means are the means of SB3's own factors."""
    norms: list[float] = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        total = clip(parameters, max_norm, *args, **kwargs)
        norms.append(float(total))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    cfg = config(tmp_path, reward="marginal")
    monitor = GradientClipMonitor()
    learn(cfg, [monitor])
    assert len(norms) == 3 * STEPS_PER_UPDATE
    factors = np.minimum(1.0, cfg.max_grad_norm / (np.array(norms) + 1e-6))
    expected = factors.reshape(3, STEPS_PER_UPDATE).mean(axis=1)
    np.testing.assert_allclose(monitor.factors, expected, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:PPO's gradient clip:RuntimeWarning")
def test_the_monitor_changes_no_weight(tmp_path):
    cfg = config(tmp_path)
    plain = learn(cfg, []).policy.state_dict()
    watched = learn(cfg, [GradientClipMonitor()]).policy.state_dict()
    assert plain.keys() == watched.keys()
    assert all(torch.equal(plain[k], watched[k]) for k in plain)


def test_a_starved_actor_is_warned_about_recorded_and_logged(tmp_path):
    """--reward marginal at the default --reward-scale: the critic's gradient dominates
    the shared clip and the actor's steps shrink ~100-fold; said, not silent."""
    cfg = config(tmp_path, reward="marginal")
    with pytest.warns(RuntimeWarning, match="gradient clip .* --reward-scale"):
        path = train(cfg)
    summary = json.loads(path.with_suffix(".json").read_text())["grad_clip_factor"]
    assert summary["updates"] == 3
    assert summary["mean"] < STARVED_CLIP_FACTOR
    events = EventAccumulator(str(tmp_path / "runs" / "clip"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("train/grad_norm", "train/grad_norm_actor", "train/grad_norm_critic",
                "train/grad_clip_factor"):
        assert tag in tags
    logged = [e.value for e in events.Scalars("train/grad_clip_factor")]
    np.testing.assert_allclose(np.mean(logged), summary["mean"], rtol=1e-5)
    critic = [e.value for e in events.Scalars("train/grad_norm_critic")]
    actor = [e.value for e in events.Scalars("train/grad_norm_actor")]
    assert min(critic) > 10 * max(actor)


def test_a_smaller_reward_scale_unclips_the_actor(tmp_path):
    """The remedy the warning names: the same run at --reward-scale 1e-5 (10 agents: 1e-4 at 100) is not
    warned about and its updates are barely clipped."""
    cfg = config(tmp_path, reward="marginal", reward_scale=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        path = train(cfg)
    summary = json.loads(path.with_suffix(".json").read_text())["grad_clip_factor"]
    assert summary["min"] > 0.5, summary
