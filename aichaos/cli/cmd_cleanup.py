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
    ~/.local/state/aichaos/runs) and under ./runs (or --runs-dir), from any directory. A game-day stack
    whose keeper was killed is one of them; one that is up is taken down only when named (--run ID)."""
    from aichaos.cli.terminal import Terminal
    from aichaos.gameday.control import bring_down, game_days
    from aichaos.runtime.cleanup import clean_run, stale_runs

    term = Terminal()
    states = [s for s in stale_runs(runs_dir) if run is None or s.run_id == run]
    live = [d for d in game_days() if d.keeper_alive() and (runs_dir is None or d.folder.is_relative_to(
        runs_dir.resolve()))]
    for day in live:
        if run is None:
            term.info(f"game-day stack {day.stack_id} is up ({day.folder}): `aichaos stack down --stack "
                      f"{day.stack_id}` or `aichaos cleanup --run {day.stack_id}` takes it down")
        elif day.stack_id == run:
            term.info(f"game-day stack {day.stack_id} ({day.folder}):")
            for line in bring_down(day):
                term.data(f"  {line}")
            return
    if not states:
        term.info("nothing to clean up")
        return
    for state in states:
        term.info(f"run {state.run_id} ({state.path.parent}):")
        for line in clean_run(state) or ["nothing was left"]:
            term.data(f"  {line}")
