"""Rich renderables of the gridswarm live dashboard and its end-of-run KPI summary.

Everything drawn here is read from a per-step *record* (the dict :func:`demo.measure_step`
builds from ``raw.last_info`` and the environment's state), the episode KPIs
(:meth:`GridSwarmEnv.episode_metrics`, defined once in :mod:`gridswarm_env.metrics`)
and the bus counters (:meth:`AgentMessageBus.stats`). Nothing is decorative: a value
that is not measured yet (no clearing, no event) is shown as "—" with the reason.

Panels (top to bottom)::

    header      scenario, fleet size, policy, trust mode, seed, simulated time; the input
                files (scenario, --config, --limits: path and SHA-256); SHADOW banner
    grid        frequency vs the NERC ±0.05 Hz band, sparkline (per step, the sub-step
                farthest from 60 Hz), nadir/zenith, load, requirement, delivered, DERs
    market      product, clearing price, accepted MW, negotiations/s (wall clock), consensus,
                emergency response latency
    trust       contracts signed / verified / rejected (by reason), blocked, executed violations
    bus         per lane: published, delivered, deferred, dropped, queue depth, latency p50/p99
    feed        scrolling market events (agreements, emergencies, rejections, accepted offers)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from gridswarm_env.metrics import BAND_HZ, KPI_UNITS, NOMINAL_HZ, UFLS_FIRST_STAGE_HZ

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
DASH = "—"
#: Event lines shown at least in the full layout.
MIN_FEED_ROWS = 3
#: Event lines shown at least in the compact layout (terminals too short for the full one,
#: e.g. 80 x 24).
MIN_FEED_ROWS_COMPACT = 1
#: Wall-clock window (s) over which negotiations/s is measured.
RATE_WINDOW_S = 2.0

_GRID_LABEL_WIDTH = 14
#: Bus panel rows: (``bus.stats()`` lane key, label, format; "count" = compact count).
_BUS_ROWS = (("published", "published", "count"), ("delivered", "delivered", "count"),
             ("deferred", "deferred", "count"), ("dropped", "dropped", "count"),
             ("queue_depth", "depth", "count"),
             ("latency_p50_ms", "p50 ms", "{:.1f}"), ("latency_p99_ms", "p99 ms", "{:.1f}"))
_LANE_SHORT = {"EMERGENCY": "emerg", "CONTROL": "ctrl", "MARKET": "mkt", "TELEMETRY": "telem"}

#: KPI summary rows: (metrics key, label, unit, format); the unit is the KPI's
#: :data:`~gridswarm_env.metrics.KPI_UNITS` entry.
SUMMARY_ROWS: tuple[tuple[str, str, str, str], ...] = tuple(
    (key, label, KPI_UNITS[key], spec) for key, label, spec in (
        ("system_cost", "system cost", "{:,.2f}"),
        ("unserved_energy_mwh", "unserved energy", "{:.4f}"),
        ("frequency_nadir_hz", "frequency nadir", "{:.4f}"),
        ("frequency_zenith_hz", "frequency zenith", "{:.4f}"),
        ("max_abs_deviation_hz", "max. deviation from 60 Hz", "{:.4f}"),
        ("max_rocof_hz_per_s", "max. RoCoF (rate of change of f)", "{:.4f}"),
        ("seconds_outside_band", "time outside ±0.05 Hz", "{:.2f}"),
        ("stabilization_time_s", "stabilization time", "{:.2f}"),
        ("emergency_response_latency_ms", "emergency response latency", "{:.1f}"),
        ("emergency_response_mw_100ms", "reserve answering within 100 ms", "{:.2f}"),
        ("consensus_rate", "consensus rate", "{:.1%}"),
        ("negotiations", "negotiations (bids accepted)", "{:d}"),
        ("contracts_signed", "contracts signed", "{:d}"),
        ("contracts_verified", "contracts verified", "{:d}"),
        ("contracts_rejected", "contracts rejected", "{:d}"),
        ("contracts_late", "contracts late (arrived after window end)", "{:d}"),
        ("contracts_lost", "contracts lost (never delivered)", "{:d}"),
        ("blocked_attempts", "blocked attempts", "{:d}"),
        ("executed_violations", "executed violations", "{:d}"),
        ("bus_published", "bus messages published", "{:d}"),
        ("bus_delivered", "bus messages delivered", "{:d}"),
        ("bus_deferred", "bus deferrals (message-steps)", "{:d}"),
        ("bus_dropped", "bus messages dropped", "{:d}"),
    ))


def is_missing(value: Any) -> bool:
    """True for ``None`` and NaN (a quantity not measured yet)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, spec: str = "{}", missing: str = DASH) -> str:
    """Format ``value`` with ``spec``, or ``missing`` when it is None/NaN.

    :param value: the number (or None / NaN).
    :param spec: a :meth:`str.format` spec such as ``"{:.2f}"``.
    :param missing: text shown for a missing value.
    """
    if is_missing(value):
        return missing
    if "d}" in spec and isinstance(value, float) and value.is_integer():
        value = int(value)
    return spec.format(value)


def sparkline(values: Sequence[float], lo: float, hi: float) -> str:
    """Unicode block sparkline of ``values`` scaled linearly from ``lo`` (▁) to ``hi`` (█).

    :param values: the samples, oldest first.
    :param lo: value drawn as the lowest block (values below are clipped).
    :param hi: value drawn as the highest block; ``hi <= lo`` draws every sample mid-height.
    :returns: one character per sample.
    """
    top = len(SPARK_BLOCKS) - 1
    if hi <= lo:
        return SPARK_BLOCKS[top // 2] * len(values)
    out = []
    for v in values:
        x = min(max((v - lo) / (hi - lo), 0.0), 1.0)
        out.append(SPARK_BLOCKS[round(x * top)])
    return "".join(out)


def frequency_sparkline(freqs_hz: Sequence[float], band_hz: float = BAND_HZ) -> Text:
    """Coloured frequency sparkline whose scale always contains the ``±band_hz`` band.

    Samples inside the band are green, outside red. The scale is
    ``[min(samples, 60 − band), max(samples, 60 + band)]`` so a quiet grid looks quiet.
    """
    if not freqs_hz:
        return Text(DASH)
    lo = min(min(freqs_hz), NOMINAL_HZ - band_hz)
    hi = max(max(freqs_hz), NOMINAL_HZ + band_hz)
    text = Text()
    for f, ch in zip(freqs_hz, sparkline(freqs_hz, lo, hi), strict=True):
        text.append(ch, style="green" if abs(f - NOMINAL_HZ) <= band_hz else "bold red")
    return text


def compact_count(n: Any) -> str:
    """A count in at most 5 characters (below 100 M): ``950``, ``9,999``, ``60.1k``,
    ``1.23M``, ``12.3M``."""
    if is_missing(n):
        return DASH
    n = int(n)
    a = abs(n)
    if a < 10_000:
        return f"{n:,d}"
    if a < 99_950:        # thresholds where the rounded text would gain a digit
        return f"{n / 1e3:.1f}k"
    if a < 999_500:
        return f"{n / 1e3:.0f}k"
    if a < 9_995_000:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e6:.1f}M"


def _side_by_side(console: Console, options: ConsoleOptions, left: Any,
                  right: Any) -> list[list[Segment]]:
    """Render ``left`` and ``right`` at half the width each and join them line by line."""
    w_left = options.max_width // 2
    w_right = options.max_width - w_left
    lhs = console.render_lines(left, options.update(width=w_left, height=None))
    rhs = console.render_lines(right, options.update(width=w_right, height=None))
    rows = max(len(lhs), len(rhs))
    lhs += [[Segment(" " * w_left)]] * (rows - len(lhs))
    rhs += [[Segment(" " * w_right)]] * (rows - len(rhs))
    return [a + b for a, b in zip(lhs, rhs, strict=True)]


class _Rows:
    """Label/value rows as one unwrapped :class:`Text` (cheap to render, unlike a Table)."""

    def __init__(self, label_width: int) -> None:
        self.label_width = label_width
        self.text = Text(no_wrap=True, overflow="ellipsis")

    def add_row(self, label: str, value: str | Text) -> None:
        if self.text:
            self.text.append("\n")
        self.text.append(label.ljust(self.label_width) + " ", style="dim")
        self.text.append(value if isinstance(value, Text) else Text(value))


def _rejected_text(metrics: Mapping[str, Any], count: str) -> Text:
    """``count`` (the rejected contracts, formatted) and the reasons, red when any."""
    reasons = metrics.get("contracts_rejected_by_reason") or {}
    why = ", ".join(f"{k} {v}" for k, v in reasons.items())
    return Text(count + (f" ({why})" if why else ""),
                style="bold red" if metrics.get("contracts_rejected") else "")


def _violations_text(metrics: Mapping[str, Any], unit: str) -> Text:
    """The executed violations, green at 0 and red otherwise."""
    viol = metrics.get("executed_violations") or 0
    return Text(f"{viol:d}{unit}", style="bold red" if viol else "green")


class Dashboard:
    """The live view: feed it one step at a time with :meth:`update`, render with rich.

    Fits 80 columns (wider terminals get a longer sparkline and event lines); the event
    feed takes the rows the panels leave, at least :data:`MIN_FEED_ROWS`. A terminal too
    short for that (the full layout needs ~34 rows) gets the compact layout, which fits
    80 x 24: fewer grid rows and the kernel, contract and bus counters on three lines.

    :param header: static run description, keys ``scenario``, ``n_agents``, ``policy``,
        ``trust``, ``seed``, ``shadow``, ``episode_steps``, ``dt_s``, ``has_event`` and
        optionally ``paced`` (the run waits between steps, ``demo.py --speed``: the
        negotiations/s are then marked "unpaced", measured without the waits) and
        ``speed`` (shown as ``x10`` on the progress line when paced) and ``files`` (the
        input files, e.g. ``"config file c.toml (sha256 505828ba4c1e)"``: a line under
        the title, :func:`policies.cli_checks.input_files`).
    :param history_steps: steps kept for the frequency sparkline (one sample per step:
        its physics sub-step farthest from 60 Hz; it shows as many of the latest as fit).
    :param feed_lines: event lines kept for the scrolling feed.
    """

    def __init__(self, header: Mapping[str, Any], history_steps: int = 200,
                 feed_lines: int = 200) -> None:
        self.header = dict(header)
        self.freq_history_hz: deque[float] = deque(maxlen=history_steps)
        self.feed: deque[str] = deque(maxlen=feed_lines)
        self._rate_samples: deque[tuple[float, int]] = deque()
        self.record: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.bus_lanes: dict[str, dict[str, Any]] = {}
        self.negotiations_per_s: float | None = None
        self.status = "running"
        self.spark_width = 30

    # ------------------------------------------------------------------ state
    def update(self, record: Mapping[str, Any], metrics: Mapping[str, Any],
               bus_stats: Mapping[str, Any], clock_s: float | None = None) -> None:
        """Take one step's record, the KPIs so far and ``bus.stats()``.

        Negotiations/s is measured over the last :data:`RATE_WINDOW_S` seconds of wall
        clock: (negotiations now − negotiations then) / (wall now − wall then).

        :param clock_s: the clock of that rate (s); None: the record's ``wall_s``. A
            paced run passes its wall clock less the waits between steps.
        """
        self.record = dict(record)
        self.metrics = dict(metrics)
        self.bus_lanes = dict(bus_stats.get("lanes", {}))
        lo_hz, hi_hz = float(record["freq_min_hz"]), float(record["freq_max_hz"])
        # the step's sample farthest from nominal, so a dip between step ends shows
        self.freq_history_hz.append(lo_hz if NOMINAL_HZ - lo_hz > hi_hz - NOMINAL_HZ else hi_hz)
        t = record["t_s"]
        for line in list(record.get("events", [])) + list(record.get("offers", [])):
            self.feed.append(f"[{t:7.1f} s] {line}")
        wall = float(record["wall_s"] if clock_s is None else clock_s)
        total = int(metrics.get("negotiations", 0))
        self._rate_samples.append((wall, total))
        while len(self._rate_samples) > 2 and wall - self._rate_samples[1][0] >= RATE_WINDOW_S:
            self._rate_samples.popleft()
        w0, n0 = self._rate_samples[0]
        self.negotiations_per_s = (total - n0) / (wall - w0) if wall > w0 else None

    # ------------------------------------------------------------------ rendering
    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Fill the terminal: header, two rows of two panels, and the event feed in the
        rows left (at least :data:`MIN_FEED_ROWS`); on a terminal too short for that, the
        compact layout (header, grid and market, a three-line kernel/contract/bus panel, at
        least :data:`MIN_FEED_ROWS_COMPACT` event lines).

        Each panel is rendered once at half the width and the halves are joined line by
        line (a rich ``Table`` around the panels would measure every cell again, which
        costs more than the environment step at 100 agents).
        """
        width = options.max_width
        full_width = options.update(width=width, height=None)
        # half the width, minus borders and padding (4), the label column and its gap
        self.spark_width = max(8, width // 2 - 4 - _GRID_LABEL_WIDTH - 1)
        height = options.height or console.size.height
        header = console.render_lines(self._header(width), full_width)
        lines = header + _side_by_side(console, options, self._grid_panel(),
                                       self._market_panel())
        lines += _side_by_side(console, options, self._trust_panel(), self._bus_panel())
        # two rows for the feed's border, one for the cursor line under a live display
        feed_rows = height - len(lines) - 3
        if feed_rows < MIN_FEED_ROWS:
            header = console.render_lines(self._header(width, compact=True), full_width)
            lines = header + _side_by_side(console, options, self._grid_panel(compact=True),
                                           self._market_panel())
            lines += console.render_lines(self._counters_panel(), full_width)
            feed_rows = max(MIN_FEED_ROWS_COMPACT, height - len(lines) - 3)
        lines += console.render_lines(self._feed_panel(feed_rows),
                                      options.update(width=width, height=None))
        newline = Segment.line()
        for line in lines:
            yield from line
            yield newline

    def _header(self, width: int, compact: bool = False) -> Panel:
        """The run (scenario, fleet, policy) and its progress (trust, seed, time, status):
        one line when both fit in ``width`` columns, else a line each (80 columns: the
        break fell wherever the words ran out, after "seed 0 ·"); the input files on a
        line under them, or, in the compact layout, in the bottom border (no row of its
        own: cut at the border where it does not fit; the KPI summary names them
        whole); the SHADOW banner last, or, in the compact layout, shorter in the top
        border (under it, two rows at 80 columns made the 80 x 24 display 25 lines)."""
        h, r = self.header, self.record
        t = r.get("t_s", 0.0)
        run = Text.assemble(("gridswarm", "bold cyan"), "  ", (f"{h['scenario']}", "bold"),
                            f" · {h['n_agents']} DERs · policy {h['policy']}")
        progress = Text(f"trust {h['trust']} · seed {h['seed']} · "
                        f"t = {t:.1f} / {h['episode_steps'] * h['dt_s']:.0f} s "
                        f"(step {r.get('step', -1) + 1}/{h['episode_steps']}) · {self.status}"
                        + (f" · x{h['speed']:g}" if h.get("paced") and h.get("speed") else ""))
        # inside the panel: 2 columns of border and 2 of padding
        one_line = run.cell_len + 3 + progress.cell_len <= width - 4
        title = Text.assemble(run, " · " if one_line else "\n", progress)
        body: list[Any] = [title]
        files = " · ".join(h.get("files") or ())   # scenario, --config, --limits files
        if files and not compact:
            body.append(Text(files, style="dim"))
        shadow = None
        if h.get("shadow") and compact:   # in the top border: no rows of its own
            shadow = Text("SHADOW MODE: nothing is dispatched to the grid",
                          style="bold black on yellow")
        elif h.get("shadow"):
            body.append(Text("SHADOW MODE: market, contracts and kernel run; nothing is "
                             "dispatched to the grid", style="bold black on yellow"))
        return Panel(Group(*body), border_style="yellow" if h.get("shadow") else "cyan",
                     title=shadow, title_align="left",
                     subtitle=Text(files, style="dim") if files and compact else None,
                     subtitle_align="left")

    def _grid_panel(self, compact: bool = False) -> Panel:
        """Frequency, its band and history, load and delivery; ``compact`` leaves out the
        band, the sparkline's scale and the load, and puts DERs under contract on the
        DERs-active row."""
        r, m = self.record, self.metrics
        table = _Rows(_GRID_LABEL_WIDTH)
        f = r.get("freq_hz")
        if f is None:
            table.add_row("frequency", DASH)
        else:
            inside = abs(f - NOMINAL_HZ) <= BAND_HZ
            table.add_row("frequency", Text.assemble(
                (f"{f:.4f} Hz", "bold green" if inside else "bold red"), " · ",
                ("in band" if inside else "OUT", "green" if inside else "bold red")))
            if not compact:
                table.add_row("band (NERC)",
                              f"{NOMINAL_HZ - BAND_HZ:.2f}–{NOMINAL_HZ + BAND_HZ:.2f} Hz")
            table.add_row("step min–max", f"{r['freq_min_hz']:.4f}–{r['freq_max_hz']:.4f} Hz")
        hist = list(self.freq_history_hz)[-self.spark_width:]
        if hist:
            lo = min(min(hist), NOMINAL_HZ - BAND_HZ)
            hi = max(max(hist), NOMINAL_HZ + BAND_HZ)
            table.add_row(f"last {len(hist)} steps", frequency_sparkline(hist))
            if not compact:
                table.add_row("  scale", Text(f"{lo:.3f}–{hi:.3f} Hz", style="dim"))
        table.add_row("nadir / zenith", f"{fmt(m.get('frequency_nadir_hz'), '{:.4f}')} / "
                      f"{fmt(m.get('frequency_zenith_hz'), '{:.4f}')} Hz")
        table.add_row("outside band", f"{fmt(m.get('seconds_outside_band'), '{:.2f}')} s")
        if not compact:
            table.add_row("grid load", f"{fmt(r.get('grid_load_mw'), '{:,.1f}')} MW")
        lost = r.get("lost_generation_mw", 0.0)
        if lost:
            table.add_row("gen. lost", Text(f"{lost:.1f} MW", style="bold red"))
        table.add_row("requirement", f"{fmt(r.get('requirement_mw'), '{:+.2f}')} MW")
        table.add_row("delivered", f"{fmt(r.get('delivered_mw'), '{:+.2f}')} MW")
        if self.header.get("shadow"):
            table.add_row("would dispatch", f"{fmt(r.get('would_dispatch_mw'), '{:+.2f}')} MW")
        if compact:
            table.add_row("DERs active", f"{fmt(r.get('ders_active'), '{:d}')}/"
                          f"{self.header['n_agents']} · "
                          f"{fmt(r.get('ders_contracted'), '{:d}')} contracted")
        else:
            table.add_row("DERs active", f"{fmt(r.get('ders_active'), '{:d}')} of "
                          f"{self.header['n_agents']}")
            table.add_row("under contract", fmt(r.get("ders_contracted"), "{:d}"))
        return Panel(table.text, title="grid", border_style="blue")

    def _market_panel(self) -> Panel:
        r, m = self.record, self.metrics
        table = _Rows(17)
        table.add_row("product", str(r.get("product", DASH)))
        table.add_row("request", f"{fmt(r.get('request_mw'), '{:+.2f}')} MW")
        price = r.get("clearing_price_per_mwh")
        table.add_row("clearing price", fmt(price, "${:,.2f}/MWh", f"{DASH} (none cleared)"))
        table.add_row("next price signal", fmt(r.get("price_signal_per_mwh"), "${:,.2f}/MWh"))
        table.add_row("accepted", f"{fmt(r.get('accepted_mw'), '{:+.2f}')} MW, "
                      f"{fmt(r.get('negotiations'), '{:d}')} bids")
        table.add_row("negotiations/s", fmt(self.negotiations_per_s, "{:,.0f}", DASH)
                      + (" (unpaced)" if self.header.get("paced") else " (wall)"))
        table.add_row("negotiations", fmt(m.get("negotiations"), "{:,d}"))
        table.add_row("consensus rate", fmt(m.get("consensus_rate"), "{:.1%}", DASH)
                      + ("" if "consensus" not in r else
                         f" · now {'yes' if r['consensus'] else 'no'}"))
        if self.header.get("has_event"):
            lat = m.get("emergency_response_latency_ms")
            table.add_row("emergency resp.", fmt(lat, "{:.1f} ms (sim.)", f"{DASH} (not yet)"))
        else:
            table.add_row("emergency resp.", f"{DASH} (no event)")
        return Panel(table.text, title="market", border_style="magenta")

    def _trust_panel(self) -> Panel:
        m = self.metrics
        table = _Rows(19)
        table.add_row("contracts signed", fmt(m.get("contracts_signed"), "{:,d}"))
        table.add_row("verified", fmt(m.get("contracts_verified"), "{:,d}"))
        table.add_row("rejected", _rejected_text(m, f"{m.get('contracts_rejected') or 0:,d}"))
        table.add_row("blocked attempts", fmt(m.get("blocked_attempts"), "{:,d}"))
        table.add_row("executed violations", _violations_text(m, ""))
        return Panel(table.text, title="trust (IATP) · kernel", border_style="green")

    def _counters_panel(self) -> Panel:
        """The compact layout's kernel, trust and bus counters, a line each (the bus: all
        lanes; p99 is the slowest lane's)."""
        m, lanes = self.metrics, self.bus_lanes.values()
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("kernel ", style="dim")
        text.append(_violations_text(m, " violations"))
        text.append(f" · {compact_count(m.get('blocked_attempts'))} blocked attempts")
        text.append("\ncontracts ", style="dim")
        text.append(f"{compact_count(m.get('contracts_signed'))} signed · "
                    f"{compact_count(m.get('contracts_verified'))} verified · ")
        text.append(_rejected_text(
            m, f"{compact_count(m.get('contracts_rejected') or 0)} rejected"))
        text.append("\nbus ", style="dim")
        totals = {key: sum(s.get(key) or 0 for s in lanes)
                  for key in ("published", "delivered", "deferred", "dropped")}
        p99 = [s.get("latency_p99_ms") for s in lanes if not is_missing(s.get("latency_p99_ms"))]
        text.append(" · ".join(f"{compact_count(v)} {k}" for k, v in totals.items())
                    + f" · p99 {fmt(max(p99) if p99 else None, '{:.1f}')} ms")
        return Panel(text, title="trust (IATP) · kernel · bus", border_style="green")

    def _bus_panel(self) -> Panel:
        lanes = list(self.bus_lanes.items())
        rows = _Rows(9)
        rows.add_row("lane", "".join(f" {_LANE_SHORT.get(k, k.lower()):>5}" for k, _ in lanes))
        for key, label, spec in _BUS_ROWS:
            cells = [compact_count(s.get(key)) if spec == "count" else fmt(s.get(key), spec)
                     for _, s in lanes]
            rows.add_row(label, "".join(f" {c:>5}" for c in cells))
        return Panel(rows.text, title="agent message bus", border_style="white")

    def _feed_panel(self, rows: int) -> Panel:
        lines = list(self.feed)[-rows:]
        text = Text(no_wrap=True, overflow="ellipsis")
        for i, line in enumerate(lines):
            style = ("bold red" if "EMERGENCY" in line or "rejected" in line
                     else "cyan" if "agreement" in line else "")
            text.append(line, style=style)
            if i < len(lines) - 1:
                text.append("\n")
        if not lines:
            text.append("(no market events yet)", style="dim")
        return Panel(text, title="market events", border_style="white", height=rows + 2)


#: the summary's row after the nadir: its margin to ERCOT's first UFLS stage (DESIGN §3)
UFLS_ROW_LABEL = f"nadir − first UFLS stage ({UFLS_FIRST_STAGE_HZ:g} Hz)"


def ufls_margin_text(nadir_hz: Any) -> str:
    """``nadir_hz − UFLS_FIRST_STAGE_HZ`` signed to 4 decimals, marked "below: load shed"
    when negative; "—" without a nadir."""
    if is_missing(nadir_hz):
        return DASH
    margin = float(nadir_hz) - UFLS_FIRST_STAGE_HZ
    return f"{margin:+.4f}" + (" (below: load shed)" if margin < 0 else "")


def summary_table(metrics: Mapping[str, Any], title: str | None = None) -> Table:
    """The end-of-run KPI table (rows :data:`SUMMARY_ROWS`; "—" where not measured;
    the reserve answering within 100 ms "— (not yet)" after a response whose 100 ms
    window the run stopped inside, e.g. ``--steps``),
    with the nadir's margin to the first UFLS stage (:func:`ufls_margin_text`) after it
    and, when there are any, the contracts still pending at the end
    (:func:`contracts_pending`) after the lost ones.

    :param metrics: the dict of :meth:`GridSwarmEnv.episode_metrics`.
    :param title: optional table title.
    """
    table = Table(title=title or None, title_justify="left")
    table.add_column("KPI")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for key, label, unit, spec in SUMMARY_ROWS:
        value = metrics.get(key)
        missing = f"{DASH} (none)" if key.startswith(("emergency", "stab")) else DASH
        if (key == "emergency_response_mw_100ms"
                and not is_missing(metrics.get("emergency_response_latency_ms"))):
            missing = f"{DASH} (not yet)"   # a response, but its 100 ms window not ended
        text = fmt(value, spec, missing)
        table.add_row(label, text, unit)
        if key == "frequency_nadir_hz":
            table.add_row(UFLS_ROW_LABEL, ufls_margin_text(value), "Hz")
        elif key == "contracts_lost":
            pending = contracts_pending(metrics)
            if pending:
                table.add_row(PENDING_ROW_LABEL, f"{pending:d}", "")
    return table


PENDING_ROW_LABEL = "contracts for windows after the run"


def contracts_pending(metrics: Mapping[str, Any]) -> int:
    """Contracts signed but neither verified, rejected nor lost: those awarded in the
    run's last round, whose delivery window starts after its last step (a run cut short
    by ``--steps``, or an episode whose last round bought energy), so never dispatched;
    0 when a count is missing."""
    counts = [metrics.get(k) for k in ("contracts_signed", "contracts_verified",
                                       "contracts_rejected", "contracts_lost")]
    if any(is_missing(c) for c in counts):
        return 0
    signed, verified, rejected, lost = (int(c) for c in counts)
    return max(signed - verified - rejected - lost, 0)
