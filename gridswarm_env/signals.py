"""What each agent knows from the operator's broadcasts: the last round announcement the
bus delivered to it (:data:`~gridswarm_env.messages.SIGNAL_DTYPE`: request, price signal,
product, frequency, RoCoF, last clearing price), how many steps ago it arrived, and
whether and when the emergency broadcast reached it.

:class:`AgentSignals` keeps one record per agent, updated from each step's deliveries
(:meth:`AgentSignals.receive`, :meth:`AgentSignals.receive_emergency`); the observation
builder reads its fields (:mod:`gridswarm_env.observations`; the environment's ``sig_*``,
``emergency_seen`` and ``emergency_arrival_s`` arrays are the same arrays).
"""

from __future__ import annotations

import numpy as np

from gridswarm_env.bus import Delivery
from gridswarm_env.fleet import ONE, ZERO, fast_count_nonzero
from gridswarm_env.messages import SIGNAL_DTYPE, SIGNAL_VOID, TOPIC_EMERGENCY, TOPIC_PRICE
from gridswarm_env.observations import SIGNAL_AGE_CAP


class AgentSignals:
    """The last round announcement each of ``n_agents`` agents received.

    Before any arrives: round −1, no request, ``price_per_mwh`` (the mean price level),
    the nominal frequency, no clearing price (NaN), ``SIGNAL_AGE_CAP`` = 10 steps old
    (the oldest the observation tells apart: its ``signal_age`` is ``age / 10`` capped
    at 1).

    :param reorder: whether a newer announcement can overtake an older one on the bus
        (latencies can differ by more than ``gate_s``, the time between the first two):
        then each agent keeps the newest round it received, not the last delivered.
    :ivar record: one packed record per agent (written per delivery as one 45-byte item);
        ``round``, ``request_mw``, ``price_per_mwh``, ``product``, ``freq_hz``,
        ``rocof_hz_per_s`` and ``clearing_price_per_mwh`` are views of its fields.
    :ivar age_steps: steps since each agent's last announcement arrived.
    :ivar emergency_seen: whether the emergency broadcast reached each agent.
    :ivar emergency_arrival_s: when it first did, s (``inf`` before): reserve activates
        from it.
    """

    def __init__(self, n_agents: int, *, price_per_mwh: float, nominal_freq_hz: float,
                 reorder: bool) -> None:
        sig = self.record = np.zeros(n_agents, dtype=SIGNAL_DTYPE)
        sig["round"] = -1
        sig["price_per_mwh"] = price_per_mwh
        sig["freq_hz"] = nominal_freq_hz
        sig["clearing_price_per_mwh"] = np.nan
        self.round, self.request_mw = sig["round"], sig["request_mw"]
        self.price_per_mwh, self.product = sig["price_per_mwh"], sig["product"]
        self.freq_hz, self.rocof_hz_per_s = sig["freq_hz"], sig["rocof_hz_per_s"]
        self.clearing_price_per_mwh = sig["clearing_price_per_mwh"]
        self.age_steps = np.full(n_agents, SIGNAL_AGE_CAP)
        # opaque-item view: delivered rows are scattered into the records as raw bytes
        # (the same bytes as the field-wise copies, several times faster)
        self._void = sig.view(SIGNAL_VOID)
        self.reorder = reorder
        self.emergency_seen = np.zeros(n_agents, dtype=bool)
        self.emergency_arrival_s = np.full(n_agents, np.inf)

    def receive(self, deliveries: tuple[Delivery, ...]) -> None:
        """The announcements delivered this step (``grid/price``); every agent's age grows
        by one step, and is 0 for those that received one."""
        self.age_steps += ONE
        for d in deliveries:
            sig = d.topic(TOPIC_PRICE)
            if len(sig.recipients):
                r = np.asarray(sig.recipients, dtype=np.int64)
                rows = np.asarray(sig.payloads)
                if self.reorder:   # newest round last per agent (put: last wins),
                    # not the last delivered: a newer round may overtake an older one
                    order = np.argsort(rows["round"], kind="stable")
                    r, rows = r[order], rows[order]
                # take: the same gather as round[r], several times faster on the
                # packed (unaligned) record field at 10 000 agents
                newer = rows["round"] >= self.round.take(r)
                if fast_count_nonzero(newer) < newer.size:
                    r, rows = r[newer], rows[newer]
                if rows.dtype == SIGNAL_DTYPE:
                    self._void.put(r, rows.view(SIGNAL_VOID))   # = [r] =, faster
                else:
                    self.record[r] = rows
                self.age_steps[r] = ZERO

    def receive_emergency(self, deliveries: tuple[Delivery, ...]) -> None:
        """The emergency broadcast's copies delivered this step (``grid/emergency``): which
        agents it reached, and when (the earliest arrival per agent is kept)."""
        for d in deliveries:
            batch = d.topic(TOPIC_EMERGENCY)
            if len(batch.recipients):
                r = np.asarray(batch.recipients, dtype=np.int64)
                t = np.asarray(batch.delivery_times_s, dtype=float)
                self.emergency_seen[r] = True
                np.minimum.at(self.emergency_arrival_s, r, t)
