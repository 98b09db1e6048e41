"""The terminal: a reader that closes stdout early never fails the command."""

from __future__ import annotations

import os

from rich.console import Console

from aichaos.cli.terminal import Terminal


def test_a_closed_stdout_ends_the_data_and_nothing_else():
    read, write = os.pipe()
    os.close(read)  # `aichaos run x.yaml | head` once head has exited
    term = Terminal()
    stream = os.fdopen(write, "w")
    term.out = Console(file=stream, no_color=True, width=100)
    term.raw("x" * 200_000)  # more than a pipe holds: the write itself meets the closed end
    assert term.stdout_closed
    term.data("more")  # later writes are dropped quietly
    term.raw("{}")
    stream.close()  # and the interpreter's own flush finds nothing to fail on


def test_rich_output_to_a_closed_stdout_does_not_end_the_process():
    """Rich's own answer to a broken pipe is SystemExit(1); the terminal's is to drop the rest."""
    from rich.table import Table

    from aichaos.cli.terminal import _Stdout

    read, write = os.pipe()
    os.close(read)
    term = Terminal()
    stream = os.fdopen(write, "w")
    term.out = _Stdout(file=stream, no_color=True, width=100)
    table = Table("n")
    for i in range(5000):
        table.add_row(str(i))
    term.print_table(table)  # raised SystemExit(1) with a plain rich Console
    assert term.stdout_closed
    stream.close()
