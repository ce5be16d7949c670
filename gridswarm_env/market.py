"""Balancing market: the operator's request and price signal, merit-order clearing,
pay-as-clear, consensus, settlement and the agents' rewards.

Description
-----------
The operator requests ``request_mw`` of balancing power (**positive = shortage**, the
grid needs more injection; **negative = surplus**, it needs less). Every agent submits
one bid ``(power_mw, price_per_mwh)``. One sign convention everywhere: positive power
is injection into the grid (discharge, more generation, less charging).

Prices are **energy prices in $/MWh, signed** (as in real balancing energy markets,
e.g. the Nordic regulating power market and the ENTSO-E MARI platform, where upward
bids are activated in ascending and downward bids in descending price order):

* **Shortage** (``request_mw > 0``): bids with ``power_mw > 0`` are *offers to sell*
  injection at ``price`` or more. The operator buys the cheapest first (ascending
  price).
* **Surplus** (``request_mw < 0``): bids with ``power_mw < 0`` are *bids to absorb*;
  ``price`` is what the agent pays per MWh it absorbs, so ``−price`` is the
  compensation it asks (a negative price = the agent is paid to absorb). The operator
  accepts **the least compensation first**, i.e. the highest price first.

The marginal bid may be partly accepted (a part of at most 1e-12·|request| is a
floating-point crumb of the running sum and is not awarded). **Ties** at the marginal
price go by agent index (``tie_break="index"``, the default: the lower-numbered bids are
served first and the last one is partly accepted) or pro rata (``"pro_rata"``: every bid
at the marginal price gets the same share of its size, ``R/Σ_G|P_g|`` of the remainder
``R`` left after the cheaper bids, as markets that split ties at the clearing price do,
e.g. the EU day-ahead coupling's pro-rata curtailment of tied orders). **Pay-as-clear**: every
accepted bid settles at the uniform clearing price, the price of the marginal (last
accepted) bid — the highest accepted price in a shortage, the lowest in a surplus — so
no accepted agent is worse off than its own bid.

**Settlement** (what pays agents: the environment calls these every step; DESIGN §3).
One signed formula for both directions, per agent and step of ``h = dt_s/3600`` hours:
``payment = (π·sign(C)·d + ρ)·h`` $ (:func:`contract_payments_usd`, positive = paid to
the agent), ``d`` the contract power ``C`` actually delivered
(:func:`contract_delivery_mw`), ``π`` the contract's clearing price and ``ρ`` the
reserve availability rate; in a surplus at a negative price absorbers are paid, at a
positive price they pay for the energy they take. Contracted energy and activated
reserve not delivered are penalised (:func:`undelivered_penalty_usd`), each agent bears
its own true cost (:func:`cost_basis_mw`, :func:`own_cost_usd`), and
:func:`agent_rewards` assembles the reward with the shared frequency term
(:func:`grid_term_usd`). :func:`settlement` is the checked special case of full delivery
without reserve, ``π·P·dt_s/3600`` for a round's awards ``P``.

**Price band.** ``[price_floor_per_mwh, price_cap_per_mwh]`` is the market's
admissible price range (like an offer cap and floor): a bid priced outside it is
invalid and ignored in either direction. Economically the cap binds in a shortage (the
operator pays at most the cap per MWh) and the floor binds in a surplus (the operator
pays at most ``−floor`` compensation per MWh absorbed).

**Ignored bids**: wrong direction, zero power, NaN/inf power or price, masked out by
``eligible``, or priced outside the band.

**Reserve rounds** (the ``emergency`` scenario before its trip) clear with the same
function and a positive request, the reserve still to buy: ``power_mw > 0`` offers
upward reserve capacity, ``price`` is an *availability* price in $/MW per hour held
(numerically $/MWh), cheapest first, pay-as-clear. The environment pays it for every
step a held contract stands, whether or not it is activated (the ``ρ`` of
:func:`contract_payments_usd`). The energy an activated reserve contract delivers is not paid: an
availability-only product, like the European FCR (the US markets instead settle deployed
reserve energy at the real-time price). Bidders must price the expected activation into
the availability price: in the shipped ``emergency`` (heuristic, seeds 0-2, 100 and
1 000 agents) 100 MW of reserve clears at 80-90 $/MW-h, earns 262-295 $ and delivers
3.05 MWh (all the episode's balancing energy), whose true cost to its holders is ~210 $
(batteries 2.29 MWh at 40 + 30/0.949 $/MWh, EVs 0.76 MWh of deferred charging at 60
$/MWh); paying that energy at the scenario's 100 $/MWh cap would add ~305 $.

**The operator** (DESIGN §2, step 1) computes each round's request and product
(:func:`operator_request`), the fleet's flexibility in the request's direction
(:func:`fleet_flexibility`, :func:`downward_flexibility_mw`) and from them the price
signal (:func:`price_signal_per_mwh`): pure functions of what it knows, passed as arrays;
the environment gathers their inputs (PV forecasts from the bus) and publishes the result.

**Ties** at equal price are broken by agent index ascending (stable sort), so the
clearing is deterministic.

**Consensus**: a round reaches consensus when ``|accepted| >= consensus_share ·
|request|`` (relative tolerance 1e-12 for floating-point sums). When the offer is
short everything eligible is accepted, and consensus holds only if the offer still
covers the share. A round with ``|request_mw| <= deadband_mw`` accepts nothing and
counts as consensus.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gridswarm_env.config import TIE_BREAKS
from gridswarm_env.fleet import fast_count_nonzero
from gridswarm_env.scenarios import PRODUCT_ENERGY, PRODUCT_RESERVE

__all__ = [
    "ClearingResult",
    "clear_market",
    "downward_flexibility_mw",
    "fleet_flexibility",
    "neutral_price_per_mwh",
    "operator_request",
    "price_signal_per_mwh",
    "price_signal_unchecked",
    "settlement",
    "contract_delivery_mw",
    "contract_payments_usd",
    "undelivered_penalty_usd",
    "cost_basis_mw",
    "own_cost_usd",
    "grid_term_usd",
    "agent_rewards",
]

#: Relative tolerance of the consensus test (cumulative sums are not exact).
_CONSENSUS_RTOL = 1e-12
#: a partial award of at most this share of |request| is a floating-point crumb of the
#: running sum, not awarded
_CRUMB_RTOL = 1e-12
_SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, eq=False)
class ClearingResult:
    """Outcome of one balancing-market round (arrays are read-only).

    :param accepted_mw: (n,) accepted power per agent, signed like the request, 0 where
        not accepted.
    :param clearing_price_per_mwh: uniform price, the marginal accepted bid's price;
        NaN if nothing was accepted.
    :param request_mw: the operator's request (+ shortage, − surplus).
    :param offered_mw: total eligible power in the request's direction, signed like
        the request (0 inside the deadband's zero request).
    :param accepted_total_mw: ``sum(accepted_mw)``, signed.
    :param consensus: ``|accepted_total| >= consensus_share·|request|`` (True with
        nothing accepted when ``|request| <= deadband``).
    :param n_accepted: number of bids (partly) accepted, i.e. negotiations.
    """

    accepted_mw: np.ndarray
    clearing_price_per_mwh: float
    request_mw: float
    offered_mw: float
    accepted_total_mw: float
    consensus: bool
    n_accepted: int

    @property
    def accepted_indices(self) -> np.ndarray:
        """Agent indices with a (partly) accepted bid, ascending (one contract each)."""
        return self.accepted_mw.nonzero()[0]

    @property
    def coverage(self) -> float:
        """``|accepted_total| / |request|`` in [0, 1]; 1.0 for a zero request."""
        if self.request_mw == 0.0:
            return 1.0
        return abs(self.accepted_total_mw) / abs(self.request_mw)


def _as_float_vector(name: str, value: np.ndarray, n: int | None, *,
                     finite: bool = False) -> np.ndarray:
    """Return ``value`` as a 1-D float array of length ``n`` or raise ``ValueError``
    (naming ``name``): numbers only, no booleans or strings; all finite if ``finite``."""
    raw = np.asarray(value)
    if raw.dtype.kind not in "iuf":
        raise ValueError(f"{name} has dtype {raw.dtype}: must be an array of real numbers")
    arr = raw.astype(float, copy=False)
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        want = "(n,)" if n is None else f"({n},)"
        raise ValueError(f"{name} has shape {arr.shape}: must be {want}")
    if finite and not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r} is not allowed: must be finite")
    return arr


def _real(value: object) -> float:
    """``float(value)`` for a real number (not a bool; a 0-d int or float array counts),
    else NaN."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool | np.bool_):
        return float(value)
    return math.nan


def _check_finite(name: str, value: float, allowed: str,
                  ok: Callable[[float], bool] | None = None) -> float:
    """Return ``float(value)`` if it is a finite real number (not a bool) and passes ``ok``,
    else raise ``ValueError`` naming ``name`` and ``allowed``."""
    v = _real(value)
    if not (math.isfinite(v) and (ok is None or ok(v))):
        raise ValueError(f"{name}={value!r} is not allowed: must be {allowed}")
    return v


def clear_market(request_mw: float, bid_power_mw: np.ndarray, bid_price_per_mwh: np.ndarray,
                 eligible: np.ndarray | None = None, *, consensus_share: float = 0.95,
                 price_cap_per_mwh: float = np.inf, price_floor_per_mwh: float = -np.inf,
                 deadband_mw: float = 1e-6, check: bool = True,
                 tie_break: str = "index") -> ClearingResult:
    """Clear one balancing round by merit order with a partly accepted marginal bid.

    With the bids of the request's direction sorted by merit (price ascending for a
    shortage, descending for a surplus; ties by agent index) and ``|P|`` their power
    magnitudes, bid ``k`` gets ``min(|P_k|, max(0, |request| − Σ_{j<k} |P_j|))``.
    See the module docstring for the conventions.

    :param request_mw: operator request, MW (+ shortage, − surplus); finite.
    :param bid_power_mw: (n,) bid power per agent, MW (positive = injection).
    :param bid_price_per_mwh: (n,) bid price per agent, $/MWh (signed energy price).
    :param eligible: optional (n,) bool mask; False excludes the agent's bid (e.g. its
        bid did not arrive on the bus).
    :param consensus_share: share of the request that must be covered, in (0, 1].
    :param price_cap_per_mwh: highest admissible bid price, $/MWh.
    :param price_floor_per_mwh: lowest admissible bid price, $/MWh (<= cap).
    :param deadband_mw: requests with ``|request_mw| <= deadband_mw`` clear nothing.
    :param tie_break: ``"index"`` (default) or ``"pro_rata"``: how the bids at the
        marginal price share what is left of the request (module docstring).
    :param check: validate the arguments (``ValueError`` naming the bad one). The
        environment passes ``False``: its inputs are float64 arrays of one length, a bool
        mask and validated config values, so the checks cannot fail there. With
        ``check=True`` NaN/inf bids are ignored (arrays that are not real numbers, e.g.
        bool, str or None, and bool scalars are refused); with ``False`` the bids must be finite
        (the environment's come from finite level tables); wrong-direction and
        out-of-band bids are ignored either way.
    :return: the ``ClearingResult``.
    """
    if check:
        request = _check_finite("request_mw", request_mw, "a finite number")
        power = _as_float_vector("bid_power_mw", bid_power_mw, None)
        n = power.shape[0]
        price = _as_float_vector("bid_price_per_mwh", bid_price_per_mwh, n)
        if eligible is None:
            mask = np.ones(n, dtype=bool)
        else:
            mask = np.asarray(eligible)
            if mask.shape != (n,) or mask.dtype != bool:
                raise ValueError(f"eligible has shape {mask.shape} and dtype {mask.dtype}: "
                                 f"must be a bool array of shape ({n},)")
        share = _real(consensus_share)
        if not 0.0 < share <= 1.0:
            raise ValueError(f"consensus_share={consensus_share!r} is not allowed: must be in "
                             "(0, 1]")
        cap, floor = _real(price_cap_per_mwh), _real(price_floor_per_mwh)
        if math.isnan(cap) or math.isnan(floor) or floor > cap:
            raise ValueError(f"price_floor_per_mwh={price_floor_per_mwh!r}, price_cap_per_mwh="
                             f"{price_cap_per_mwh!r} are not allowed: must be numbers (±inf "
                             "allowed, not NaN) with floor <= cap")
        deadband = _check_finite("deadband_mw", deadband_mw, "a finite number >= 0",
                                 ok=lambda v: v >= 0.0)
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break={tie_break!r} is not allowed: expected one of "
                             f"{', '.join(TIE_BREAKS)}")
    else:
        request, power, price = float(request_mw), bid_power_mw, bid_price_per_mwh
        n = power.shape[0]
        mask = np.ones(n, dtype=bool) if eligible is None else eligible
        share, cap, floor = float(consensus_share), price_cap_per_mwh, price_floor_per_mwh
        deadband = float(deadband_mw)

    # sign of the request (np.sign for a finite float)
    direction = 1.0 if request > 0 else (-1.0 if request < 0 else 0.0)
    if direction == 0.0:
        # a zero request (the usual idle round): every power·0.0 below is ±0.0 or NaN,
        # never > 0, so no bid is valid and the offer is 0.0·Σ(nothing) = +0.0
        return _result(np.zeros(n), math.nan, request, 0.0, abs(request) <= deadband, 0,
                       accepted_total=0.0)
    # Work in the request's direction (±1 here): magnitudes > 0 are candidate bids
    # (x·1.0 = x and x·(−1.0) = −x exactly, so no multiplication is needed).
    power_dir = power if direction > 0 else -power
    valid = power_dir > 0.0             # NaN compares False
    valid &= mask
    if check:   # arbitrary inputs: NaN/inf power or price never count
        valid &= np.isfinite(power_dir)
        valid &= np.isfinite(price)
    if floor > -math.inf:
        valid &= price >= floor
    if cap < math.inf:
        valid &= price <= cap
    idx = valid.nonzero()[0]
    offered_dir = power_dir[idx]
    # = Σ over the valid bids in index order, as power_dir[valid].sum() gives it
    offered_abs = float(np.add.reduce(offered_dir))
    accepted = np.zeros(n)

    if abs(request) <= deadband or not idx.size:
        return _result(accepted, math.nan, request, direction * offered_abs,
                       abs(request) <= deadband, 0, accepted_total=0.0)   # Σ of the zeros

    # Merit order: ascending price for a shortage, descending for a surplus (the least
    # compensation asked first); stable sort keeps agent index order within ties.
    keys = price[idx]
    if direction < 0:
        np.negative(keys, out=keys)
    local = keys.argsort(kind="stable")
    order = idx[local]
    sizes = offered_dir[local]
    # Σ_{j<k}|P_j| as the exclusive prefix sum (non-decreasing, so the accepted bids
    # are a prefix of the merit order; cumsum − size is not monotone in floating point)
    before = np.empty(sizes.size)
    before[0] = 0.0
    np.add.accumulate(sizes[:-1], out=before[1:])   # = np.cumsum (the same ufunc)
    # bid k gets min(|P_k|, max(0, |request| − Σ_{j<k}|P_j|))
    take = np.subtract(abs(request), before, out=before)
    np.maximum(take, 0.0, out=take)
    np.minimum(sizes, take, out=take)
    # crumbs of the running sum (e.g. 1.0 − 10 × 0.1 = 1.1e-16 MW) are not awarded: they
    # would make the next bid marginal, setting the uniform price with a 1e-16 MW contract
    crumbs = take <= _CRUMB_RTOL * abs(request)
    crumbs &= take < sizes   # a remainder of the request, not a whole (tiny) bid
    if fast_count_nonzero(crumbs):
        take[crumbs] = 0.0
    if tie_break == "pro_rata":
        _share_the_marginal_price(take, sizes, keys[local])
    accepted[order] = take if direction > 0 else -take
    taken = (take > 0.0).nonzero()[0]
    k = int(taken.size)
    clearing = float(price[order[taken[-1]]]) if k else math.nan
    accepted_abs = float(np.add.reduce(take))
    consensus = accepted_abs >= share * abs(request) * (1.0 - _CONSENSUS_RTOL)
    return _result(accepted, clearing, request, direction * offered_abs, consensus, k)


def _share_the_marginal_price(take: np.ndarray, sizes: np.ndarray, keys: np.ndarray) -> None:
    """Re-share ``take`` (the index rule's awards, in merit order) pro rata among the
    bids at the marginal price: with ``G`` those bids and ``R`` what the index rule
    awarded them (the request left after the cheaper ones), bid ``g`` gets
    ``|P_g|·R/Σ_G|P_j|`` (all of it when ``R`` covers them). The cheaper bids keep their
    whole size, the dearer ones nothing; the sum is the index rule's up to rounding.

    ``R`` is the index rule's own sum, not ``|request|`` minus the cheaper bids summed
    again: summed in another order those could cover the request by a few ulps, leaving
    the group nothing (a 7e-16 MW marginal bid the index rule awarded whole lost it, and
    the clearing price fell a level), or a whole group the running sum left 1 ulp short
    kept the index rule's unequal shares."""
    taken = (take > 0.0).nonzero()[0]
    if not taken.size:
        return
    marginal = keys[taken[-1]]
    group = (keys == marginal).nonzero()[0]   # contiguous: keys are sorted
    first, last = int(group[0]), int(group[-1]) + 1
    if np.array_equal(take[first:last], sizes[first:last]):   # the group taken whole
        return
    wanted = float(np.add.reduce(sizes[first:last]))
    awarded = float(np.add.reduce(take[first:last]))   # <= wanted: each take <= its size
    np.multiply(sizes[first:last], min(awarded / wanted, 1.0), out=take[first:last])


def _result(accepted: np.ndarray, clearing: float, request: float, offered: float,
            consensus: bool, n_accepted: int,
            accepted_total: float | None = None) -> ClearingResult:
    """Freeze ``accepted`` and build the ``ClearingResult`` (``accepted_total``: the sum of
    ``accepted`` if the caller knows it, e.g. +0.0 for fresh zeros; None: summed here)."""
    accepted.setflags(write=False)
    if accepted_total is None:
        accepted_total = float(np.add.reduce(accepted))
    return ClearingResult(accepted_mw=accepted, clearing_price_per_mwh=clearing,
                          request_mw=request, offered_mw=offered,
                          accepted_total_mw=accepted_total,
                          consensus=bool(consensus), n_accepted=int(n_accepted))


def settlement(accepted_mw: np.ndarray, clearing_price_per_mwh: float,
               dt_s: float) -> np.ndarray:
    """The pay-as-clear value of a round's awards **if delivered in full**, checked.

    ``payment_i = π · P_i · dt_s / 3600`` in $ (positive = paid to the agent), with
    ``π`` the clearing price in $/MWh and ``P_i`` the accepted power in MW (positive =
    injection). Sellers in a shortage are paid ``π·P·dt``; absorbers in a surplus pay
    ``π·|P|·dt``, i.e. are paid when ``π < 0``. A NaN price (nothing accepted) pays 0.

    This is :func:`contract_payments_usd` (the formula the environment pays agents by)
    with full delivery (``d = |P|``) and no reserve availability, the same bits; what the
    environment pays for a step also depends on what was delivered, see
    :func:`contract_delivery_mw`.

    :param accepted_mw: (n,) accepted power per agent, MW.
    :param clearing_price_per_mwh: uniform clearing price, $/MWh (NaN = no trade).
    :param dt_s: delivery interval, s (> 0).
    :return: (n,) payments in $.
    """
    p = _as_float_vector("accepted_mw", accepted_mw, None, finite=True)
    dt = _check_finite("dt_s", dt_s, "a finite number > 0", ok=lambda v: v > 0.0)
    if isinstance(clearing_price_per_mwh, float | np.floating) and math.isnan(
            clearing_price_per_mwh):
        if np.any(p != 0.0):
            raise ValueError("clearing_price_per_mwh is NaN but accepted_mw is not all zero")
        return np.zeros_like(p)
    price = _check_finite("clearing_price_per_mwh", clearing_price_per_mwh,
                          "a finite number or NaN")
    return contract_payments_usd(p, price, np.abs(p), 0.0, dt / _SECONDS_PER_HOUR)


# ---------------------------------------------------------------------- settlement
# What the environment pays and charges each agent for one step (DESIGN §3), as pure
# functions of arrays. Unchecked (the step's hot path): finite (n,) float arrays of one
# length; a rate or price may be a scalar or an (n,) array (an array operand skips
# NumPy's conversion of a Python float; the results are the same bits). The IEEE
# operations and their order are part of the contract: the golden trajectories are
# bit-identical through them.

def contract_delivery_mw(contract_mw: np.ndarray, planned_mw: np.ndarray,
                         executed_mw: np.ndarray, reserve_active_mw: np.ndarray,
                         reserve_share: np.ndarray, zero: np.ndarray | float = 0.0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How much of each agent's contracts it delivered over the step, MW (mean power).

    With contract power ``C`` (signed), planned power ``P*`` (contracts + activated
    reserve), executed power ``p``, active reserve ``R`` and its activated share ``a``::

        shortfall    s = |P* − p|
        delivered    d = max(|C| − s, 0)
        undelivered  u = |C| − d
        reserve gap  g = min(max(s − |C|, 0), R·a)

    A shortfall counts against the energy contracts first; what exceeds them is
    activated reserve not delivered, at most the reserve activated.

    :param contract_mw: (n,) power of the contracts executed this step, MW (signed).
    :param planned_mw: (n,) the dispatch planned, MW.
    :param executed_mw: (n,) the dispatch executed, MW.
    :param reserve_active_mw: (n,) reserve activated, MW.
    :param reserve_share: (n,) the share of it activated over the step, in [0, 1].
    :param zero: the ``0`` operand: ``0.0``, or (n,) zeros (faster, the same bits).
    :return: ``(d, u, g)``, (n,) each, MW, all >= 0.
    """
    shortfall = np.subtract(planned_mw, executed_mw)
    np.abs(shortfall, out=shortfall)
    undelivered = np.abs(contract_mw)
    delivered = np.subtract(undelivered, shortfall)
    np.maximum(delivered, zero, out=delivered)
    gap = np.subtract(shortfall, undelivered)
    np.maximum(gap, zero, out=gap)
    np.minimum(gap, np.multiply(reserve_active_mw, reserve_share, out=shortfall), out=gap)
    np.subtract(undelivered, delivered, out=undelivered)
    return delivered, undelivered, gap


def contract_payments_usd(contract_mw: np.ndarray, contract_price_per_mwh: np.ndarray | float,
                          delivered_mw: np.ndarray,
                          reserve_rate_usd_per_h: np.ndarray | float,
                          h: np.ndarray | float) -> np.ndarray:
    """What the operator pays each agent for one step, $ (positive = paid to the agent).

    ::

        payment = (π · sign(C) · d + ρ) · h

    Delivered contract energy ``d·h`` (MWh, :func:`contract_delivery_mw`) is paid at its
    contract's price ``π`` (the clearing price of the round that awarded it,
    pay-as-clear), signed by the contract: a seller's injection (``C > 0``) earns
    ``π·d·h``; an absorber (``C < 0``) pays ``π·d·h``, i.e. is paid when ``π < 0``.
    ``ρ`` is the agent's reserve availability rate, $/h: Σ MW × own clearing price over
    its held reserve contracts whose delivery window has started
    (:meth:`gridswarm_env.reserve.ReserveBook.rate_at`), paid whether or not activated.
    With full delivery and no reserve this is :func:`settlement`'s ``π·C·h``.

    :param contract_mw: (n,) contract power, MW (signed).
    :param contract_price_per_mwh: (n,) or scalar contract price, $/MWh.
    :param delivered_mw: (n,) delivered power ``d``, MW (>= 0).
    :param reserve_rate_usd_per_h: (n,) or scalar availability rate ``ρ``, $/h.
    :param h: the step, hours (``dt_s / 3600``; scalar or (n,)).
    :return: (n,) payments, $.
    """
    pay = np.sign(contract_mw)
    np.multiply(contract_price_per_mwh, pay, out=pay)
    pay *= delivered_mw
    pay += reserve_rate_usd_per_h
    pay *= h
    return pay


def undelivered_penalty_usd(undelivered_mw: np.ndarray, reserve_gap_mw: np.ndarray,
                            penalty_usd_per_mw: np.ndarray | float) -> np.ndarray:
    """Each agent's penalty for contracted energy and activated reserve not delivered, $.

    ::

        penalty = λh · (u + g)

    with ``u``, ``g`` from :func:`contract_delivery_mw` (MW) and ``λh`` the penalty per
    MW over the step, $/MW: ``RewardConfig.undelivered_penalty_per_mwh · h`` (scalar
    or (n,)).
    """
    penalty = np.add(undelivered_mw, reserve_gap_mw)
    np.multiply(penalty_usd_per_mw, penalty, out=penalty)
    return penalty


def cost_basis_mw(executed_mw: np.ndarray, battery: slice, solar: slice, ev: slice,
                  zero: np.ndarray | None = None) -> np.ndarray:
    """The power each agent's own dispatch costs it, MW: a battery ``|p|`` (wear both
    ways), a PV plant ``max(−p, 0)`` (curtailed output), an EV ``max(p, 0)`` (deferred
    charging). The three slices cover every agent (fleets are grouped by kind).

    :param zero: the ``0`` operand, (n,) zeros (faster than the default ``0.0``, the
        same bits).
    """
    basis = np.empty_like(executed_mw)
    z_sol, z_ev = (0.0, 0.0) if zero is None else (zero[solar], zero[ev])
    np.abs(executed_mw[battery], out=basis[battery])
    np.negative(executed_mw[solar], out=basis[solar])
    np.maximum(basis[solar], z_sol, out=basis[solar])
    np.maximum(executed_mw[ev], z_ev, out=basis[ev])
    return basis


def own_cost_usd(basis_mw: np.ndarray, cost_per_mwh: np.ndarray | float,
                 battery: slice | np.ndarray, battery_energy_change_mwh: np.ndarray,
                 stored_value_per_mwh: float, unmet_mwh: np.ndarray,
                 unmet_cost_per_mwh: np.ndarray | float, h: float) -> np.ndarray:
    """Each agent's true cost of its own dispatch over the step, $.

    ::

        own cost = h · (c_kind · b − (v / h) · ΔE_battery) + c_unmet · E_unmet

    ``b`` from :func:`cost_basis_mw` (MW), ``c_kind`` the own-cost rate of the agent's
    kind ($/MWh: battery wear, curtailed PV, deferred EV charging; ``CostConfig``),
    ``ΔE_battery`` the change of a battery's stored energy over the step (MWh, cell
    side; the term only on ``battery``): energy sold from a store has to be bought
    back, so it is valued at ``v`` = ``stored_value_per_mwh`` as ``system_cost`` does
    (a cost when the store lost energy, a gain when it gained). ``E_unmet`` is an EV's
    departure energy not met this step (MWh) at ``c_unmet`` $/MWh.

    :param h: the step, hours (``dt_s / 3600``).
    :return: (n,) own costs, $.
    """
    cost = np.multiply(basis_mw, cost_per_mwh)
    cost[battery] -= np.multiply(battery_energy_change_mwh[battery], stored_value_per_mwh / h)
    cost *= h
    cost += np.multiply(unmet_cost_per_mwh, unmet_mwh)
    return cost


def grid_term_usd(mean_abs_freq_dev_hz: float, grid_weight: float, band_hz: float) -> float:
    """The reward's shared frequency term, $: ``w · mean|f − f0| / band_hz`` (the mean
    over the step's physics sub-steps; ``RewardConfig.grid_weight``, ``band_hz``)."""
    return grid_weight * mean_abs_freq_dev_hz / band_hz


def agent_rewards(payment_usd: np.ndarray, cost_usd: np.ndarray, penalty_usd: np.ndarray,
                  grid_usd: float, scale: np.ndarray | float) -> np.ndarray:
    """The per-agent reward of the step (DESIGN §3; ``RewardConfig``)::

        reward = scale · (payment − own cost − penalty − grid term)

    from :func:`contract_payments_usd`, :func:`own_cost_usd`,
    :func:`undelivered_penalty_usd` and :func:`grid_term_usd` ($; ``scale`` per $)."""
    reward = np.subtract(payment_usd, cost_usd)
    reward -= penalty_usd
    reward -= grid_usd
    reward *= scale
    return reward


def accepted_share(accepted_mw: np.ndarray, bid_mw: np.ndarray) -> np.ndarray:
    """Share of each agent's bid it was awarded: ``|A_i| / |B_i|``, 0 where ``B_i = 0``.

    :param accepted_mw: (n,) awarded power per agent, MW (what its contracts carry).
    :param bid_mw: (n,) the power each agent bid, MW.
    :return: (n,) shares in [0, 1] for awards within the bids.
    """
    abs_bid = np.abs(bid_mw)
    return np.divide(np.abs(accepted_mw), abs_bid, out=np.zeros(abs_bid.shape),
                     where=abs_bid > 0)


def price_signal_per_mwh(request_mw: float, flexible_capacity_mw: float,
                         price_floor_per_mwh: float, price_cap_per_mwh: float, *,
                         reference_price_per_mwh: float | None = None) -> float:
    """The operator's broadcast price signal, scaled by scarcity (a hint; clearing is by bids).

    With the scarcity ratio ``s = clip(request / flexible_capacity, −1, 1)`` and the
    neutral price ``r`` at zero request (default: 0 $/MWh clipped into the band)::

        shortage (s >= 0):  price = r + (cap − r) · s        → cap when the request uses
                                                               all flexible capacity
        surplus  (s <  0):  price = r − (r − floor) · |s|    → floor (low or negative)

    i.e. piecewise-linear in the request, continuous at ``r``, rising towards the cap
    as a shortage deepens and falling towards the floor as a surplus deepens. With a
    floor of 0 the default gives the scarcity-proportional ``floor + (cap − floor)·s``
    for a shortage; with a negative floor a surplus drives the signal negative. A
    scarcity-proportional adder is the linear form of an operating-reserve demand curve
    (cf. ERCOT ORDC). With zero flexible capacity any non-zero request is full scarcity.

    :param request_mw: operator request, MW (+ shortage, − surplus).
    :param flexible_capacity_mw: flexible capacity of the fleet in the request's
        direction, MW (>= 0).
    :param price_floor_per_mwh: lowest signal price, $/MWh (finite).
    :param price_cap_per_mwh: highest signal price, $/MWh (finite, >= floor).
    :param reference_price_per_mwh: neutral price at zero request, within the band
        (default ``clip(0, floor, cap)``).
    :return: the signal price, $/MWh, in ``[floor, cap]``.
    """
    request = _check_finite("request_mw", request_mw, "a finite number")
    flex = _check_finite("flexible_capacity_mw", flexible_capacity_mw, "a finite number >= 0",
                         ok=lambda v: v >= 0.0)
    floor = _check_finite("price_floor_per_mwh", price_floor_per_mwh, "a finite number")
    cap = _check_finite("price_cap_per_mwh", price_cap_per_mwh,
                        f"a finite number >= price_floor_per_mwh={floor!r}",
                        ok=lambda v: v >= floor)
    if reference_price_per_mwh is None:
        ref = neutral_price_per_mwh(floor, cap)
    else:
        ref = _check_finite("reference_price_per_mwh", reference_price_per_mwh,
                            f"a finite number in [{floor!r}, {cap!r}]",
                            ok=lambda v: floor <= v <= cap)
    return price_signal_unchecked(request, flex, floor, cap, ref)


def neutral_price_per_mwh(floor: float, cap: float) -> float:
    """The signal price at zero request: 0 $/MWh clipped into ``[floor, cap]``."""
    return min(cap, max(floor, 0.0))


def price_signal_unchecked(request: float, flex: float, floor: float, cap: float,
                           ref: float) -> float:
    """:func:`price_signal_per_mwh` for validated floats (the environment's hot path):
    finite ``request``, ``flex >= 0``, ``floor <= ref <= cap``."""
    scarcity = math.copysign(1.0, request) if flex == 0.0 else request / flex
    if request == 0.0:
        scarcity = 0.0
    scarcity = min(1.0, max(-1.0, scarcity))
    if scarcity >= 0.0:
        return ref + (cap - ref) * scarcity
    return ref + (ref - floor) * scarcity


# --------------------------------------------------------------------------- operator
def operator_request(forecast_mw: float, *, trip_known: bool, reserve_target_mw: float,
                     reserve_awarded_mw: np.ndarray, contingency_mw: float,
                     standing_reserve_mw: np.ndarray, deadband_mw: float,
                     reserve_short: bool = False) -> tuple[float, int]:
    """One round's request, MW (+ shortage, − surplus), and product.

    With a reserve target, a round announced while the operator does not know of a trip
    buys the reserve still missing, ``max(target − Σ awarded, 0)``, unless the forecast
    shortage is beyond the deadband and either the target is met (the missing reserve
    inside the deadband) or the last reserve round cleared short of its request
    (``reserve_short``: the fleet offered all the reserve it would): then it buys that
    energy, so a load step before the trip is balanced as without a target even where the
    target cannot be reached. A round where no energy is needed stays a reserve round
    (for the reserve still missing, or with no request), so a target the fleet could not
    fill is tried again while the forecast is quiet. Any other round is an energy round:
    the forecast shortage of its delivery window, plus, once the trip is known, the lost
    generation not covered by standing reserve (``contingency − Σ standing``). The product
    switches on what the operator knows and holds, never on the scenario's hidden event
    time.

    :param forecast_mw: the operator's forecast shortage of the round's window, MW.
    :param trip_known: whether the operator has detected the trip when it announces.
    :param reserve_target_mw: reserve to hold before a trip, MW (0: no reserve rounds).
    :param reserve_awarded_mw: (n,) reserve awarded per agent so far, MW.
    :param contingency_mw: generation lost in the trip, MW.
    :param standing_reserve_mw: (n,) reserve standing per agent, MW.
    :param deadband_mw: requests up to this (absolute) hold no round
        (:attr:`~gridswarm_env.config.MarketConfig.deadband_mw`).
    :param reserve_short: whether the last reserve round held (from round 1 on) accepted
        less than its request by more than the deadband.
    :return: ``(request_mw, product)``, product ``PRODUCT_ENERGY`` or ``PRODUCT_RESERVE``.
    """
    if reserve_target_mw > 0 and not trip_known:
        missing = max(reserve_target_mw - float(np.add.reduce(reserve_awarded_mw)), 0.0)
        if not abs(forecast_mw) > deadband_mw or (missing > deadband_mw
                                                  and not reserve_short):
            return missing, PRODUCT_RESERVE
    req = forecast_mw
    if trip_known:
        req += contingency_mw - float(np.add.reduce(standing_reserve_mw))
    return req, PRODUCT_ENERGY


def fleet_flexibility(is_battery: np.ndarray, is_ev: np.ndarray, plugged: np.ndarray,
                      max_discharge_mw: np.ndarray, max_charge_mw: np.ndarray,
                      ev_baseline_rate_mw: np.ndarray) -> tuple[float, np.ndarray]:
    """The fleet's flexibility without the PV's (that follows the forecasts), under the
    kernel's power limits (``max_discharge_mw``, ``max_charge_mw``: the compiled
    :class:`~gridswarm_env.kernel.LimitArrays`, each at most the DER's rating).

    Upward: battery discharge caps + the baseline charging the EVs plugged in can defer,
    ``min(baseline, max_charge_mw)`` (a charge cap below the baseline rate lowers the
    baseline the EV follows, as in the kernel). Downward, per DER: battery charge caps,
    plugged-in EVs' headroom above that baseline up to their charge cap
    (``max_charge_mw − min(baseline, max_charge_mw)``), 0 for an EV that left; other DERs
    their ``max_charge_mw`` (the PV's entry is replaced by its curtailable forecast in
    :func:`downward_flexibility_mw`). Without caps (``max_charge_mw`` = rated) the EVs'
    terms are the baseline and ``rated − baseline``.

    :return: ``(upward MW, (n,) downward MW per DER)``.
    """
    ev = is_ev & plugged
    ev_base = np.minimum(ev_baseline_rate_mw, max_charge_mw)
    up = float(np.where(is_battery, max_discharge_mw, np.where(
        ev, ev_base, 0.0)).sum())
    down = np.where(is_ev, np.where(ev, max_charge_mw - ev_base, 0.0),
                    max_charge_mw)
    return up, down


def downward_flexibility_mw(down_mw: np.ndarray, solar: slice | np.ndarray,
                            pv_forecast_mw: np.ndarray, pv_export_cap_mw: np.ndarray
                            ) -> float:
    """The fleet's downward flexibility, MW: ``down_mw`` (see :func:`fleet_flexibility`)
    with the PV's entries (``solar``) replaced by the PV forecasts the operator holds,
    each capped at the plant's export cap ``pv_export_cap_mw`` (its ``max_discharge_mw``;
    curtailing a plant to zero takes away its forecast output, which the cap already
    holds down to the cap, as the kernel's curtailment bound ``min(forecast, cap)``).
    """
    down = down_mw.copy()
    down[solar] = np.minimum(pv_forecast_mw[solar], pv_export_cap_mw[solar])
    return float(np.add.reduce(down))
