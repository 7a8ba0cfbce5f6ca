"""What every command shares: the --home option, printing, and exit codes.

Exit codes: 0 success; 1 the command ran but found problems (rejected rows,
an invalid identifier, a failed verification, a refusal); 2 it could not run
(bad arguments, configuration, unreadable input) — the message says what to do.
Commands catch nothing but ``CreditExchangeError``, here (:func:`reports_errors`).

Nothing printed is read as Rich markup or emoji codes: names, reasons, file names
and values come from files, the database and other members, and ``[/x]``,
``[red]`` or ``:cn:`` in them print exactly as written. The consoles here have
markup, emoji and highlighting off, and so do the tables printed on them; the
commands' own styling is a ``style=`` argument or a :class:`rich.text.Text`
assembled from (text, style) pieces, never tags inside a string.

Nor does anything printed reach the terminal as a control sequence: a render
hook on both consoles shows C0 and C1 control characters (escape sequences that
would repaint the screen), zero-width and bidirectional formatting characters
(which would reorder or hide text) escaped, as ``\x1b`` or ``\u202e``, in
whatever a command prints, tables and progress bars included.

Where the output is not a terminal device (a file, a pipe, a test's runner), nothing
is wrapped, folded or cut to a screen's width, whatever ``COLUMNS`` says: lines and
table columns take the width their text needs, so a long Chinese name or field stays
whole on its line and ``grep`` finds it. On a terminal, Rich lays the output out to
the window as usual. Rules, which fill whatever width they are given, are drawn at
the width Rich would use (``COLUMNS``, else the window's, else 80).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.align import AlignMethod
from rich.console import (
    Console,
    ConsoleDimensions,
    ConsoleOptions,
    ConsoleRenderable,
    RenderHook,
)
from rich.rule import Rule
from rich.segment import Segment
from rich.style import Style
from rich.text import Text, TextType

from creditexchange.errors import CreditExchangeError, QueryRefused

__all__ = [
    "HomeOption",
    "JsonOption",
    "err",
    "out",
    "outcome_of",
    "print_json",
    "reports_errors",
]

# C0 (but tab and newline) and C1 controls, soft hyphen aside the zero-width and
# bidirectional marks, embeddings, overrides and isolates, line and paragraph
# separators, invisible operators, the byte-order mark, interlinear annotations
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u206f\ufeff\ufff9-\ufffb]"
)


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


class _Inert:
    """A renderable whose text segments carry no control or formatting characters."""

    def __init__(self, inner: ConsoleRenderable) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        for segment in console.render(self.inner, options):
            if segment.control or not _UNSAFE.search(segment.text):
                yield segment
            else:
                yield Segment(_UNSAFE.sub(_escaped, segment.text), segment.style)


class _InertHook(RenderHook):
    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        return [_Inert(r) for r in renderables]


# Wide enough for any line a command prints: a field of thousands of Chinese characters
_UNWRAPPED_WIDTH = 1 << 16


class _Console(Console):
    """A console that wraps to the window on a terminal and nowhere else (see the module)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if options.get("width") is None:
            # Rich freezes COLUMNS as a fixed width here; read it when printing instead,
            # where it applies on a terminal and to rules only
            self._width = None

    def _on_terminal(self) -> bool:
        # the device, not Rich's is_terminal: FORCE_COLOR or TTY_COMPATIBLE ask for
        # colours, not for lines cut to a width nobody is looking at
        try:
            return bool(self.file.isatty())
        except (AttributeError, ValueError):  # no isatty, or a closed file
            return False

    def _usual_size(self) -> ConsoleDimensions:
        """The size Rich gives the output: the window's, else ``COLUMNS`` or 80 wide."""
        return super().size

    @property
    def size(self) -> ConsoleDimensions:
        size = self._usual_size()
        if self._width is not None or self._on_terminal():
            return size
        return ConsoleDimensions(_UNWRAPPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def rule(
        self,
        title: TextType = "",
        *,
        characters: str = "─",
        style: str | Style = "rule.line",
        align: AlignMethod = "center",
    ) -> None:
        """A rule, at the width Rich would give it where the output is not a terminal."""
        rule = Rule(title=title, characters=characters, style=style, align=align)
        self.print(rule, width=self._usual_size().width)


out = _Console(markup=False, emoji=False, highlight=False)
err = _Console(stderr=True, markup=False, emoji=False, highlight=False)
for _console in (out, err):
    _console.push_render_hook(_InertHook())

HomeOption = Annotated[
    Path,
    typer.Option(
        "--home",
        envvar="CREDIT_NODE_HOME",
        help="the node home folder (or CREDIT_NODE_HOME)",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print data as JSON")]

P = ParamSpec("P")
R = TypeVar("R")


# What an error means for the exit status, the most specific first: a refusal by the
# asked member is an answer (1: the command ran, the answer was no); anything else
# means the command could not do its job (2).
_OUTCOMES: tuple[tuple[type[CreditExchangeError], str, int], ...] = (
    (QueryRefused, "refused", 1),
    (CreditExchangeError, "error", 2),
)


def outcome_of(error: CreditExchangeError) -> tuple[str, int]:
    """How a command reports ``error``: its label (``refused``, ``error``) and exit status."""
    return next((label, code) for kind, label, code in _OUTCOMES if isinstance(error, kind))


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a CreditExchangeError into its message on stderr and its exit status."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CreditExchangeError as exc:
            label, code = outcome_of(exc)
            err.print(Text.assemble((f"{label}:", "bold red"), f" {exc}"), soft_wrap=True)
            raise typer.Exit(code) from None

    return wrapper


def print_json(data: Any) -> None:
    """``data`` as JSON, Chinese as it is; control and formatting characters as ``\\uXXXX``
    escapes, which JSON reads back as the same characters."""
    text = json.dumps(data, ensure_ascii=False, indent=2, default=str)
    print(_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))
