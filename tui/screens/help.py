"""`?`: every key of the deck on one page, for operators who do not live in it."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]Everywhere[/b]
  1 … 5        dashboard, runs, run detail, approvals, audit (or click the tabs)
  q / escape   back (q on the dashboard quits)
  ctrl+p       command palette
  :            command: run ID-OR-ITS-END, agent NAME, dashboard, runs, approvals, audit
  ?            this help

[b]Runs[/b]
  /            filter the loaded runs by text
  s / g        filter by status / by agent (sent to the gateway)
  j / k, G     down / up, last
  enter        open the run

[b]Run detail[/b]
  j / k, n / p next / previous step
  c            cancel the run (asks first)

[b]Approvals[/b]
  a / r        approve / reject the selected call, or every marked one (asks for a reason)
  space / *    mark the selected call / mark every call listed

[b]Audit[/b]
  f            edit the filters (action, actor, target, since, until)
  v            verify the hash chain
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help"):
            yield Static(HELP, markup=True)
