"""Scenario registry and configuration validation: clear ``ValueError``s naming the field.

Every check here is what a user hits first: a typo in a scenario name, a zero or
negative setting, an efficiency above 1, shares that do not add up.
"""

from __future__ import annotations

import pytest


def test_fewer_agents_than_kinds_warns_which_capacity_is_left_out() -> None:
    """Energy review: at n_agents = 1 or 2 whole kinds (115 MW of PV, 50 MW of EVs) had no
    agent and vanished silently, so the scenario no longer behaved as at larger fleets."""
    import warnings

    from gridswarm_env.env import GridSwarmEnv

    with pytest.warns(UserWarning, match=r"n_agents=1 .*solar \(115\.2 MW\), ev \(50 MW\)"):
        GridSwarmEnv("price_spike", n_agents=1, trust="hmac")
    with pytest.warns(UserWarning, match=r"n_agents=2 .*: ev \(50 MW\): no agent"):
        GridSwarmEnv("price_spike", n_agents=2, trust="hmac")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GridSwarmEnv("price_spike", n_agents=3, trust="hmac")


@pytest.mark.parametrize("build", ["parallel_env", "env", "GridSwarmEnv"])
def test_fewer_agents_warning_points_at_the_callers_line(build) -> None:
    """First-use review: the warning's stacklevel named the package's own
    ``return GridSwarmEnv(...)`` line in ``parallel_env``, printed under the message."""
    import gridswarm_env

    make = getattr(gridswarm_env, build) if build != "GridSwarmEnv" else gridswarm_env.raw_env
    with pytest.warns(UserWarning, match="fewer than the fleet's DER kinds") as record:
        make("price_spike", n_agents=2, trust="hmac")
    [warning] = [w for w in record if "DER kinds" in str(w.message)]
    assert warning.filename == __file__
