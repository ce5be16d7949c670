"""Energy contracts the bus delivers after their delivery window began.

With latencies beyond ``dt_s − gate_s`` (short steps, a late gate) some contracts reach
their holders after their window began. They used to be verified at the next step, after
the window ended, and were rejected (first as ``expired``, then as ``late``): never
executed, though most of the window remained. Now the operator's own copy of a contract,
the one published to its holder when it was issued, executes from its delivery for the
rest of its window, verified at its delivery time and paid for the energy it delivers
(pro rata); only one delivered at or after its window's end is ``late``
(``contracts_late``, a part of ``contracts_rejected``). A replay, a duplicate or a
contract an attacker withheld and sent again later is still ``expired``.
"""

from __future__ import annotations

from typing import Any

import pytest

from gridswarm_env.bus import BusConfig
from gridswarm_env.config import EnvConfig, MarketConfig
from gridswarm_env.env import GridSwarmEnv
from gridswarm_env.messages import TOPIC_CONTRACTS
from gridswarm_env.scenarios import PRODUCT_RESERVE, get_scenario
from policies import make_policy
from tests.episodes import play


def _short_steps_env(gate_s: float = 0.03, adversary: Any = None,
                     bus: BusConfig | None = None) -> GridSwarmEnv:
    """price_spike, 10 agents, hmac, ``dt_s`` 0.05 s for 600 steps: the default bus
    (latencies up to 50 ms) delivers some contracts after their window began."""
    cfg = EnvConfig(n_agents=10, dt_s=0.05, trust="hmac", market=MarketConfig(gate_s=gate_s),
                    **({} if bus is None else {"bus": bus}))
    return GridSwarmEnv(get_scenario("price_spike", episode_steps=600), config=cfg,
                        adversary=adversary)


def _record_deliveries(raw: GridSwarmEnv) -> list[tuple[Any, float]]:
    """``(contract, arrival time)`` of every contract copy the bus delivers, read from
    the bus's own deliveries (not from the ledger's verdicts): its delivery time, or for
    one due by the bus's previous delivery call (deferred: the lane's capacity held it
    back), the time of the call that handed it out."""
    seen: list[tuple[Any, float]] = []
    deliver = raw.bus.deliver
    previous_s = [-float("inf")]

    def recording(now_s, *args, **kwargs):
        batch = deliver(now_s, *args, **kwargs)
        con = batch.topic(TOPIC_CONTRACTS)
        refs = raw.contract_flow.refs
        for ref, at in zip(con.payloads.tolist(), con.delivery_times_s.tolist(), strict=True):
            seen.append((refs[ref][0].contract, at if at > previous_s[0] else now_s))
        previous_s[0] = now_s
        return batch

    raw.bus.deliver = recording
    return seen


def _rejections(raw: GridSwarmEnv) -> list[tuple[str, str]]:
    return [(r["contract_id"], r["reason"]) for e in raw.audit_log.entries
            if e.kind == "contract_rejected" for r in e.fields["rejections"]]


def _verified_at(raw: GridSwarmEnv) -> dict[str, list[float]]:
    """Contract id -> the times the ledger verified it at (audit ``contract_verified``)."""
    out: dict[str, list[float]] = {}
    for e in raw.audit_log.entries:
        if e.kind == "contract_verified":
            for cid in e.fields["contract_ids"]:
                out.setdefault(cid, []).append(e.fields["now_s"])
    return out


def _run(raw: GridSwarmEnv) -> list[tuple[Any, float]]:
    """Play ``raw`` (heuristic, seed 0), recording the bus's contract deliveries."""
    raw.reset(seed=0)
    seen = _record_deliveries(raw)   # the episode's bus (a reset builds another)
    policy = make_policy("heuristic")
    policy.reset(raw, seed=0)
    while raw.agents:
        act = policy.act(raw.observations_array(), raw.action_masks())
        raw.step_arrays(act[:, 0], act[:, 1])
    return seen


_LONG_TAIL = BusConfig(latency_mean_s=0.03, latency_max_s=0.2)


@pytest.mark.parametrize(("gate_s", "bus"), [(0.01, None), (0.03, None), (0.03, _LONG_TAIL)])
def test_a_contract_delivered_inside_its_window_executes_from_its_delivery(
        gate_s: float, bus: BusConfig | None) -> None:
    """Every contract the bus delivers after its window began and before it ended is
    verified at its delivery time (and then executes); one delivered on time is verified
    at its window's start; only one delivered at or after its window's end is rejected,
    as ``late``. The old code rejected every contract delivered after its window began
    (gate 0.01 / 0.03 s, default bus: 24 / 101 of 388 / 372 contracts)."""
    raw = _short_steps_env(gate_s, bus=bus)
    seen = _run(raw)
    m = raw.episode_metrics()
    still_pending = {c.contract.contract_id for c, _ in raw.pending}
    assert len(seen) == len({c.contract_id for c, _ in seen})   # one copy each
    seen = [(c, at) for c, at in seen if c.contract_id not in still_pending]
    joined = {c.contract_id: at for c, at in seen if c.window_start_s < at < c.window_end_s}
    on_time = {c.contract_id: c.window_start_s for c, at in seen if at <= c.window_start_s}
    late = {c.contract_id for c, at in seen if at >= c.window_end_s}
    assert joined and on_time
    verified = _verified_at(raw)
    assert verified == {cid: [at] for cid, at in (joined | on_time).items()}
    assert sorted(_rejections(raw)) == sorted((cid, "late") for cid in late)
    assert m["contracts_late"] == len(late)
    assert m["contracts_rejected"] == len(late)
    assert m["contracts_verified"] == len(joined) + len(on_time)
    assert m["contracts_signed"] == (m["contracts_verified"] + m["contracts_rejected"]
                                     + m["contracts_lost"] + len(still_pending)
                                     + len(raw.contract_flow.refs))
    if bus is None:   # latencies up to 50 ms = dt_s: every contract arrives in its window
        assert not late
    else:
        assert late
    assert raw.audit_log.verify().ok
    assert m["executed_violations"] == 0
    assert not raw.contract_flow.own_copies.keys() - still_pending - {
        s.contract.contract_id for s, _ in raw.contract_flow.refs.values()}


def test_a_contract_the_control_lane_deferred_into_its_window_executes_from_its_handout(
        ) -> None:
    """A contract due before its window but held back by the CONTROL lane's capacity
    (deferred) reaches its holder when a later delivery hands it out; one handed out at
    the next gate closure, inside its window, executes from then (verified at that time)
    rather than being rejected as ``late`` (price_spike, 30 agents, 1 s steps, the
    CONTROL lane capped at 8 deliveries a step)."""
    big = 10**6
    cfg = EnvConfig(n_agents=30, trust="hmac",
                    bus=BusConfig(capacity_per_step=(big, 8, big, big)))
    raw = GridSwarmEnv(get_scenario("price_spike", episode_steps=120), config=cfg)
    seen = _run(raw)
    still_pending = {c.contract.contract_id for c, _ in raw.pending}
    verified = _verified_at(raw)
    handed_in = {c.contract_id: at for c, at in seen if c.window_start_s < at < c.window_end_s
                 and c.contract_id not in still_pending}
    assert handed_in
    assert {verified.get(cid, [None])[0] for cid in handed_in} == set(handed_in.values())
    assert all(at == c.window_start_s + raw.config.market.gate_s
               for c, at in seen if c.contract_id in handed_in)
    late = {c.contract_id for c, at in seen if at >= c.window_end_s} - still_pending
    assert sorted(_rejections(raw)) == sorted((cid, "late") for cid in late)


def test_a_contract_joined_inside_its_window_is_paid_for_the_energy_it_delivers() -> None:
    """Settlement pays each executed contract for what it was contracted to deliver after
    its delivery (the whole window for one on time): with every contract delivered in
    full (nothing clamped), the episode's payments are ``Σ π·C·(end − max(t_a, start))``
    over the verified contracts, in MWh at their prices (the old code paid nothing for
    a contract delivered after its window began, and executed none of it)."""
    raw = _short_steps_env(0.03)
    seen = _run(raw)
    m = raw.episode_metrics()
    verified = _verified_at(raw)
    assert m["dispatch_clamped"] == 0 and m["contracts_rejected"] == 0
    paid = [c.power_mw * c.price_per_mwh * (c.window_end_s - max(at, c.window_start_s)) / 3600
            for c, at in seen if c.contract_id in verified]
    assert any(at > c.window_start_s for c, at in seen if c.contract_id in verified)
    assert m["balancing_payments"] == pytest.approx(sum(paid), rel=1e-9)


class _Withhold:
    """An attacker on the bus who withholds one energy contract from its batch and sends
    it in the next batch, after its window began (a delayed replay), from round 100 on."""

    def __init__(self) -> None:
        self.held: tuple | None = None
        self.sent: list[str] = []

    def __call__(self, env, signed, owners):
        if not signed or signed[0].contract.product != "energy":
            return signed, owners
        signed, owners = list(signed), list(owners)
        if self.held is not None:
            old, owner = self.held
            signed.append(old)
            owners.append(owner)
            self.sent.append(old.contract.contract_id)
            self.held = None
        elif env.round_index >= 100 and len(self.sent) < 20:
            self.held = (signed.pop(0), owners.pop(0))
        return signed, owners


def test_a_contract_withheld_and_sent_after_its_window_began_is_expired() -> None:
    """An attacker cannot make a replay pass for network lateness: a genuine contract
    withheld from its batch and sent with the next one, so that it arrives inside its
    window but after it began, is still ``expired`` and never executes (it is not the
    copy the operator published when it was issued), while the bus's own late deliveries
    in the same run execute from their delivery."""
    attacker = _Withhold()
    raw = _short_steps_env(0.03, adversary=attacker)
    seen = _run(raw)
    reasons = dict(_rejections(raw))
    assert len(attacker.sent) == 20
    assert {reasons.get(cid) for cid in attacker.sent} == {"expired"}
    m = raw.episode_metrics()
    assert m["contracts_rejected_by_reason"] == {"expired": 20}
    verified = _verified_at(raw)
    assert not set(attacker.sent) & verified.keys()
    # some withheld copies reached their holders inside their windows (the others after)
    sent = set(attacker.sent)
    assert any(c.window_start_s < at < c.window_end_s for c, at in seen
               if c.contract_id in sent)
    assert any(at > c.window_start_s and verified.get(c.contract_id) == [at]
               for c, at in seen if c.contract_id not in sent)


def test_a_duplicated_contract_executes_once_and_its_other_copy_is_expired() -> None:
    """An attacker who sends every energy contract twice: each contract executes through
    one copy at most, once; the other copy is ``expired`` or ``replayed``, never ``late``;
    the operator's own copy delivered after its window began executes from its delivery
    (the first of the pair in each batch), and the duplicate, delivered after the window
    began too, is then ``expired`` (either copy may be the slower one)."""

    def duplicate(env, signed, owners):
        if signed and signed[0].contract.product == "energy":
            return signed + signed, list(owners) + list(owners)
        return signed, owners

    raw = _short_steps_env(0.03, adversary=duplicate)
    seen = _run(raw)
    rejections = _rejections(raw)
    verified = _verified_at(raw)
    assert {reason for _, reason in rejections} <= {"expired", "replayed"}
    assert all(len(times) == 1 for times in verified.values())
    expired = {cid for cid, reason in rejections if reason == "expired"}
    joined = {cid for cid, times in verified.items() for c, at in seen
              if c.contract_id == cid and at == times[0] and at > c.window_start_s}
    assert joined & expired
    assert raw.episode_metrics()["contracts_late"] == 0


def test_nothing_is_late_with_the_shipped_step_and_gate() -> None:
    """With the default 1 s step and 0.25 s gate every latency of the default bus fits in
    ``dt_s − gate_s``: ``contracts_late`` is 0 and no contract is rejected."""
    raw = GridSwarmEnv(scenario="price_spike", n_agents=30, trust="hmac")
    for _ in play(raw, "heuristic", seed=0):
        pass
    m = raw.episode_metrics()
    assert m["contracts_late"] == 0 and m["contracts_rejected"] == 0
    assert m["contracts_verified"] > 0


@pytest.mark.parametrize(("latency_s", "joins_by_the_end"), [(0.025, True), (0.0295, False)])
def test_the_emergency_window_judges_a_holder_with_the_contract_acting_at_its_end(
        latency_s: float, joins_by_the_end: bool) -> None:
    """``emergency_response_mw_100ms`` judges each reserve holder at the window's end
    ``t_e`` against the energy contract acting *then* (``contract_power_at``), which
    includes one that joined mid-step by ``t_e`` and no later one. Crafted so that it
    matters: a constant-latency bus (dt_s 0.05, gate 0.03) delivers every contract
    ``gate + latency − dt_s`` into its window, and a trip at 9.958 s puts the first
    post-trip energy round's window start (10.05 s) just before ``t_e`` = 10.058 s.
    Battery ``j`` holds R = half its rating as reserve and wins C = the other half in that
    round; drained just before that step, it can execute ``D`` = 5 MW < C + R.

    - latency 25 ms: C joins at 10.055 s, before ``t_e``. At ``t_e`` ``j`` executes
      ``clip(C + R) = D`` where it would execute ``C`` without its reserve, so the
      reserve delivers ``D − C`` (judged with the on-time contract power alone, 0 for
      ``j``, it counted all of R: 100 MW).
    - latency 29.5 ms: C joins at 10.0595 s, after ``t_e``: at ``t_e`` ``j`` executes
      ``R < D``, the reserve in full (judged with C it would count ``D − C``)."""
    cfg = EnvConfig(n_agents=20, dt_s=0.05, trust="hmac", market=MarketConfig(gate_s=0.03),
                    bus=BusConfig(latency_distribution="constant", latency_mean_s=latency_s,
                                  latency_max_s=latency_s))
    sc = get_scenario("emergency", event_time_s=9.958, contingency_mw=150.0,
                      episode_steps=205)
    raw = GridSwarmEnv(sc, config=cfg)
    raw.reset(seed=0)
    seen = _record_deliveries(raw)
    policy = make_policy("heuristic")
    policy.reset(raw, seed=0)
    j = raw.possible_agents.index("battery_000")
    top = raw.config.market.n_power_levels - 1
    f, floor, dt_h = raw.fleet, raw.kernel.arrays.soc_min, cfg.dt_s / 3600.0
    end_s = sc.event_time_s + 0.1
    drained_mw, window = 5.0, None
    while raw.agents:
        act = policy.act(raw.observations_array(), raw.action_masks())
        # j offers half its rating once as reserve, then nothing; all it can as energy
        if raw.round_product == PRODUCT_RESERVE:
            act[j] = (top * 3 // 4 if raw.reserve_book.awarded_mw[j] == 0 else top // 2, 0)
        else:
            act[j] = (top, 0)
        if raw.t_s <= end_s < raw.t_s + cfg.dt_s:   # the step that holds t_e
            window = raw.step_index
            f.energy_mwh[j] = (floor[j] * f.energy_capacity_mwh[j]
                               + drained_mw * dt_h / f.eta_discharge[j])
        raw.step_arrays(act[:, 0], act[:, 1])
    assert window is not None
    reserve_mw = float(raw.reserve_book.active_mw[j])
    rated = float(f.rated_power_mw[j])
    assert reserve_mw == pytest.approx(rated / 2)
    assert raw.reserve_book.activation_s[j] <= end_s
    # j's energy contract for that step's window joined inside the step and executed
    # from its delivery (verified then)
    start_s = window * cfg.dt_s
    mine = [(c, at) for c, at in seen if c.agent_id == raw.possible_agents[j]
            and c.product == "energy" and c.window_start_s == pytest.approx(start_s)]
    assert len(mine) == 1
    contract, at = mine[0]
    assert at == pytest.approx(start_s + 0.03 + latency_s - cfg.dt_s)
    assert _verified_at(raw)[contract.contract_id] == [at]
    contract_mw = contract.power_mw
    assert contract_mw == pytest.approx(rated - reserve_mw)   # the room beside its reserve
    assert reserve_mw < drained_mw < contract_mw + reserve_mw
    m = raw.episode_metrics()
    assert m["executed_violations"] == 0
    assert (at <= end_s) is joins_by_the_end
    if joins_by_the_end:
        want = sc.reserve_target_mw - reserve_mw + (drained_mw - contract_mw)
    else:
        want = sc.reserve_target_mw
    assert m["emergency_response_mw_100ms"] == pytest.approx(want, rel=1e-9)
