"""`ndup review`: the latest plan, one group at a time, in the terminal. The only module that uses Textual.

Each group's files are shown side by side: a thumbnail (real pixels in terminals that speak the kitty
or sixel graphics protocols, coloured half blocks elsewhere, through textual-image), then the facts a
person decides on, and the action each file gets. Every key press that decides something is saved
to the cache at once (ndup.decisions -> Store), so quitting and coming back resumes where one was:
the review opens at the first group nobody has decided yet.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, HorizontalScroll, Vertical
from textual.widgets import Footer, Static

from ndup import decisions
from ndup.decisions import GroupView, IgnoreIndex
from ndup.plan import human_bytes
from ndup.records import Plan
from ndup.render import printable

THUMB_SIDE = 480  # pixels decoded for a thumbnail: plenty for a terminal cell grid
CARD_MIN = 36  # columns a file's card needs for its facts
ACTION_LABEL = {
    "keep": ("KEEP", "bold green"),
    "delete": ("DELETE", "bold red"),
    "review": ("UNDECIDED (kept)", "bold yellow"),
}
STATUS_LABEL = {"open": "not decided", "accepted": "accepted", "not_duplicates": "not duplicates: all kept"}


# ---- facts shown under each picture ------------------------------------------------------------------


def capture_date(path: str, capture_time: str | None) -> str:
    """When the photo was taken (from the scan's metadata), else when the file was last modified."""
    if capture_time:
        return "taken " + capture_time.replace("T", " ")[:19]
    try:
        when = datetime.datetime.fromtimestamp(os.stat(path).st_mtime)
        return "modified " + when.strftime("%Y-%m-%d %H:%M:%S")
    except OSError:
        return "file missing"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def short_path(path: str, width: int) -> str:
    path = printable(path)
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def open_in_viewer(path: str) -> str | None:
    """Open a file in the system's viewer; returns an error message, or None."""
    try:
        if sys.platform == "win32":
            os.startfile(path)  # type: ignore[attr-defined]
            return None
        command = ["open", path] if sys.platform == "darwin" else ["xdg-open", path]
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)  # fmt: skip
        return None
    except OSError as e:
        return f"cannot open a viewer ({e.strerror or e}); the file is {path}"


def image_widget_class():
    """The textual-image widget for this terminal, or None to show no pictures.

    kitty/sixel terminals get real pixels; other terminals colour half blocks. With NO_COLOR and no
    graphics protocol there is nothing faithful to draw, so pictures are left out.
    """
    if os.environ.get("NDUP_REVIEW_IMAGES", "").lower() in ("0", "off", "no"):
        return None
    try:
        import textual_image.renderable as renderables
        from textual_image.widget import HalfcellImage, Image
    except Exception:  # a terminal textual-image cannot talk to: words only
        return None
    graphics = renderables.Image in (renderables.TGPImage, renderables.SixelImage)
    if graphics:
        return Image
    if os.environ.get("NO_COLOR"):
        return None
    return HalfcellImage  # also off a terminal (tests, screenshots), where textual-image would pick plain text


# ---- widgets ------------------------------------------------------------------------------------------


class Card(Vertical):
    """One file of the group: its picture, facts and action."""

    DEFAULT_CSS = """
    Card { width: 40; height: 100%; border: round $panel; padding: 0 1; }
    Card.selected { border: heavy $accent; }
    Card .thumb { height: 1fr; width: 100%; align: center middle; }
    Card .thumb > * { width: auto; height: auto; }
    Card .facts { height: auto; }
    """

    def __init__(self, index: int, path: str, image_class, **kw):
        super().__init__(**kw)
        self.index = index
        self.path = path
        self.image_class = image_class
        self.facts = Static("", classes="facts")

    def compose(self) -> ComposeResult:
        with Horizontal(classes="thumb"):
            yield self._thumbnail()
        yield self.facts

    def _thumbnail(self):
        if self.image_class is not None:
            try:
                from ndup.decode import load_oriented

                return self.image_class(load_oriented(self.path, THUMB_SIDE))
            except Exception as e:  # missing, changed, unreadable: say so in place of the picture
                return Static(Text(f"(no picture: {type(e).__name__})", style="dim"))
        return Static(Text("(pictures off)", style="dim"))

    def show(self, v: GroupView, selected: bool, date: str) -> None:
        m = v.member(self.path)
        action = v.actions[self.path]
        label, style = ACTION_LABEL[action]
        text = Text()
        marks = " ★ keeper" if self.path == v.keep else " (the plan's keeper)" if self.path == v.group.keep else ""
        text.append(f"{label}{marks}\n", style=style)
        text.append(f"{m.width}x{m.height} · {human_bytes(m.size)} · {m.format}\n")
        text.append(f"{date}\n")
        text.append(f"{v.group.tier} · score {m.score:.2f}\n")
        width = max(self.content_size.width, CARD_MIN - 4)
        text.append(short_path(os.path.basename(m.path), width) + "\n", style="bold" if selected else "")
        text.append(short_path(os.path.dirname(m.path), width) + "\n", style="dim")
        text.append(v.why[self.path], style="dim")
        self.facts.update(text)
        self.set_class(selected, "selected")


class ReviewApp(App):
    """Review a plan's groups; decisions go to `store` as they are made."""

    TITLE = "ndup review"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #title { height: 1; background: $boost; padding: 0 1; }
    #cards { height: 1fr; }
    #message { height: 1; padding: 0 1; color: $text-muted; }
    """
    BINDINGS: ClassVar = [
        Binding("n,pagedown", "next_group", "Next"),
        Binding("p,pageup", "prev_group", "Prev"),
        Binding("left,h", "select(-1)", "Left", show=False),
        Binding("right,l", "select(1)", "Right", show=False),
        Binding("k", "keeper", "Keeper"),
        Binding("space,t", "toggle", "Toggle", key_display="␣"),
        Binding("a", "accept", "Accept"),
        Binding("x", "not_duplicates", "Not dup"),
        Binding("u", "reset", "Reset", show=False),
        Binding("o", "open", "Open"),
        Binding("q,escape", "quit", "Quit"),
    ]

    def __init__(self, store, plan: Plan, opener: Callable[[str], str | None] = open_in_viewer, images=True):
        super().__init__()
        self.store = store
        self.plan = plan
        self.opener = opener
        self.image_class = image_widget_class() if images else None
        self.views = decisions.views(plan, store)
        self.ignored = IgnoreIndex(store.ignored_hash_sets())
        self.index = next((i for i, v in enumerate(self.views) if not v.decided), 0)
        self.selected = 0
        self._dates: dict[str, str] = {}
        self._cards: list[Card] = []

    # ---- layout -----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("", id="title")
        yield HorizontalScroll(id="cards", can_focus=False)  # arrow keys choose files, not scroll
        yield Static("", id="message")
        yield Footer()

    async def on_mount(self) -> None:
        await self._show_group()
        left = sum(not v.decided for v in self.views)
        self.say(f"{plural(len(self.views), 'group')}, {left} not decided yet. Decisions are saved as you make them.")

    @property
    def view(self) -> GroupView:
        return self.views[self.index]

    def say(self, message: str) -> None:
        self.query_one("#message", Static).update(Text(message))

    async def _show_group(self) -> None:
        box = self.query_one("#cards", HorizontalScroll)
        await box.remove_children()
        self._cards = [Card(i, m.path, self.image_class) for i, m in enumerate(self.view.members)]
        await box.mount(*self._cards)
        self.selected = min(self.selected, len(self._cards) - 1)
        self._size_cards()
        self._refresh()

    def _size_cards(self) -> None:
        """As many cards side by side as fit at CARD_MIN columns each (two in 80 columns); the rest scroll."""
        width = self.query_one("#cards", HorizontalScroll).size.width or self.size.width
        per_row = max(1, min(len(self._cards), width // CARD_MIN))
        for card in self._cards:
            card.styles.width = width // per_row

    def on_resize(self) -> None:
        if self._cards:
            self._size_cards()

    def _refresh(self) -> None:
        v = self.view
        doomed = v.to_delete()
        title = Text.assemble(
            (f"Group {self.index + 1}/{len(self.views)} ", "bold"),
            f"· {v.group.tier} · {len(v.members)} files · ",
            f"{len(doomed)} to delete ({human_bytes(sum(m.size for m in doomed))}) · ",
            (STATUS_LABEL[v.status], "bold green" if v.status == "accepted" else ""),
        )
        self.query_one("#title", Static).update(title)
        missing = [c.path for c in self._cards if c.path not in self._dates]
        if missing:
            times = {r.path: r.facts.capture_time for r in self.store.image_records(missing)}
            self._dates.update({p: capture_date(p, times.get(p)) for p in missing})
        for card in self._cards:
            card.show(v, card.index == self.selected, self._dates[card.path])
        if self._cards:
            self._cards[self.selected].scroll_visible(animate=False)

    def _reload_view(self) -> None:
        v = self.view
        decision = self.store.group_decisions([v.signature]).get(v.signature)
        self.views[self.index] = decisions.view(v.group, v.hashes, decision, self.ignored)

    def _save(self, decision) -> None:
        decisions.save(self.store, self.plan.run_id, self.view, decision)
        self._reload_view()

    # ---- actions ----------------------------------------------------------------------------------
    async def _go(self, index: int) -> None:
        if 0 <= index < len(self.views) and index != self.index:
            self.index, self.selected = index, 0
            self._reload_view()
            await self._show_group()
        elif index >= len(self.views):
            left = sum(not v.decided for v in self.views)
            self.say(f"That was the last group ({left} not decided). Press q to quit, then `ndup apply`.")

    async def action_next_group(self) -> None:
        await self._go(self.index + 1)

    async def action_prev_group(self) -> None:
        await self._go(self.index - 1)

    def action_select(self, step: int) -> None:
        self.selected = (self.selected + step) % len(self._cards)
        self._refresh()

    def _path(self) -> str:
        return self._cards[self.selected].path

    def action_keeper(self) -> None:
        path = self._path()
        self._save(decisions.choose_keeper(self.view, path))
        self.say(f"Keeper is now {short_path(path, 60)}")
        self._refresh()

    def action_toggle(self) -> None:
        path = self._path()
        new = decisions.toggle(self.view, path)
        if new is None:
            self.say("That is the keeper: press k on another file to keep that one instead")
            return
        self._save(new)
        self.say(f"{short_path(path, 60)}: {self.view.actions[path]}")
        self._refresh()

    async def action_accept(self) -> None:
        self._save(decisions.accept(self.view))
        doomed = self.view.to_delete()
        self.say(f"Accepted group {self.index + 1}: {plural(len(doomed), 'file')} go when you run `ndup apply`")
        self._refresh()
        await self._go(self.index + 1)

    async def action_not_duplicates(self) -> None:
        decisions.mark_not_duplicates(self.store, self.plan.run_id, self.view)
        self.ignored = IgnoreIndex(self.store.ignored_hash_sets())
        self._reload_view()
        self.say(f"Group {self.index + 1}: not duplicates; all kept, and remembered for later scans")
        self._refresh()
        await self._go(self.index + 1)

    def action_reset(self) -> None:
        decisions.reset(self.store, self.view)
        self.ignored = IgnoreIndex(self.store.ignored_hash_sets())
        self._reload_view()
        self.say(f"Group {self.index + 1}: back to the proposed plan")
        self._refresh()

    def action_open(self) -> None:
        problem = self.opener(self._path())
        self.say(problem or f"Opened {short_path(self._path(), 50)} in the system viewer")

    def summary(self) -> str:
        counts = {s: sum(v.status == s for v in self.views) for s in STATUS_LABEL}
        return (
            f"{plural(counts['accepted'], 'group')} accepted, {counts['not_duplicates']} marked not duplicates, "
            f"{counts['open']} not decided"
        )


def run_review(store, plan: Plan) -> str:
    """Run the UI in this terminal until the person quits; returns a one-line summary."""
    image_widget_class()  # textual-image asks the terminal what it can draw before Textual takes it over
    app = ReviewApp(store, plan)
    app.run()
    return app.summary()
