"""The environment's messages on the Agent Message Bus: who sends them, their topics and
their record formats.

Agents are bus endpoints ``0 .. n_agents − 1``; the operator and the dispatcher are the
two endpoints below them. Bids and forecasts go from the agents to the operator, the
round announcements (:data:`SIGNAL_DTYPE`) and the emergency broadcast from the operator
to every agent, signed contracts from the operator to their holders (payload: a
reference to the contract, see :class:`~gridswarm_env.contract_flow.ContractFlow`).
"""

from __future__ import annotations

import numpy as np

OPERATOR = -1
DISPATCHER = -2
TOPIC_PRICE, TOPIC_BIDS, TOPIC_FORECAST = "grid/price", "grid/bids", "grid/forecast"
TOPIC_CONTRACTS, TOPIC_EMERGENCY = "grid/contracts", "grid/emergency"

BID_DTYPE = np.dtype([("round", np.int32), ("power_mw", np.float64),
                      ("price_per_mwh", np.float64)])
#: a round's announcement, published at gate closure: the next round (request, price
#: signal, product), the grid's state, and the market result so far (the last round
#: that cleared: its clearing price, NaN before any)
SIGNAL_DTYPE = np.dtype([("round", np.int32), ("request_mw", np.float64),
                         ("price_per_mwh", np.float64), ("product", np.int8),
                         ("freq_hz", np.float64), ("rocof_hz_per_s", np.float64),
                         ("clearing_price_per_mwh", np.float64)])
EMERGENCY_DTYPE = np.dtype([("event_s", np.float64), ("lost_mw", np.float64)])
#: a packed signal record as one opaque item of its size: copying signal records as these
#: moves the same bytes as the field-wise copy, several times faster
SIGNAL_VOID = np.dtype((np.void, SIGNAL_DTYPE.itemsize))
