"""Dashboard (1): is the platform keeping up? Queue depth over the last minutes, what is
pending and for how long, each worker's share and idle time (all from the live feed's
`queue` event, once a second), and what runs did over the last quarter hour."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Sparkline, Static

from services.client import FerrumDeckError, LiveEvent
from services.contract.events import RunChanged
from services.contract.queue import QueueStats
from services.contract.runs import RunStatus
from tui.humanize import count, money
from tui.screens.deck import DeckScreen

WINDOW = timedelta(minutes=15)
_SCAN_LIMIT = 2000
_OPEN = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING_APPROVAL)


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
        super().on_mount()
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
        numbers = f"waiting {stats.waiting or 0}   running {stats.running or 0}"
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
        client, now = self.deck.client, self.deck.clock()
        since = now - WINDOW
        try:
            open_counts = {}
            for status in _OPEN:
                page = await client.runs(status=status, limit=200)
                open_counts[status] = f"{len(page.items)}{'+' if page.next_cursor else ''}"
            statuses: Counter[str] = Counter()
            completed = tokens = unpriced = scanned = 0
            cost = 0.0
            async for run in client.iter_runs(page=200):
                if run.created_at < since or scanned >= _SCAN_LIMIT:
                    break
                scanned += 1
                statuses[run.status.value] += 1
                tokens += run.usage.total_tokens
                if run.usage.cost_usd is None:
                    unpriced += 1
                else:
                    cost += run.usage.cost_usd
                if (
                    run.status is RunStatus.COMPLETED
                    and run.finished_at
                    and run.finished_at >= since
                ):
                    completed += 1
        except FerrumDeckError as error:
            self.report(error)
            return
        minutes = WINDOW.total_seconds() / 60
        lines = [
            "open now  " + " · ".join(f"{s.value} {open_counts[s]}" for s in _OPEN),
            f"started   {sum(statuses.values())}",
            *(f"  {status:<17}{n}" for status, n in sorted(statuses.items())),
            f"throughput {completed / minutes:.1f} completed/min   tokens {count(tokens)}",
            f"cost {money(cost)}" + (f" (+{unpriced} runs of unknown cost)" if unpriced else ""),
        ]
        if scanned >= _SCAN_LIMIT:
            lines.append(f"(newest {_SCAN_LIMIT} runs only)")
        self.query_one("#run-numbers", Static).update("\n".join(lines))
