from __future__ import annotations

from pathlib import Path

import typer


def cleanup(
    runs_dir: Path = typer.Option(Path("runs"), help="Where run directories are."),
    run: str | None = typer.Option(None, "--run", help="Only this run id."),
) -> None:
    """Undo what runs killed with kill -9 left behind: faults, proxies, processes."""
    from aichaos.cli.terminal import Terminal
    from aichaos.runtime.cleanup import clean_run, stale_runs

    term = Terminal()
    states = [s for s in stale_runs(runs_dir) if run is None or s.run_id == run]
    if not states:
        term.info("nothing to clean up")
        return
    for state in states:
        term.info(f"run {state.run_id}:")
        for line in clean_run(state) or ["nothing was left"]:
            term.data(f"  {line}")
