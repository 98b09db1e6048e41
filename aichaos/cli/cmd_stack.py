"""``aichaos stack up|status|down``: a game-day stack, brought up and left up (``aichaos.gameday``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from aichaos.runtime.registry import RUNTIME_CHOICES  # a table of names: imports no runtime

STACK_OPTION = typer.Option(None, "--stack", help="The game-day stack's id (needed only when several are up).")


def up(
    file: Path = typer.Argument(..., help="A stack file, or an experiment (whose stack is used).", show_default=False),
    runtime: str | None = typer.Option(None, help=f"{', '.join(RUNTIME_CHOICES)} (default: the experiment's, or "
                                                  "auto)."),
    network: str | None = typer.Option(None, help="Docker runtime: 'run' (a network of the stack's own) or 'host'."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where the stack's directory (logs, journal) is created."),
    toxiproxy_url: str | None = typer.Option(None, help="Use the Toxiproxy server at this URL."),
    json_out: bool = typer.Option(False, "--json", help="Print the stack's status as JSON on stdout."),
) -> None:
    """Start a stack and its fault proxy, leave them running, print each service's address and each
    edge's proxy, and return. Faults: `aichaos fault inject`; a live view: `aichaos watch`; the end:
    `aichaos stack down` (or `aichaos cleanup`)."""
    import json

    from aichaos.cli.terminal import Terminal
    from aichaos.errors import ExitCode
    from aichaos.gameday.control import Control

    term = Terminal()
    if runtime is not None and runtime not in RUNTIME_CHOICES:
        term.error(f"--runtime must be {', '.join(RUNTIME_CHOICES[:-1])} or {RUNTIME_CHOICES[-1]}, not {runtime!r}")
        raise typer.Exit(ExitCode.INVALID)
    if network is not None and network not in ("run", "host"):
        term.error(f"--network must be run or host, not {network!r}")
        raise typer.Exit(ExitCode.INVALID)
    try:
        with term.failures():
            day = start_game_day(term, file, runtime, network, runs_dir, toxiproxy_url)
            status = Control(day).status()
    except KeyboardInterrupt:
        term.error("interrupted: the stack was taken down")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    stack_id = day.stack_id
    if json_out:
        term.raw(json.dumps(status, indent=2))
    else:
        print_status(term, status)
    term.success(f"stack {stack_id} is up: `aichaos fault inject TYPE --edge A->B ...`, `aichaos watch`, "
                 "`aichaos stack down`")


def start_game_day(term: Any, file: Path, runtime: str | None, network: str | None, runs_dir: Path,
                   toxiproxy_url: str | None) -> Any:
    """Bring up the stack of ``file`` (a stack file or an experiment) under a keeper; its ``GameDay``."""
    import secrets
    import time

    from aichaos.errors import EnvironmentFailure
    from aichaos.gameday.control import GameDay, start_keeper

    stack_path, default_runtime, default_url = _stack_of(file)
    stack_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    folder = (runs_dir / f"{stack_id}-gameday-{stack_path.stem}").resolve()
    try:
        (folder / "logs").mkdir(parents=True)
    except OSError as exc:
        raise EnvironmentFailure(f"cannot create the stack's directory {folder}: {exc.strerror or exc}") from None
    day = GameDay(stack_id, folder, str(file.resolve()), str(stack_path), runtime or default_runtime, network,
                  toxiproxy_url or default_url)
    day.save()
    term.info(f"game-day stack {stack_id}: {stack_path} (directory {folder})")
    start_keeper(day, term.info)
    return GameDay.read(folder)  # with the keeper's address


def _stack_of(file: Path) -> tuple[Path, str, str | None]:
    """(the stack file, the runtime to default to, the experiment's Toxiproxy URL) of a stack file or an
    experiment; ExperimentError when it is neither, or invalid."""
    from aichaos.experiment.loader import load_experiment, load_stack
    from aichaos.experiment.yamlpos import load_yaml

    data = load_yaml(file).data
    if isinstance(data, dict) and "services" in data:
        load_stack(file)
        return file.resolve(), "auto", None
    loaded = load_experiment(file)
    return loaded.stack_path, loaded.experiment.runtime, loaded.experiment.toxiproxy_url


def print_status(term: Any, status: dict[str, Any]) -> None:
    """A stack's status: its services, edges and active faults (data, on stdout)."""
    term.data(f"stack {status['stack_id']} ({status['runtime']}; {status['stack_file']}; directory "
              f"{status['folder']})")
    for name, service in status["services"].items():
        state = "up" if service["alive"] else ("down (a fault)" if service["down_on_purpose"] else "DOWN")
        metrics = f"  metrics {service['metrics']}" if service["metrics"] else ""
        term.data(f"  service {name:<20} {service['url']:<28} {state}{metrics}")
    for edge, info in status["edges"].items():
        term.data(f"  edge    {edge:<20} proxy {info['proxy']} -> {info['upstream']}")
    proxy = status.get("proxy") or {}
    term.data(f"  fault proxy: {proxy.get('kind')} at {proxy.get('url')}")
    for fault in status["faults"]:
        term.data(f"  fault   {fault_line(fault)}")


def fault_line(fault: dict[str, Any]) -> str:
    import time

    until = ""
    if fault.get("until"):
        until = f" (reverted in {max(0.0, fault['until'] - time.time()):.0f}s)"
    return f"{fault['id']}: {fault['description']}{until}"


def status(
    stack: str | None = STACK_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the status as JSON on stdout."),
) -> None:
    """Show a game-day stack: each service's address and state, each edge's proxy, the active faults."""
    import json

    from aichaos.cli.terminal import Terminal
    from aichaos.errors import AichaosError
    from aichaos.gameday.control import Control, find_game_day, game_days

    term = Terminal()
    try:
        answer = Control(find_game_day(stack)).status()
    except AichaosError as exc:
        term.error(str(exc))
        dead = [d.stack_id for d in game_days() if not d.keeper_alive()]
        if dead:
            term.warning(f"game-day stack(s) whose keeper is gone: {', '.join(dead)}; `aichaos cleanup` stops what "
                         "they left")
        raise typer.Exit(exc.exit_code) from None
    if json_out:
        term.raw(json.dumps(answer, indent=2))
    else:
        print_status(term, answer)


def down(stack: str | None = STACK_OPTION) -> None:
    """Revert every fault, stop the stack and its fault proxy, and write the game-day journal
    (`aichaos report DIR` renders it)."""
    from aichaos.cli.terminal import Terminal
    from aichaos.errors import AichaosError, ExitCode
    from aichaos.gameday.control import Control, find_game_day, wait_gone
    from aichaos.runtime.state import process_start

    term = Terminal()
    try:
        day = find_game_day(stack)
        pid = day.keeper_pid
        start = process_start(pid) if pid else None
        answer = Control(day).down()
    except AichaosError as exc:
        term.error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    if pid and not wait_gone(pid, start):
        term.warning(f"the keeper (pid {pid}) has not exited yet")
    for leftover in answer["leftovers"]:
        term.warning(f"not cleaned up: {leftover}")
    term.info(f"stack {day.stack_id} is down; journal {answer['journal']} (`aichaos report {day.folder}`)")
    if answer["leftovers"]:
        raise typer.Exit(ExitCode.ENVIRONMENT)
