"""The deck's side of `bench.deck_burst`: runs in the deck's own process, so the CPU it
reports is the deck's alone, and imports the deck from `--deck-path`, so the same probe
measures today's deck (a checkout of main) and this one.

It starts the deck headless (Pilot) on the Runs screen, says `ready`, and then follows
the driver's lines on stdin: `burst` starts the key presses and the CPU meter, `end
<unix time>` stops both and starts waiting for convergence. Its next stdout line is the
result as JSON. Nothing from `services` or `tui` is imported before `--deck-path` is
first on `sys.path`.

* key-press-to-repaint: `down` and `up` in turn on the runs table, one every 200 ms
  after the last was shown, each timed from sending the key to the first frame the
  screen renders with the cursor moved (the compositor's update, taken headless);
* CPU: this process's CPU time over the burst's wall time, a share of one core;
* convergence: from the burst's end until the table's newest rows (a screenful) show
  what the API says of the same runs (id, status, steps, tokens, cost) and the pending
  badge its count, the API read just before and after the deck so both agree.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import Any

SIZE = (160, 45)
ROWS = 30  # the newest rows a 45-line terminal shows
KEY_GAP = 0.2
KEY_TIMEOUT = 60.0
CONVERGE_WITHIN = 180.0


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line.strip())


class _Probe:
    """The deck under test and what is measured of it."""

    def __init__(self, url: str, key: str) -> None:
        import tui.app
        from services.client import AsyncFerrumDeck

        self.url, self.key = url, key
        # as `ferrumdeck tui` starts it (decks before `settle_heap` had no such step)
        getattr(tui.app, "settle_heap", lambda: None)()
        self.app = tui.app.FerrumDeckApp(AsyncFerrumDeck(url, key))
        self.before: str | None = None
        self.waiting = False
        self.shown_at = 0.0
        self.shown = asyncio.Event()
        display = self.app._display

        def timed_display(screen: Any, renderable: Any) -> None:
            display(screen, renderable)
            if renderable is not None and self.waiting and self.cursor_key() != self.before:
                self.waiting = False
                self.shown_at = time.perf_counter()
                self.shown.set()

        self.app._display = timed_display  # type: ignore[method-assign]

    def table(self) -> Any:
        """The runs list: a `RunList`, or the DataTable of a deck from before it."""
        return self.app.screen.query_one("#runs")

    def cursor_key(self) -> str | None:
        runs = self.table()
        if not runs.row_count:
            return None
        if hasattr(runs, "cursor_key"):
            return str(runs.cursor_key)
        key: str | None = runs.coordinate_to_cell_key(runs.cursor_coordinate).row_key.value
        return key

    async def until(self, condition: Any, within: float = 60) -> None:
        from textual.css.query import NoMatches

        deadline = time.monotonic() + within
        while True:
            try:
                if condition():
                    return
            except NoMatches:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the deck did not get there in time")
            await asyncio.sleep(0.05)

    async def press(self, key: str) -> float | None:
        """Seconds from sending `key` to the first frame showing its effect."""
        from textual import events

        self.shown.clear()
        self.before = self.cursor_key()
        self.waiting = True
        sent = time.perf_counter()
        self.app._driver.send_message(events.Key(key, None))  # type: ignore[union-attr]
        try:
            await asyncio.wait_for(self.shown.wait(), KEY_TIMEOUT)
        except TimeoutError:
            return None
        finally:
            self.waiting = False
        return self.shown_at - sent

    def deck_rows(self) -> list[tuple[str, ...]]:
        from textual.coordinate import Coordinate

        runs = self.table()
        if hasattr(runs, "run_ids"):
            columns = ("status", "steps", "tokens", "cost")
            return [
                (run_id, *(runs.cell(run_id, c) for c in columns))
                for run_id in runs.run_ids()[:ROWS]
            ]
        rows = []
        for i in range(min(ROWS, runs.row_count)):
            row_key = runs.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value
            cells = [str(runs.get_cell(row_key, c)) for c in ("status", "steps", "tokens", "cost")]
            rows.append((str(row_key), *cells))
        return rows

    async def converge(self, ended: float) -> tuple[float | None, object]:
        """Seconds after `ended` until the deck shows what the API says; else None and
        what still differs."""
        import httpx

        from tui.humanize import count, money

        async def api(http: httpx.AsyncClient) -> tuple[list[tuple[str, ...]], str]:
            page = (await http.get("/v1/runs", params={"limit": ROWS})).json()
            rows: list[tuple[str, ...]] = [
                (
                    str(run["id"]),
                    str(run["status"]),
                    str(run["steps_count"]),
                    count(run["usage"]["total_tokens"]),
                    money(run["usage"]["cost_usd"]),
                )
                for run in page["items"]
            ]
            query: dict[str, str | int] = {"status": "pending", "limit": 200}
            pending = (await http.get("/v1/approvals", params=query)).json()
            return rows, f"{len(pending['items'])}{'+' if pending['next_cursor'] else ''}"

        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30) as http:
            while time.time() - ended < CONVERGE_WITHIN:
                before = await api(http)
                shown = (self.deck_rows(), self.app.pending)
                if before == shown and await api(http) == before:
                    return time.time() - ended, None
                await asyncio.sleep(0.1)
            rows, badge = await api(http)
        wrong = [(d, a) for d, a in zip(self.deck_rows(), rows, strict=False) if d != a]
        return None, {"rows": wrong[:3], "badge": (self.app.pending, badge)}


async def probe(url: str, key: str) -> None:
    commands: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=_stdin_lines, args=(loop, commands), daemon=True).start()
    deck = _Probe(url, key)
    app = deck.app
    latencies: list[float] = []
    timeouts = 0
    async with app.run_test(size=SIZE) as pilot:
        await deck.until(lambda: app.connection == "live")
        await pilot.press("2")
        await deck.until(lambda: deck.table().row_count > 1)
        print("ready", flush=True)
        if await commands.get() != "burst":
            raise SystemExit("expected burst")
        started_cpu, started = time.process_time(), time.perf_counter()
        ending = asyncio.ensure_future(commands.get())
        while not ending.done():
            latency = await deck.press(("down", "up")[(len(latencies) + timeouts) % 2])
            if latency is None:
                timeouts += 1
            else:
                latencies.append(latency)
            await asyncio.sleep(KEY_GAP)
        cpu = (time.process_time() - started_cpu) / (time.perf_counter() - started)
        converged, mismatch = await deck.converge(float((await ending).split()[1]))
        result = {
            "latencies": latencies,
            "key_timeouts": timeouts,
            "cpu": cpu,
            "converged": converged,
            "mismatch": mismatch,
            "rows": deck.table().row_count,
            "notifications": [str(n.message) for n in app._notifications][-5:],
        }
        # said before the deck stops: a deck may fail on its way out (main's did)
        print(json.dumps(result), flush=True)


def main() -> None:
    url, key, deck_path = sys.argv[1:4]
    sys.path.insert(0, deck_path)
    asyncio.run(probe(url, key))


if __name__ == "__main__":
    main()
