"""The one wrapper around Rich: status to stderr, data to stdout; NO_COLOR and non-TTYs respected."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


class _Stdout(Console):
    """Rich ends the process (exit 1) when its reader goes away; the terminal decides instead."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


class Terminal:
    """Status and messages to stderr, data to stdout. ``failures()`` turns aichaos's errors into
    messages and their documented exit codes, the same way in every command."""

    def __init__(self) -> None:
        no_color = bool(os.environ.get("NO_COLOR"))
        self.err = Console(stderr=True, no_color=no_color, highlight=False, soft_wrap=True)
        self.out: Console = _Stdout(no_color=no_color, highlight=False, soft_wrap=True)
        if not self.out.is_terminal:  # logs and CI: wide enough that tables do not fold every cell
            self.out.width = max(self.out.width, 140)
        self.stdout_closed = False

    def _to_stdout(self, write: Callable[[], None]) -> None:
        """Write data to stdout; a reader that went away (``aichaos run x.yaml | head``) ends the data,
        not the run: the journal, the teardown and the exit code do not depend on stdout."""
        if self.stdout_closed:
            return
        try:
            write()
        except BrokenPipeError:
            self.stdout_closed = True
            # later writes and the interpreter's own flush at exit must not fail on it again
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.file.fileno())
                os.close(devnull)

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        """Inside, an invalid file prints each problem (file:line key) and exits 2; any other aichaos
        error prints its message and hint and exits with its code."""
        import typer

        from aichaos.errors import AichaosError, ExitCode, ExperimentError

        try:
            yield
        except ExperimentError as exc:
            for problem in exc.problems:
                self.error(str(problem))
            raise typer.Exit(ExitCode.INVALID) from None
        except AichaosError as exc:
            self.error(str(exc))
            raise typer.Exit(exc.exit_code) from None

    def info(self, text: str) -> None:
        self.err.print(escape(text))

    def success(self, text: str) -> None:
        self.err.print(f"[green]{escape(text)}[/green]")

    def warning(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {escape(text)}")

    def error(self, text: str) -> None:
        self.err.print(f"[bold red]error:[/bold red] {escape(text)}")

    def data(self, text: str) -> None:
        self._to_stdout(lambda: self.out.print(escape(text), soft_wrap=True))

    def raw(self, text: str) -> None:
        """Exact text to stdout (JSON, YAML): no markup, no wrapping."""

        def write() -> None:
            self.out.file.write(text if text.endswith("\n") else text + "\n")
            self.out.file.flush()

        self._to_stdout(write)

    def print_table(self, table: Table) -> None:
        self._to_stdout(lambda: self.out.print(table))

    def table(self, title: str, headers: list[str], rows: list[list[str]],
              styles: dict[str, str] | None = None) -> None:
        table = Table(title=title, title_justify="left", show_lines=False)
        for h in headers:
            table.add_column(h, overflow="fold")
        for row in rows:
            cells: list[Any] = []
            for cell in row:
                style = (styles or {}).get(cell)
                cells.append(f"[{style}]{escape(cell)}[/{style}]" if style else escape(cell))
            table.add_row(*cells)
        self._to_stdout(lambda: self.out.print(table))
