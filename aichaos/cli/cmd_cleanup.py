from __future__ import annotations

from pathlib import Path

import typer


def cleanup(
    runs_dir: Path | None = typer.Option(None, help="Only runs whose run directory is under this one. Without it: "
                                                    "every run of this user, wherever it ran."),
    run: str | None = typer.Option(None, "--run", help="Only this run id."),
) -> None:
    """Undo what runs killed with kill -9 left behind: faults, proxies, processes.

    Runs are found through the per-user index of live runs ($XDG_STATE_HOME/aichaos/runs, by default
    ~/.local/state/aichaos/runs) and under ./runs (or --runs-dir), from any directory."""
    from aichaos.cli.terminal import Terminal
    from aichaos.runtime.cleanup import clean_run, stale_runs

    term = Terminal()
    states = [s for s in stale_runs(runs_dir) if run is None or s.run_id == run]
    if not states:
        term.info("nothing to clean up")
        return
    for state in states:
        term.info(f"run {state.run_id} ({state.path.parent}):")
        for line in clean_run(state) or ["nothing was left"]:
            term.data(f"  {line}")
