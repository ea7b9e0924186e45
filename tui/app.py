"""The deck's application: modes, keys, the live feed, and how errors reach the operator.

One worker follows the gateway's event feed for the whole app (the client reconnects by
itself) and hands the events to every mounted screen, gathered a few times a second
(`DELIVER_SECONDS`) so a burst of thousands costs each screen a few updates, not one
message per event; the app itself keeps what every
screen shows the same way: the connection state, the pending-approvals badge, and the
queue history behind the dashboard's sparkline. API errors become notifications, never
tracebacks. The app owns the client it is given and closes it when it exits.

"● live" means the feed is up *and* the last API call got an answer: the feed rides one
long-lived connection and can stay up while every other request fails, so while calls
fail the header says "API unreachable" with the cause, and a probe every few seconds
finds out when they answer again.
"""

from __future__ import annotations

import gc
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen

from services.client import (
    CONNECTED,
    DISCONNECTED,
    RECONNECTED,
    AsyncFerrumDeck,
    Conflict,
    FerrumDeckError,
    Forbidden,
    GatewayUnavailable,
    LiveEvent,
    NotFound,
    Unauthorized,
)
from services.contract.api import ApprovalStatus
from services.contract.events import ApprovalChanged, EventName
from services.contract.queue import QueueStats
from tui.messages import LiveUpdate
from tui.screens.approvals import ApprovalsScreen
from tui.screens.audit import AuditScreen
from tui.screens.command import COMMANDS, CommandScreen
from tui.screens.command import HELP as COMMAND_HELP
from tui.screens.dashboard import DashboardScreen
from tui.screens.deck import DeckScreen
from tui.screens.help import HelpScreen, keys_of
from tui.screens.run_detail import RunDetailScreen
from tui.screens.runs import RunsScreen
from tui.single_flight import SingleFlight
from tui.widgets.nav_bar import TABS

Clock = Callable[[], datetime]
_PALETTE_ACTIONS: dict[type[Screen[Any]], tuple[tuple[str, str, str], ...]] = {
    RunDetailScreen: (
        ("Cancel this run", "Cancel the run shown (asks first)", "cancel_run"),
        ("Requeue this run", "Queue a dead-lettered run again (asks first)", "requeue_run"),
    ),
    ApprovalsScreen: (
        ("Approve", "Approve the selected or marked calls, with a reason", "decide(True)"),
        ("Reject", "Reject the selected or marked calls, with a reason", "decide(False)"),
        (
            "Mark unknown outcomes",
            "Mark every call retrying one of unknown outcome",
            "mark_unknown",
        ),
        (
            "Mark this worker's unknown outcomes",
            "Mark the calls of unknown outcome the selected call's worker left",
            "mark_worker",
        ),
    ),
    AuditScreen: (("Verify the audit chain", "Check every link of the hash chain", "verify"),),
}
"""What the palette offers on a screen besides navigation: the screen's own actions."""
QUEUE_SAMPLES = 300  # five minutes at one `queue` event a second
_PROBE_SECONDS = 2.0
DELIVER_SECONDS = 0.25


def _utc_now() -> datetime:
    return datetime.now(UTC)


def settle_heap() -> None:
    """Moves what is alive before the deck starts (modules, classes, functions: most of
    its objects) out of the garbage collector's sight. Each full collection then scans
    only what the deck made since, and those pauses are what a key press waits behind in
    a burst: 50-84 ms of CPU each before, 20-38 after (bench.deck_burst)."""
    gc.collect()
    gc.freeze()


class FerrumDeckApp(App[None]):
    CSS_PATH = "ferrumdeck.tcss"
    TITLE = "FerrumDeck"
    # Below 100 columns a list and its detail stack instead of sharing the width, so an
    # 80x24 terminal reads a step or an approval in lines of 80, not of 12. (Textual types
    # it `ClassVar[...] | None`, which mypy takes for an instance variable.)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "dashboard": DashboardScreen,
        "runs": RunsScreen,
        "detail": RunDetailScreen,
        "approvals": ApprovalsScreen,
        "audit": AuditScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(str(n), f"go('{mode}')", label.split(" ", 1)[1], show=False)
            for n, (mode, label) in enumerate(TABS, start=1)
        ),
        Binding("question_mark", "help", "Help"),
        Binding("colon", "command", "Command", show=False),
        # Priority: in a filter, ctrl+c would copy; an operator means quit, as in k9s.
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("q", "leave(True)", "Back/Quit"),
        Binding("escape", "leave(False)", "Back", show=False),
    ]

    connection: reactive[str] = reactive("connecting")
    pending: reactive[str] = reactive("0")

    def __init__(self, client: AsyncFerrumDeck, *, clock: Clock = _utc_now) -> None:
        super().__init__()
        self.client = client
        self.clock = clock
        self.queue_history: deque[int] = deque(maxlen=QUEUE_SAMPLES)
        self.queue_stats: QueueStats | None = None
        self.selected_run: str | None = None
        self.listeners: set[Screen[None]] = set()
        self.api_error: str | None = None
        self._feed = "connecting"
        self._pending = SingleFlight(self, self._fetch_pending, "pending")
        self._undelivered: list[LiveEvent] = []
        client.watch_reachability(self._on_reachability)

    def on_mount(self) -> None:
        self.switch_mode("dashboard")
        self.follow_live()
        self.set_interval(_PROBE_SECONDS, self._probe_api)
        self.set_interval(DELIVER_SECONDS, self._deliver)

    async def on_unmount(self) -> None:
        await self.client.aclose()

    # navigation

    def action_go(self, mode: str) -> None:
        if not isinstance(self.screen, ModalScreen) and self.current_mode != mode:
            self.switch_mode(mode)

    def action_leave(self, quit_at_top: bool) -> None:
        if isinstance(self.screen, ModalScreen):
            return
        if self.current_mode == "detail":
            self.switch_mode("runs")
        elif self.current_mode != "dashboard":
            self.switch_mode("dashboard")
        elif quit_at_top:
            self.exit()

    def action_help(self) -> None:
        screen = self.screen
        if isinstance(screen, ModalScreen):
            return
        here = keys_of(screen, self)
        if isinstance(screen, DeckScreen) and screen.LIST is not None:
            here += keys_of(screen.query_one(screen.LIST), self)
        name = dict(TABS).get(self.current_mode, "").partition(" ")[2]
        commands = [(f":{verb}", what) for verb, what in COMMANDS]
        self.push_screen(
            HelpScreen([(name, here), ("Everywhere", keys_of(self, self)), ("Commands", commands)])
        )

    def action_command(self) -> None:
        if not isinstance(self.screen, ModalScreen):
            self.push_screen(CommandScreen(), self._on_command)

    def _on_command(self, command: str | None) -> None:
        if command is not None:
            self.run_command(command)

    @work(group="command")
    async def run_command(self, command: str) -> None:
        verb, _, argument = command.removeprefix(":").partition(" ")
        argument = argument.strip()
        modes = {mode for mode, _ in TABS} - {"detail"}
        if verb == "run" and argument:
            await self._open_run_named(argument)
        elif verb == "agent" and argument:
            await self.switch_mode("runs")
            screen = self.screen
            if isinstance(screen, RunsScreen):
                screen.show_agent(argument)
        elif verb == "find" and argument:
            await self.switch_mode("runs")
            screen = self.screen
            if isinstance(screen, RunsScreen):
                screen.search(argument)
        elif verb in modes and not argument:
            self.switch_mode(verb)
        else:
            self.notify(f"Unknown command {command!r}. {COMMAND_HELP}", severity="error")

    async def _open_run_named(self, name: str) -> None:
        """A whole id, or the end of one as the screens show it."""
        try:
            uuid.UUID(name)
        except ValueError:
            pass
        else:
            self.open_run(name)
            return
        try:
            page = await self.client.runs(id_ends_with=name.lower(), limit=2)
        except FerrumDeckError as error:
            self.report(error)
            return
        if len(page.items) == 1:
            self.open_run(str(page.items[0].id))
        elif not page.items:
            self.notify(f"No run's id ends with {name!r}.", severity="error")
        else:
            self.notify(f"More than one run's id ends with {name!r}: type more of it.")

    def open_run(self, run_id: str) -> None:
        self.selected_run = run_id
        self.switch_mode("detail")

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, label in TABS:
            name = label.split(" ", 1)[1]
            yield SystemCommand(f"Go to {name}", f"Show the {name} screen", self._goer(mode))
        yield SystemCommand("Help", "The keys of this screen", self.action_help)
        for title, help_, action in _PALETTE_ACTIONS.get(type(screen), ()):
            yield SystemCommand(title, help_, self._doer(screen, action))

    @staticmethod
    def _doer(screen: Screen[object], action: str) -> Callable[[], object]:
        return lambda: screen.run_action(action)

    def _goer(self, mode: str) -> Callable[[], None]:
        return lambda: self.action_go(mode)

    # the live feed

    @work(exclusive=True, group="live")
    async def follow_live(self) -> None:
        try:
            async for event in self.client.events():
                self._on_live(event)
        except FerrumDeckError as error:
            self._show_feed("offline")
            self.report(error)

    def _show_feed(self, state: str) -> None:
        self._feed = state
        self._show_connection()

    def _on_reachability(self, error: GatewayUnavailable | None) -> None:
        self.api_error = None if error is None else str(error)
        self._show_connection()

    def _show_connection(self) -> None:
        down = self._feed == "live" and self.api_error is not None
        self.connection = "api-down" if down else self._feed

    def _probe_api(self) -> None:
        if self.api_error is not None:
            self.refresh_pending()

    def _on_live(self, event: LiveEvent) -> None:
        if event.name in (CONNECTED, RECONNECTED):
            self._show_feed("live")
            self.refresh_pending()
        elif event.name == DISCONNECTED:
            self._show_feed("reconnecting")
        elif event.name == EventName.RESYNC:
            self.refresh_pending()
        elif isinstance(event.payload, QueueStats):
            self.queue_stats = event.payload
            # The project's own backlog; the stream's depth where the operator shows it.
            stats = self.queue_stats
            shown = stats.depth if stats.depth is not None else stats.waiting
            self.queue_history.append(shown or 0)
        elif isinstance(event.payload, ApprovalChanged):
            self.refresh_pending()
            if event.payload.status is ApprovalStatus.PENDING:
                self.notify(
                    f"{event.payload.agent} asks to call {event.payload.tool}: press 4 to decide.",
                    title="Approval requested",
                    severity="warning",
                )
        self._undelivered.append(event)

    def _deliver(self) -> None:
        if not self._undelivered:
            return
        events, self._undelivered = self._undelivered, []
        for screen in list(self.listeners):
            screen.post_message(LiveUpdate(events))

    def refresh_pending(self) -> None:
        self._pending.request()

    async def _fetch_pending(self) -> None:
        try:
            page = await self.client.approvals(status="pending", limit=200)
        except FerrumDeckError:
            return  # the connection indicator already tells the operator
        self.pending = f"{len(page.items)}{'+' if page.next_cursor else ''}"

    # errors

    def report(self, error: FerrumDeckError) -> None:
        if isinstance(error, Unauthorized):
            message = "The gateway refused the API key (401). Check --key / FERRUMDECK_API_KEY."
        elif isinstance(error, GatewayUnavailable):
            message = f"Gateway unreachable: {error}"
        elif isinstance(error, Conflict | Forbidden | NotFound):
            message = error.message
        else:
            message = str(error)
        self.notify(message, title="Error", severity="error", timeout=8)
