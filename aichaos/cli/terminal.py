"""The one wrapper around Rich: status to stderr, data to stdout; NO_COLOR and non-TTYs respected."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


class Terminal:
    def __init__(self) -> None:
        no_color = bool(os.environ.get("NO_COLOR"))
        self.err = Console(stderr=True, no_color=no_color, highlight=False, soft_wrap=True)
        self.out = Console(no_color=no_color, highlight=False, soft_wrap=True)
        if not self.out.is_terminal:  # logs and CI: wide enough that tables do not fold every cell
            self.out.width = max(self.out.width, 140)

    def info(self, text: str) -> None:
        self.err.print(escape(text))

    def success(self, text: str) -> None:
        self.err.print(f"[green]{escape(text)}[/green]")

    def warning(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {escape(text)}")

    def error(self, text: str) -> None:
        self.err.print(f"[bold red]error:[/bold red] {escape(text)}")

    def data(self, text: str) -> None:
        self.out.print(escape(text), soft_wrap=True)

    def raw(self, text: str) -> None:
        """Exact text to stdout (JSON, YAML): no markup, no wrapping."""
        self.out.file.write(text if text.endswith("\n") else text + "\n")
        self.out.file.flush()

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
        self.out.print(table)
