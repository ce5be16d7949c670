"""The signed-contract flow of one episode (DESIGN §2, §5): issue → bus → receive →
verify → dispatch or activate, and what the operator and the agents learn on the way.

:class:`ContractFlow` holds the contracts between the market and dispatch: it issues
the round's awards as signed contracts (:meth:`ContractFlow.issue`, through the ledger;
an ``adversary`` may tamper with them on the bus), publishes them on the CONTROL lane as
references (``refs``), counts the ones the bus refuses or drops (:meth:`ContractFlow.lose`),
receives the delivered ones (:meth:`ContractFlow.receive`: reserve contracts are
authenticated and held in the :class:`~gridswarm_env.reserve.ReserveBook`), files them
for the next window and the agents' schedules (:meth:`ContractFlow.file_arrived`),
verifies the energy contracts at dispatch (:meth:`ContractFlow.verify_pending`), and at
their delivery those that reached their holders inside their window after it began
(:meth:`ContractFlow.verify_joined`: they execute from then on), and activates held
reserve when the emergency broadcast has arrived (:meth:`ContractFlow.activate_reserve`).
It also records the first DER response to the trip (:meth:`ContractFlow.note_response`).

The numbers it hands on (per agent ``i``, contracts ``c`` verified for the window)::

    dispatched power    C_i = Σ_c C_c            price  π_i = Σ_c C_c·π_c / C_i
    accepted share      |A_i| / |B_i|  (A: awarded by the round's contracts received,
                                        B: the agent's bid; 0 where B = 0)
    reserve activation  t = max(broadcast arrival, contract delivery, window start)
    contract joined     acts from its delivery t_a to the window's end, so adds
                        C_c·(end − t_a)/(end − start) to the step's mean power C_i, and
                        π_i weights each contract by that energy (joined_price)

It does not clear the market (:meth:`GridOperator.clear
<gridswarm_env.grid_operator.GridOperator.clear>`), move the clock or dispatch anything:
the environment (:mod:`gridswarm_env.env`) calls it in the step's order with what the bus
delivered and when, and reads back the power and prices to dispatch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from gridswarm_env import market
from gridswarm_env.bus import AgentMessageBus, Delivery, Lane
from gridswarm_env.fleet import fast_count_nonzero
from gridswarm_env.messages import OPERATOR, TOPIC_CONTRACTS
from gridswarm_env.metrics import MetricsAccumulator
from gridswarm_env.reserve import ReserveBook
from gridswarm_env.trust import (
    AuditLog,
    Contract,
    ContractLedger,
    SignedContract,
    _describe_id,
    audit_contract_id,
)

if TYPE_CHECKING:   # typing only: no module below env.py imports it at run time
    from gridswarm_env.env import GridSwarmEnv

#: the environment's ``adversary`` hook: ``(env, signed, recipients) -> (signed,
#: recipients)``, what it returns checked by :func:`check_tampered`
Adversary = Callable[["GridSwarmEnv", list[SignedContract], list[int]], Any]


def add_by_owner(target: np.ndarray, owners: list[int], values: list[float],
                 distinct: bool | None = None) -> np.ndarray:
    """``target[owners[i]] += values[i]`` in order (``np.add.at``); one fancy ``+=`` when
    the owners are distinct (the same result, faster; ``distinct`` says so when the
    caller knows). Returns the owners as an array."""
    idx = np.array(owners, dtype=np.intp)
    vals = np.array(values, dtype=float)
    if distinct is None:
        distinct = len(set(owners)) == len(owners)
    if distinct:
        target[idx] += vals
    else:
        np.add.at(target, idx, vals)
    return idx


class ContractFlow:
    """The signed contracts of one episode on their way from the market to dispatch (see
    the module docstring).

    :ivar refs: bus payload reference -> ``(signed contract, owner)``, for contracts
        published and not yet delivered, refused or dropped.
    :ivar pending: ``(signed energy contract, owner)`` received, for the next window
        (verified at its dispatch).
    :ivar own_copies: contract id -> the ``(signed, owner)`` item of an energy contract
        that :meth:`issue` published as the ledger issued it (the object the ledger
        returned, to the holder it was awarded to; with an ``adversary``, the first such
        item of the batch it returned), while that copy is on the bus or pending. Dispatch
        vouches for these items only (``ContractLedger.verify_batch``'s ``own_copies``):
        one that the bus delivered inside its window, after it began, executes from its
        delivery (:meth:`verify_joined`), one delivered at or after its window's end is
        rejected as ``late``; any other copy of the contract (a replay, a duplicate, one
        withheld and sent again later) delivered after its window began is ``expired``.
    :ivar arrived_s: when each of this step's deliveries (:meth:`receive`) reached its
        holder, kept when one of them was published in an earlier step (else None), for
        :meth:`verify_joined`: its delivery time, or for one the bus deferred (due by the
        bus's previous delivery, held back by the lane's capacity), the delivery that
        handed it out.
    :ivar lost: contracts the bus refused (CONTROL lane full) or dropped (obsolete).
    :ivar events: the step's event list (the environment's ``events``, set each step).
    :ivar trip_round: the first round whose request covers the trip (set by the
        environment when the operator learns of it), None before.
    :ivar awaiting_energy_response: no DER response by energy to the trip yet.
    :ivar would_response_s: shadow mode: the first would-be response, s (None before).
    """

    def __init__(self, names: list[str], ledger: ContractLedger, bus: AgentMessageBus,
                 book: ReserveBook, audit_log: AuditLog, metrics: MetricsAccumulator, *,
                 shadow: bool, reserve_traded: bool, contingency_mw: float,
                 ramp_mw_per_s: np.ndarray) -> None:
        self.names, self.n_agents = names, len(names)
        self.ledger, self.bus, self.book = ledger, bus, book
        self.audit_log, self.metrics = audit_log, metrics
        self.shadow = shadow
        self.reserve_traded = reserve_traded   # a reserve target: reserve rounds are held
        self.contingency_mw = contingency_mw
        self.ramp_mw_per_s = ramp_mw_per_s     # inf: no ramp limit
        self.refs: dict[int, tuple[SignedContract, int]] = {}
        self.next_ref = 0
        self.step_first_ref = 0   # references below it were published in earlier steps
        self.last_delivery_s = -np.inf   # the time of the last delivery received
        # contracts delivered this step: (signed, owner), in order
        self.arrived: list[tuple[SignedContract, int]] = []
        self.arrived_reserve = False   # a reserve contract among them
        self.arrived_s: list[float] | None = None   # when they reached their holders
        self.pending: list[tuple[SignedContract, int]] = []
        self.own_copies: dict[str, tuple[SignedContract, int]] = {}
        self.lost = 0
        self.events: list[str] = []
        self.trip_round: int | None = None
        self.awaiting_energy_response = False
        self.would_response_s: float | None = None

    # ------------------------------------------------------------------ issue
    def issue(self, result: market.ClearingResult, round_index: int, window_start_s: float,
              window_end_s: float, is_reserve: bool, now_s: float,
              adversary: Adversary | None = None, env: GridSwarmEnv | None = None) -> None:
        """Sign the round's awards (``result``, at least one accepted) and publish them to
        their holders at ``now_s`` (gate closure); a reserve award enters the operator's
        books as awarded. An ``adversary`` (the environment's ``adversary`` as it is at
        this call) may tamper with them on the bus: it is called as ``adversary(env,
        signed, recipients)``; both are passed per call, so the flow holds neither (no
        reference cycle, no copy that a later ``env.adversary = ...`` would leave stale)."""
        n = self.n_agents
        idx = result.accepted_indices
        signed = self.ledger.issue(round_index, idx, result.accepted_mw[idx],
                                   result.clearing_price_per_mwh, window_start_s, window_end_s,
                                   product="reserve" if is_reserve else "energy")
        owners = idx.tolist()
        recipients = idx
        issued, issued_owners = signed, owners
        if is_reserve:   # the operator's books, per contract, as awarded
            self.book.award(signed, owners)
        if adversary is not None:
            tampered = adversary(env, signed, owners)
            if not isinstance(tampered, tuple) or len(tampered) != 2:
                raise TypeError(f"adversary returned {type(tampered).__name__}: expected "
                                "(signed contracts, recipients), as it was given")
            signed, owners = tampered
            check_tampered(signed, owners, n)
            recipients = np.asarray(owners, dtype=np.int64)
        if is_reserve:   # copies on their way (an adversary may add or drop some)
            self.book.sent(signed)
        m, first = len(signed), self.next_ref
        self.next_ref = first + m
        items = list(zip(signed, owners, strict=True))
        self.refs.update(zip(range(first, first + m), items, strict=True))
        if not is_reserve:
            self._note_own_copies(issued, issued_owners, items, adversary is None)
        dropped_before = self.bus.dropped_count(Lane.CONTROL)
        self.bus.publish_batch(TOPIC_CONTRACTS, np.arange(first, first + m, dtype=np.int64),
                               lane=Lane.CONTROL, senders=OPERATOR, recipients=recipients,
                               now_s=now_s)
        if is_reserve:
            self.book.awarded_mw[idx] += result.accepted_mw[idx]
        refused = self.bus.dropped_count(Lane.CONTROL) - dropped_before
        if refused:   # tail drop: the batch's last `refused` contracts never left
            self.lose(range(first + m - refused, first + m), now_s)
        self.events.append(
            f"{idx.size} {'agent reaches' if idx.size == 1 else 'agents reach'} agreement on "
            f"{'reserve' if is_reserve else 'energy'}: "
            f"{abs(result.accepted_total_mw):.2f} MW at "
            f"${result.clearing_price_per_mwh:.0f}/MWh")

    def _note_own_copies(self, issued: list[SignedContract], owners: list[int],
                         items: list[tuple[SignedContract, int]], untouched: bool) -> None:
        """Remember which of the ``items`` put on the bus are the operator's own copies
        of the energy contracts just ``issued`` to ``owners`` (:attr:`own_copies`):
        every item when no adversary touched the batch (``untouched``), else the first
        item holding the very object issued, for the holder it was awarded to. A copy
        the adversary adds, redirects or withholds and sends in a later batch is none."""
        own = self.own_copies
        if untouched:
            own.update(zip([c.contract.contract_id for c in issued], items, strict=True))
            return
        awarded = {id(c): (c, o) for c, o in zip(issued, owners, strict=True)}
        for item in items:
            c, o = item
            hit = awarded.get(id(c))
            if hit is not None and hit[0] is c and hit[1] == o:
                own[c.contract.contract_id] = item
                del awarded[id(c)]   # a further copy of it in the batch is not the own one

    def lose(self, refs: Iterable[int], now_s: float, reason: str = "bus_refused") -> None:
        """Contracts the bus refused (``bus_refused``: CONTROL lane past its queue limit) or
        dropped as obsolete (``bus_expired``: deferred longer than one agent step): the
        operator, told so by the bus, counts them as lost, audits them and withdraws any
        reserve award among them; they are never dispatched."""
        lost = [self.refs.pop(ref) for ref in refs]
        self.lost += len(lost)
        book = self.book
        own = self.own_copies
        for item in lost:
            signed = item[0]
            if signed.contract.product == "reserve":
                book.copy_lost(signed.contract.contract_id)
            elif own.get(signed.contract.contract_id) is item:
                del own[signed.contract.contract_id]
        # ids as the ledger's rejections list them (an adversary's may hold commas)
        self.audit_log.append("contract_lost", now_s=now_s, count=len(lost), reason=reason,
                              contract_ids=[audit_contract_id(c.contract.contract_id)
                                            for c, _ in lost])
        what = ("refused by the bus (control lane full)" if reason == "bus_refused" else
                "dropped by the bus (deferred past one step, obsolete)")
        self.events.append(f"{len(lost)} contract{'' if len(lost) == 1 else 's'} {what}")

    # ------------------------------------------------------------------ receive
    def receive(self, deliveries: tuple[Delivery, ...], now_s: float) -> None:
        """Contracts delivered this step, in delivery order, kept for :meth:`file_arrived`
        (and :meth:`verify_joined`: when some contract delivered was published in an
        earlier step, so may have reached its holder after its window began, their delivery
        times are kept too).

        A reserve contract is authenticated on receipt (form, identities, both
        signatures, visible replays: :meth:`ContractLedger.authenticate`). An authentic
        one is *held* from now on (standing reserve, paid for availability once its
        window opens, see :meth:`ReserveBook.rate_at`); one that fails is rejected
        (counted, audited) and never earns anything; its award is withdrawn once no copy of
        it is held or still on the bus (:meth:`ReserveBook.copy_failed`). A reserve award whose contract
        never arrives is never held.
        Energy contracts are verified at dispatch. Without a reserve contract among the
        deliveries (the usual step) they are all kept as delivered.
        """
        refs = self.refs
        arrived = []
        batches = []   # (contracts delivered, the previous delivery's time, this one's)
        previous_s = self.last_delivery_s
        for d in deliveries:
            con = d.topic(TOPIC_CONTRACTS)
            if len(con.recipients):
                batches.append((con, previous_s, d.now_s))
            previous_s = d.now_s
        self.last_delivery_s = previous_s
        # a contract published in an earlier step (a reference below the mark) may have
        # arrived after its window began (verify_joined): then the arrival times are kept
        mark = self.step_first_ref
        self.step_first_ref = self.next_ref   # the next step's mark
        maybe_late = any(con.payloads.min() < mark for con, _, _ in batches)
        keep_times = self.reserve_traded or maybe_late
        # when each reached its holder, kept where reserve can be traded or one may be
        # late: its delivery time, but one due by the previous delivery waited for the
        # lane's capacity (deferred) and reached its holder only at this delivery
        arrival_s: list[float] = []
        for con, previous_s, now in batches:
            arrived += map(refs.pop, con.payloads.tolist())
            if keep_times:
                due = con.delivery_times_s
                arrival_s.extend(np.where(due > previous_s, due, now).tolist())
        self.arrived_s = arrival_s if maybe_late else None
        if not arrived or "reserve" not in [c.contract.product for c, _ in arrived]:
            self.arrived, self.arrived_reserve = arrived, False
            return
        kept = []
        kept_s: list[float] = []
        names = self.names
        book = self.book
        held = False
        for k, item in enumerate(arrived):
            signed, owner = item
            if signed.contract.product == "reserve":
                cid = signed.contract.contract_id
                left = book.copy_done(cid)
                reason = self.ledger.authenticate(signed, now_s, expected_agent=names[owner])
                if reason is not None:
                    self.note_rejections([signed], [reason])
                    book.copy_failed(cid, left)
                    continue
                book.hold(signed, owner, arrival_s[k])
                held = True
            kept.append(item)
            kept_s.append(arrival_s[k])
        if held:
            book.refresh_standing()
        self.arrived, self.arrived_reserve = kept, held   # held: a reserve contract kept
        if self.arrived_s is not None:
            self.arrived_s = kept_s

    def file_arrived(self, cleared_round: int, now_s: float, bid_mw: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """File this step's deliveries (see :meth:`receive`): held reserve waits for the
        emergency broadcast, energy contracts go to dispatch (``pending``).

        :return: ``(awarded, accepted_share)``: per agent, the contracted energy power of
            the next window that reached it (one copy of each contract that passes the
            receipt check, :meth:`ContractLedger.screen_batch` at ``now_s``), and the
            share of its last bid (``bid_mw``) awarded by the contracts of round
            ``cleared_round`` it received (:func:`~gridswarm_env.market.accepted_share`).
        """
        n = self.n_agents
        awarded = np.zeros(n)
        received = np.zeros(n)   # awarded by this round's contracts received
        items = self.arrived   # this step's deliveries, see receive
        if items:
            energy, reserve = items, []
            if self.arrived_reserve:
                energy = [it for it in items if it[0].contract.product != "reserve"]
                reserve = [it for it in items if it[0].contract.product == "reserve"]
                self.book.contracts.extend(reserve)
            if energy:
                # every copy goes to dispatch, which decides (a rejection is counted and
                # audited there, once); the schedule the agent observes and the kernel
                # plans with counts one copy of each contract that passes the receipt check
                # (signatures, identities, visible replays, window), so a forged or
                # misdelivered contract never shapes an agent's limits
                self.pending.extend(energy)
                names = self.names
                owners = [o for _, o in energy]
                reasons = self.ledger.screen_batch([c for c, _ in energy], now_s,
                                                   [names[o] for o in owners])
                terms = [c.contract for c, _ in energy]
                ids = {c.contract_id for c in terms}
                if len(ids) < len(energy) or reasons.count(None) < len(reasons):
                    first = []   # one authentic copy of each (a duplicate: the first)
                    for it, reason in zip(energy, reasons, strict=True):
                        cid = it[0].contract.contract_id
                        if reason is None and cid in ids:
                            ids.remove(cid)
                            first.append(it)
                    energy = first
                    owners = [o for _, o in energy]
                    terms = [c.contract for c, _ in energy]
                if energy:
                    add_by_owner(awarded, owners, [c.power_mw for c in terms])
            # the award of the round just cleared, as far as its contracts reached their
            # holders (authentic reserve, screened energy: one copy of each)
            if (not reserve and energy
                    and [c.round_index for c in terms].count(cleared_round) == len(terms)):
                # the usual step: every contract kept is energy of that round, so the sum
                # is the one just made (the same additions in the same order)
                received = awarded.copy()
            else:
                mine = [it for part in (energy, reserve) for it in part
                        if it[0].contract.round_index == cleared_round]
                if mine:
                    add_by_owner(received, [o for _, o in mine],
                                 [c.contract.power_mw for c, _ in mine])
            self.arrived = []
        # an agent knows its own bid and what reached it, not the operator's books (with
        # nothing received, |0| / |B| is +0.0 everywhere: the zeros as they are)
        return awarded, (market.accepted_share(received, bid_mw) if items else received)

    # ------------------------------------------------------------------ dispatch
    def verify_pending(self, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Verify the energy contracts held for the window starting now; rejected → 0 MW.
        One the bus delivered after its window ended fails as ``late`` if it is the
        operator's own copy (:attr:`own_copies`), else as ``expired`` (as does any other
        copy delivered after its window began; the own copy delivered inside its window
        was verified at its delivery, :meth:`verify_joined`).

        The power and price dispatched are read from the verified contract objects
        (immutable), in delivery order; an agent holding several contracts gets their
        summed power ``C = Σ C_i`` at their power-weighted price ``Σ C_i·π_i / C``, so full
        delivery is paid ``Σ C_i·π_i`` (each contract at its own price).
        """
        n = self.n_agents
        mw, price = np.zeros(n), np.zeros(n)
        pending = self.pending
        if pending:
            signed = [c for c, _ in pending]
            owners = [o for _, o in pending]
            names = self.names
            own = self.own_copies
            # the items dispatch vouches for: the operator's own copies (see own_copies);
            # a late one is rejected as late, any other as expired
            vouched = [own.get(c.contract.contract_id) is it for c, it in zip(signed, pending,
                                                                               strict=True)]
            ok, reasons = self.ledger.verify_batch(signed, now_s, [names[o] for o in owners],
                                                   own_copies=vouched)
            # an own copy is presented once; a contract verified through any copy of it
            # has executed, so a later own copy of it would be no honest lateness either
            for c, mine, good in zip(signed, vouched, ok.tolist(), strict=True):
                if mine or good:
                    own.pop(c.contract.contract_id, None)
            n_ok = int(fast_count_nonzero(ok))
            if n_ok < len(signed):
                self.note_rejections(signed, reasons)
                keep = ok.nonzero()[0].tolist()
                signed, owners = [signed[g] for g in keep], [owners[g] for g in keep]
            if signed:
                terms = [c.contract for c in signed]
                distinct = len(set(owners)) == len(owners)
                idx = add_by_owner(mw, owners, [c.power_mw for c in terms], distinct)
                if self.awaiting_energy_response:
                    self._energy_response(terms, now_s)
                prices = np.array([c.price_per_mwh for c in terms], dtype=float)
                if distinct:
                    price[idx] = prices
                else:   # several contracts for one agent: the power-weighted price
                    value = np.zeros(n)
                    np.add.at(value, idx, np.array([c.power_mw for c in terms]) * prices)
                    np.divide(value, mw, out=price, where=mw != 0.0)
        self.pending = []
        return mw, price

    def verify_joined(self, step_start_s: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Verify the operator's own copies of energy contracts that reached their holders
        this step inside their window, after it began (``window_start_s < t_a <
        window_end_s``, ``t_a`` from :attr:`arrived_s`: the delivery time, or the delivery
        that handed out a deferred one): each at ``t_a``, in that order, so one that
        verifies executes from then until the step's end
        (:func:`~gridswarm_env.dispatch.execute`'s ``joined``), paid for what it delivers.
        Call after :meth:`verify_pending` (``step_start_s``: the step's start) and before
        :meth:`file_arrived`, which no longer sees them.

        Any other copy delivered after its window began (a replay, a duplicate, one an
        attacker withheld and sent later) goes on to dispatch at the next step, where its
        window has ended (``expired``), as does the own copy of a contract verified through
        another copy first; an own copy delivered at or after its window's end is rejected
        there as ``late``.

        :return: ``(owners, MW, delivery s, price $/MWh)`` of the contracts verified, in
            delivery order, or None when there is none.
        """
        times = self.arrived_s
        if times is None:
            return None
        self.arrived_s = None
        own = self.own_copies
        items = self.arrived
        joined = [k for k, (item, at) in enumerate(zip(items, times, strict=True))
                  if own.get(item[0].contract.contract_id) is item
                  and item[0].contract.product == "energy"
                  and step_start_s <= item[0].contract.window_start_s < at
                  < item[0].contract.window_end_s]
        if not joined:
            return None
        order = sorted(joined, key=times.__getitem__)   # stable: delivery order at a tie
        names = self.names
        rows: list[tuple[int, float, float, float]] = []
        for k in order:
            signed, owner = items[k]
            at = times[k]
            del own[signed.contract.contract_id]   # presented once (see verify_pending)
            ok, reasons = self.ledger.verify_batch([signed], at, [names[owner]],
                                                   own_copies=[True])
            if not ok[0]:
                self.note_rejections([signed], reasons)
                continue
            c = signed.contract
            rows.append((owner, c.power_mw, at, c.price_per_mwh))
            if self.awaiting_energy_response:
                self._energy_response([c], at)
        gone = set(joined)
        self.arrived = [item for k, item in enumerate(items) if k not in gone]
        if not rows:
            return None
        owners, mw, at_s, price = zip(*rows, strict=True)
        return (np.array(owners, dtype=np.intp), np.array(mw, dtype=float),
                np.array(at_s, dtype=float), np.array(price, dtype=float))

    def _energy_response(self, terms: list[Contract], now_s: float) -> None:
        """A DER response by energy: the start of delivery (``now_s``) of the first verified
        energy contract awarded on a request that covers the trip, in the direction of
        the lost power (the metrics keep the earlier of it and the first reserve
        activation; without a reserve target it is the only response)."""
        first = self.trip_round
        lost = self.contingency_mw
        if any(c.round_index >= first and c.power_mw * lost > 0.0 for c in terms):
            self.note_response(now_s)
            self.awaiting_energy_response = False

    def note_response(self, at_s: float) -> None:
        """Record a DER response at ``at_s`` (the metrics keep the earliest; in shadow
        mode, where nothing responds, the would-be latency's first one)."""
        if self.shadow:
            if self.would_response_s is None:
                self.would_response_s = at_s
        else:
            self.metrics.record_response(at_s)

    def note_rejections(self, signed: list[SignedContract], reasons: list[Any]) -> None:
        """One event per contract rejected (``reasons[k]`` not None: a
        :class:`~gridswarm_env.trust.RejectReason` or its text)."""
        for c, r in zip(signed, reasons, strict=True):
            if r is not None:
                self.events.append(f"contract {_describe_id(c)} rejected: "
                                   f"{getattr(r, 'value', r)}")

    def activate_reserve(self, arrival_s: np.ndarray, step_end_s: float, detected: bool
                         ) -> None:
        """Holders of reserve contracts activate them when the emergency broadcast arrives
        (``arrival_s``: per agent, when it reached it; ``detected``: the operator has
        broadcast it), up to ``step_end_s``.

        A holder activates a contract when both the broadcast and the contract have
        reached it and its delivery window has opened: at max(broadcast arrival, contract
        delivery, window start), so a contract that congestion delayed past the broadcast
        does not act before it arrived, and one cleared in a reserve round announced
        before the operator knew of the trip acts from its own window, not before. Each is
        verified at that time; one that fails dispatches nothing. ``activation_s`` keeps
        each holder's first activation; a contract the holder activates later in the
        step is passed to dispatch with its own time (``ReserveBook.late``), not the first.
        """
        book = self.book
        book.late = None
        if not book.contracts or not detected:
            return   # no emergency broadcast yet: no arrival time is finite
        due = book.take_due(arrival_s, step_end_s)
        if not due:
            return
        for c, o, at in due:
            reason = self.ledger.verify(c, at, expected_agent=self.names[o])
            if reason is None:
                book.activate(o, c.contract.power_mw, at)
                if not self.shadow:
                    self.metrics.record_activation(at, c.contract.power_mw, o,
                                                   float(self.ramp_mw_per_s[o]))
            else:   # an invalid reserve contract dispatches nothing and earns nothing more
                self.note_rejections([c], [reason])
                book.withdraw(o, c.contract.power_mw, held_id=c.contract.contract_id)
        book.end_activation()
        active = book.activation_s[np.isfinite(book.activation_s)]
        if active.size:
            self.note_response(float(active.min()))


def contract_power_at(contract_mw: np.ndarray,
                      joined: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                      at_s: float) -> np.ndarray:
    """Per agent, the energy contract power acting at ``at_s`` (s), MW: ``contract_mw`` (the
    step's on-time contracts, MW) plus the ``joined`` contracts' MW
    (:meth:`ContractFlow.verify_joined`) delivered by then, ``C_i(t) = C_i + Σ_{l: t_l <= t}
    C_l``."""
    owners, mw, delivered_s, _price = joined
    power = contract_mw.copy()
    by_then = delivered_s <= at_s
    np.add.at(power, owners[by_then], mw[by_then])
    return power


def joined_price(contract_mw: np.ndarray, price_per_mwh: np.ndarray,
                 joined: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                 share: np.ndarray) -> np.ndarray:
    """Per agent, the price, $/MWh, of its energy contracts over a step in which some
    (``joined``, :meth:`ContractFlow.verify_joined`) reached it after the step began
    (``share``: the share of the step each of those acts, after its delivery, 0..1):
    weighted by the energy each is contracted for this step, ``Σ_c C_c·s_c·π_c / Σ_c
    C_c·s_c`` (C MW, π $/MWh; ``s_c`` = 1 for a contract on time, ``contract_mw`` at
    ``price_per_mwh``), so full delivery of what each contract asks for this step is paid
    ``Σ_c C_c·s_c·π_c·h`` $ (h = dt_s/3600); 0 where that sum is 0."""
    owners, mw, _delivered_s, prices = joined
    weight = contract_mw.copy()
    value = contract_mw * price_per_mwh
    energy = mw * share
    np.add.at(weight, owners, energy)
    np.add.at(value, owners, energy * prices)
    return np.divide(value, weight, out=np.zeros_like(value), where=weight != 0.0)


def check_tampered(signed: Any, owners: Any, n_agents: int) -> None:
    """What an ``adversary`` put on the bus: signed contracts only (a :class:`SignedContract`
    holding a :class:`Contract`, exact classes, as the ledger's checks require), one
    recipient each. An attacker on the bus sends messages in the contract format, which
    the operator and dispatch then screen; any other object would be read by the
    environment before the ledger's checks (its attributes may run code).

    :raises TypeError: naming the position and the type or recipient found (a recipient
        is an agent index, an integer from 0 to ``n_agents - 1``).
    """
    if not isinstance(signed, list) or not isinstance(owners, (list, tuple, np.ndarray)):
        raise TypeError(f"adversary returned ({type(signed).__name__}, "
                        f"{type(owners).__name__}): expected (list of SignedContract, "
                        "recipients), as it was given")
    for k, item in enumerate(signed):
        if type(item) is not SignedContract or type(item.contract) is not Contract:
            inner = (f" holding a {type(item.contract).__name__}"
                     if type(item) is SignedContract else "")
            raise TypeError(
                f"adversary returned a {type(item).__name__}{inner} at position {k}: an "
                "attacker on the bus sends signed contracts only (a SignedContract holding "
                "a Contract, exact classes; forge one with dataclasses.replace or "
                "trust.Adversary)")
    if len(owners) != len(signed):
        raise TypeError(f"adversary returned {len(signed)} contract(s) and {len(owners)} "
                        "recipient(s): expected one recipient per contract")
    for k, owner in enumerate(owners):
        if (isinstance(owner, bool) or not isinstance(owner, (int, np.integer))
                or not 0 <= owner < n_agents):
            raise TypeError(f"adversary returned recipient {owner!r} at position {k}: "
                            f"expected an agent index, an integer from 0 to {n_agents - 1}")
