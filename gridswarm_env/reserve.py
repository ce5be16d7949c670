"""The operator's reserve-contract books: awarded, held, activated and paid reserve.

A reserve round's awards become contracts that travel to their holders over the bus
(possibly several copies of one, possibly none). :class:`ReserveBook` keeps, per agent
and per contract, what the operator counts on and pays for:

- *awarded* (``awarded_mw``): the operator's books, as awarded; reserve rounds are sized
  by it. An award leaves them when no copy of its contract is held or still on its way
  (:meth:`ReserveBook.copy_failed`), or when the held contract fails at activation.
- *held* (``held_mw``, ``terms``): contracts received and authenticated. They earn
  availability payments from their window's start, each at its own clearing price
  (:meth:`ReserveBook.rate_at`), and wait in ``contracts`` for the emergency broadcast.
- *active* (``active_mw``, ``activation_s``): held contracts verified and activated
  (:meth:`ReserveBook.take_due`, :meth:`ReserveBook.activate`).
- *standing* (``standing_mw``): max(held, active), what the kernel keeps free, the
  observation shows and the operator counts on after the trip.

The books do not read the bus, the ledger or the clock: the environment
(:mod:`gridswarm_env.env`) passes what arrived, what verified and when. Contracts are
read through ``signed.contract`` (``contract_id``, ``power_mw``, ``price_per_mwh``,
``window_start_s``), as :class:`~gridswarm_env.trust.SignedContract` holds them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class ReserveBook:
    """Reserve contracts of one episode over ``n_agents`` agents (see the module docstring).

    Arrays are over agents, shape ``(n_agents,)``, written in place, except
    ``standing_mw`` (a new array at each :meth:`refresh_standing`).

    :ivar awarded_mw: reserve awarded per agent (the operator's books).
    :ivar held_mw: reserve under contracts received and authenticated.
    :ivar active_mw: reserve verified and activated (the environment's ``reserve_mw``).
    :ivar activation_s: each agent's first reserve activation (``inf`` before it).
    :ivar standing_mw: max(held, active), refreshed on every change.
    :ivar contracts: ``(signed contract, owner)`` held and not yet activated.
    :ivar late: reserve an agent activated this step after its first activation (a
        contract that reached it later): ``(owners, MW, activation s)`` arrays, part of
        ``active_mw``; ``None`` when there is none (the environment clears it each step).
    :ivar terms: held contracts, id -> (owner, MW, $/MWh, window start s).
    :ivar awards: awards not yet held or withdrawn, id -> (owner, MW).
    :ivar copies: copies of each awarded id still on the bus.
    :ivar received_s: held id -> delivery time, s (until it activates).
    """

    __slots__ = ("n_agents", "awarded_mw", "held_mw", "active_mw", "activation_s",
                 "standing_mw", "contracts", "late", "terms", "awards", "copies",
                 "received_s", "_rate", "_rate_until", "_late_rows")

    def __init__(self, n_agents: int) -> None:
        z = np.zeros(n_agents)
        self.n_agents = n_agents
        self.awarded_mw = z.copy()
        self.held_mw = z.copy()
        self.active_mw = z.copy()
        self.activation_s = np.full(n_agents, np.inf)
        self.standing_mw = z.copy()
        self.contracts: list = []
        self.late: tuple | None = None
        self.terms: dict[str, tuple[int, float, float, float]] = {}
        self.awards: dict[str, tuple[int, float]] = {}
        self.copies: dict[str, int] = {}
        self.received_s: dict[str, float] = {}
        self._rate = z.copy()          # Σ MW·price of the paying contracts, $/h
        self._rate_until = -math.inf   # the rate is valid while t0 < this
        self._late_rows: list[tuple[int, float, float]] = []

    # ------------------------------------------------------------------ awards
    def award(self, signed: list, owners: list[int]) -> None:
        """The operator's books, per contract, as awarded (before any copy is sent)."""
        awards = self.awards
        for s, o in zip(signed, owners, strict=True):
            awards[s.contract.contract_id] = (o, s.contract.power_mw)

    def sent(self, signed: list) -> None:
        """Copies of reserve contracts put on the bus (an adversary may add or drop some)."""
        copies = self.copies
        for s in signed:
            cid = s.contract.contract_id
            copies[cid] = copies.get(cid, 0) + 1

    def in_flight_mw(self) -> np.ndarray | None:
        """Reserve per agent under awards neither held nor withdrawn whose contract has a
        copy still on the bus: it may yet reach its holder and activate on top of what
        the holder was awarded meanwhile (latencies beyond ``dt_s − gate_s``). ``None``
        when there is none (every award received: the default bus)."""
        copies = self.copies   # only ids with a copy left (copy_done pops the others)
        if not copies:   # the usual step: nothing on the bus
            return None
        rows = [ow for cid, ow in self.awards.items() if copies.get(cid, 0) > 0]
        if not rows:
            return None
        flying = np.zeros(self.n_agents)
        for owner, power_mw in rows:
            flying[owner] += power_mw
        return flying

    def refresh_standing(self) -> None:
        """Recompute the standing reserve after a receipt, withdrawal or activation.

        Standing reserve = max(held, activated): what the agent holds under a contract it
        received and authenticated. It earns availability payments, is kept free by the
        kernel, is in the observation and is what the operator counts on after the event;
        the operator sizes reserve rounds by its awards (``awarded_mw``)."""
        self.standing_mw = np.maximum(self.held_mw, self.active_mw)

    def withdraw(self, owner: int, power_mw: float, *, held_id: str | None = None) -> None:
        """Take a reserve award off the books: one whose contract never arrived intact
        (see :meth:`copy_failed`), or, with ``held_id``, a held contract failing
        verification at activation. It no longer counts for the operator's reserve
        rounds nor earns availability payments."""
        awarded = self.awarded_mw
        awarded[owner] = max(awarded[owner] - power_mw, 0.0)
        if held_id is not None:
            self.held_mw[owner] = max(self.held_mw[owner] - power_mw, 0.0)
            self.terms.pop(held_id, None)
            self._rate_until = -math.inf
        self.refresh_standing()

    # ------------------------------------------------------------------ copies
    def copy_done(self, contract_id: str) -> int:
        """One copy of a reserve contract left the bus; the copies still on it."""
        left = self.copies.get(contract_id, 1) - 1
        if left > 0:
            self.copies[contract_id] = left
        else:
            self.copies.pop(contract_id, None)
        return left

    def copy_failed(self, contract_id: str, copies_left: int) -> None:
        """A copy was refused by the bus or failed on receipt: the award leaves the books
        only when no copy of it is held and none is still on its way (a forged copy
        ahead of the genuine one, or a lost duplicate of a held one, changes nothing)."""
        if copies_left == 0 and contract_id not in self.terms:
            award = self.awards.pop(contract_id, None)
            if award is not None:
                self.withdraw(*award)

    def copy_lost(self, contract_id: str) -> None:
        """A copy the bus refused or dropped: :meth:`copy_done`, then :meth:`copy_failed`."""
        self.copy_failed(contract_id, self.copy_done(contract_id))

    def hold(self, signed: Any, owner: int, received_s: float) -> None:
        """An authentic copy received at ``received_s``: the contract is held from now on
        (standing once :meth:`refresh_standing` runs, paid from its window's start).
        Does not refresh the standing reserve: call :meth:`refresh_standing` after a
        batch of receipts."""
        c = signed.contract
        cid = c.contract_id
        self.awards.pop(cid, None)   # on the books, now held
        self.received_s[cid] = received_s
        self.held_mw[owner] += c.power_mw
        self.terms[cid] = (owner, c.power_mw, c.price_per_mwh, c.window_start_s)
        self._rate_until = -math.inf

    # ------------------------------------------------------------------ payments
    def rate_at(self, t0_s: float) -> np.ndarray:
        """Availability payment rate per agent for the step starting at ``t0_s``, $/h:
        Σ over its held reserve contracts whose delivery window has started of
        MW × the contract's own clearing price (pay-as-clear per round). Recomputed only
        when the held set changes or a window opens (the array returned is the book's:
        read it, do not write it)."""
        if t0_s >= self._rate_until:
            rate = np.zeros(self.n_agents)
            until = math.inf
            for owner, power_mw, price, start_s in self.terms.values():
                if start_s <= t0_s + 1e-9:
                    rate[owner] += power_mw * price
                else:
                    until = min(until, start_s)
            self._rate, self._rate_until = rate, until
        return self._rate

    # ------------------------------------------------------------------ activation
    def take_due(self, arrivals_s: np.ndarray, t1_s: float) -> list[tuple[Any, int, float]]:
        """Held contracts that activate before ``t1_s``, in activation order (ties in
        holding order), as ``(signed, owner, at)``; they leave ``contracts``.

        A holder activates a contract when both the emergency broadcast
        (``arrivals_s[owner]``) and the contract have reached it and its delivery window
        has opened: at max(broadcast arrival, contract delivery, window start)."""
        received = self.received_s
        when = {c.contract.contract_id: max(float(arrivals_s[o]), received[c.contract.contract_id],
                                            c.contract.window_start_s)
                for c, o in self.contracts}
        due = [(c, o) for c, o in self.contracts if when[c.contract.contract_id] < t1_s]
        if not due:
            return []
        due.sort(key=lambda co: when[co[0].contract.contract_id])
        for c, _o in due:
            del received[c.contract.contract_id]
        self.contracts = [co for co in self.contracts if when[co[0].contract.contract_id] >= t1_s]
        return [(c, o, when[c.contract.contract_id]) for c, o in due]

    def activate(self, owner: int, power_mw: float, at_s: float) -> None:
        """A due contract verified at ``at_s``: its reserve is active. An agent's first
        activation sets ``activation_s``; a later one is kept as a ``late`` row (taken
        in time order, never earlier). Call :meth:`end_activation` after the batch."""
        self.active_mw[owner] += power_mw
        if at_s > self.activation_s[owner]:
            self._late_rows.append((owner, power_mw, at_s))
        else:
            self.activation_s[owner] = at_s

    def end_activation(self) -> None:
        """After a batch of :meth:`activate` / :meth:`withdraw`: the ``late`` rows as
        arrays (when there are any) and the standing reserve."""
        if self._late_rows:
            o_late, mw_late, at_late = zip(*self._late_rows, strict=True)
            self.late = (np.array(o_late, dtype=np.int64), np.array(mw_late),
                         np.array(at_late))
            self._late_rows = []
        self.refresh_standing()
