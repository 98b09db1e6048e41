from __future__ import annotations

from pathlib import Path

import typer


def compare(
    a: Path = typer.Argument(..., help="Run A (the reference): a journal.json or its run directory.",
                             show_default=False),
    b: Path = typer.Argument(..., help="Run B (the candidate): a journal.json or its run directory.",
                             show_default=False),
    max_regression: list[str] = typer.Option(
        [], "--max-regression",
        help="[PHASE.]METRIC=N% (B at most N% worse than A) or [PHASE.]METRIC=N (at most N worse, in the "
             "metric's units); repeatable. Metrics: p50_ms, p95_ms, p99_ms, error_rate, rps, recovery_time, "
             "detect_time, scraped SERVICE/SELECTOR."),
) -> None:
    """Compare two runs: per phase and per metric, the change from A to B, and the gates of each.

    Exit 0 when B is within every --max-regression limit; 1 when B is worse than A beyond one;
    2 when a journal cannot be read or a limit is malformed or names a metric neither run has.
    """
    from aichaos.cli.terminal import Terminal
    from aichaos.errors import ExitCode, UsageError
    from aichaos.report.compare import check_limits, compare, comparison_blocks, parse_limit
    from aichaos.report.formats import Table, rich_table
    from aichaos.report.journal import read_journal

    term = Terminal()
    try:
        limits = [parse_limit(text) for text in max_regression]
        comparison = compare(read_journal(a), read_journal(b))
        regressions = check_limits(comparison, limits)
    except UsageError as exc:
        term.error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except ValueError as exc:
        term.error(str(exc))
        raise typer.Exit(ExitCode.INVALID) from None
    printers = {"info": term.info, "success": term.success, "warning": term.warning, "error": term.error}
    for block in comparison_blocks(comparison, regressions):
        if isinstance(block, Table):
            term.print_table(rich_table(block))
        else:
            printers[block.level](block.text)
    if regressions:
        raise typer.Exit(ExitCode.GATE_FAILED)
    if limits:
        term.success(f"B is within every limit ({', '.join(limit.text for limit in limits)})")
