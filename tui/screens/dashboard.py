"""Dashboard (1): is the platform keeping up? Queue depth over the last minutes, what is
pending and for how long, each worker's share and idle time (all from the live feed's
`queue` event, once a second), and what runs did over the last quarter hour, counted by
the gateway's database (`GET /v1/runs/summary`), never by paging through the runs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Sparkline, Static

from services.client import FerrumDeckError, LiveEvent
from services.contract.events import RunChanged
from services.contract.queue import QueueStats
from services.contract.runs import RunStatus
from tui.humanize import count, money
from tui.screens.deck import DeckScreen

WINDOW_MINUTES = 15
_AGENTS_SHOWN = 5
_OPEN = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING_APPROVAL)
# Shown only when there are some: only conversations queued with `if_busy: enqueue` wait.
_OPEN_WHEN_ANY = (RunStatus.WAITING_THREAD,)


class DashboardScreen(DeckScreen):
    MODE = "dashboard"

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="dash-top"):
            with Vertical(classes="panel", id="queue-panel"):
                yield Static("[b]Queue depth[/b] (last 5 min)", markup=True)
                yield Sparkline([], id="depth")
                yield Static("waiting for the first sample…", id="queue-numbers")
            with Vertical(classes="panel", id="runs-panel"):
                yield Static("[b]Runs[/b] (last 15 min)", markup=True)
                yield Static("loading…", id="run-numbers")
        yield Static("[b]Workers[/b]", markup=True, classes="section")
        yield DataTable(id="consumers", cursor_type="none", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#consumers", DataTable)
        table.add_column("consumer", key="name")
        table.add_column("pending", key="pending")
        table.add_column("idle", key="idle")
        self._dirty = False
        self._show_queue()
        self.set_interval(1.0, self._reload_if_dirty)
        self.set_interval(15.0, self._reload_if_current)

    def on_screen_resume(self) -> None:
        self._show_queue()
        self.reload()

    def _reload_if_current(self) -> None:
        if self.is_current:
            self.reload()

    def on_live(self, event: LiveEvent) -> None:
        if isinstance(event.payload, QueueStats):
            if self.is_current:
                self._show_queue()
        elif isinstance(event.payload, RunChanged):
            self._dirty = True

    def _reload_if_dirty(self) -> None:
        """Only while on screen: a hidden dashboard's figures are refetched on resume."""
        if self._dirty and self.is_current:
            self._dirty = False
            self.reload()

    def _show_queue(self) -> None:
        stats = self.deck.queue_stats
        if stats is None:
            return
        self.query_one("#depth", Sparkline).data = list(self.deck.queue_history)
        oldest = (
            "none"
            if stats.oldest_pending_seconds is None
            else f"{stats.oldest_pending_seconds:.0f} s"
        )
        lag = "unknown" if stats.lag is None else str(stats.lag)
        numbers = f"now: waiting {stats.waiting or 0}   running {stats.running or 0}"
        if stats.quota is not None:
            limits = [
                f"{label} {value:g}"
                for label, value in (
                    ("queued ≤", stats.quota.max_queued),
                    ("running ≤", stats.quota.max_running),
                    ("runs/s ≤", stats.quota.runs_per_second),
                )
                if value is not None
            ]
            numbers += "   quota: " + ", ".join(limits)
        if stats.depth is not None:  # the operator shows the platform's stream too
            numbers += (
                f"   depth {stats.depth}   pending {stats.pending}   lag {lag}"
                f"   oldest pending {oldest}"
            )
        self.query_one("#queue-numbers", Static).update(numbers)
        table = self.query_one("#consumers", DataTable)
        table.clear()
        for consumer in stats.consumers or []:
            table.add_row(consumer.name, str(consumer.pending), f"{consumer.idle_seconds:.0f} s")

    async def load(self) -> None:
        try:
            summary = await self.deck.client.run_summary(
                minutes=WINDOW_MINUTES, until=self.deck.clock()
            )
        except FerrumDeckError as error:
            self.report(error)
            return
        lines = [
            "open now  "
            + " · ".join(
                # A status and its count wrap together on a narrow screen.
                f"{s}\N{NO-BREAK SPACE}{summary.open.get(s, 0)}"
                for s in (*_OPEN, *(s for s in _OPEN_WHEN_ANY if summary.open.get(s)))
            ),
            f"started   {summary.started}",
            *(f"  {status:<17}{n}" for status, n in sorted(summary.by_status.items())),
            f"throughput {summary.completed / WINDOW_MINUTES:.1f} completed/min"
            f"   tokens {count(summary.total_tokens)}",
            f"cost {money(summary.cost_usd)}"
            + (f" (+{summary.unpriced} runs of unknown cost)" if summary.unpriced else ""),
            f"dead-lettered {summary.dead_lettered}"
            + ("  (ferrumdeck runs requeue ID)" if summary.dead_lettered else ""),
            f"refused (429) {summary.refused} in the last {summary.refused_minutes} min"
            if summary.refused_minutes
            else "refused (429) not kept for this window",
        ]
        busiest = summary.agents[:_AGENTS_SHOWN]
        if busiest:
            lines.append("by agent  started / completed / failed")
            lines += [
                f"  {a.agent:<17}{a.started} / {a.completed} / {a.failed}  {money(a.cost_usd)}"
                for a in busiest
            ]
        self.query_one("#run-numbers", Static).update("\n".join(lines))
