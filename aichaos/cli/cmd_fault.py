"""``aichaos fault inject|list|clear``: faults on a game-day stack, by hand (``aichaos.gameday``)."""

from __future__ import annotations

from pathlib import Path

import typer

from aichaos.cli.cmd_stack import STACK_OPTION


def inject(
    type_: str = typer.Argument(..., metavar="TYPE", help="A fault type of the experiment format: latency, down, "
                                                          "bandwidth, timeout, reset_peer, kill, pause, "
                                                          "inference_slowdown, …", show_default=False),
    edge: str | None = typer.Option(None, "--edge", help="The edge of a network fault: DEPENDENT->DEPENDENCY."),
    service: str | None = typer.Option(None, "--service", help="The service of a service or container fault."),
    set_: list[str] = typer.Option([], "--set", help="A setting of the fault, as in an experiment: "
                                                     "--set latency_ms=300 (repeatable)."),
    for_: str | None = typer.Option(None, "--for", help="Revert it after this long (30s, 2m), even after this "
                                                        "command has exited."),
    stack: str | None = STACK_OPTION,
    allow_external: bool = typer.Option(False, "--allow-external",
                                        help="Let a container fault act on a container the stack did not start."),
) -> None:
    """Inject a fault into the game-day stack; prints its id (for `aichaos fault clear ID`) on stdout.

    The fault is validated as in an experiment file (`aichaos schema` lists every type and setting);
    exit 2 when it is not valid, 3 when it could not be injected."""
    from aichaos.cli.cmd_stack import fault_line
    from aichaos.cli.terminal import Terminal
    from aichaos.errors import ExitCode
    from aichaos.experiment.durations import parse_duration
    from aichaos.experiment.fault_args import fault_from_args
    from aichaos.experiment.loader import load_stack
    from aichaos.faults.registry import kind_of
    from aichaos.gameday.control import Control, find_game_day

    term = Terminal()
    for_s = None
    if for_ is not None:
        try:
            for_s = parse_duration(for_)
        except ValueError as exc:
            term.error(f"--for {for_}: {exc}")
            raise typer.Exit(ExitCode.INVALID) from None
        if for_s <= 0:
            term.error(f"--for {for_}: a fault lasts longer than 0s")
            raise typer.Exit(ExitCode.INVALID)
    with term.failures():
        day = find_game_day(stack)
        fault = fault_from_args(type_, edge=edge, service=service, sets=set_, stack=load_stack(Path(day.stack_file)))
        if kind_of(fault).target == "load":
            term.error(f"{type_} changes an experiment's load plan, and a game day has none: run it in an experiment, "
                       "or change the load that `aichaos watch --load` drives")
            raise typer.Exit(ExitCode.INVALID)
        answer = Control(day).inject(fault.model_dump(mode="json", by_alias=True), for_s, allow_external)
    term.info(f"injected {fault_line(answer)}")
    term.data(answer["id"])


def list_(
    stack: str | None = STACK_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the faults as JSON on stdout."),
) -> None:
    """The active faults of the game-day stack."""
    import json

    from aichaos.cli.cmd_stack import fault_line
    from aichaos.cli.terminal import Terminal
    from aichaos.errors import AichaosError
    from aichaos.gameday.control import Control, find_game_day

    term = Terminal()
    try:
        faults = Control(find_game_day(stack)).status()["faults"]
    except AichaosError as exc:
        term.error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    if json_out:
        term.raw(json.dumps(faults, indent=2))
    elif not faults:
        term.info("no active faults")
    for fault in [] if json_out else faults:
        term.data(fault_line(fault))


def clear(
    fault_id: str | None = typer.Argument(None, metavar="[ID]", help="The fault to revert (default: every one)."),
    stack: str | None = STACK_OPTION,
) -> None:
    """Revert one fault of the game-day stack, or every one."""
    from aichaos.cli.terminal import Terminal
    from aichaos.errors import AichaosError
    from aichaos.gameday.control import Control, find_game_day

    term = Terminal()
    try:
        cleared = Control(find_game_day(stack)).clear(fault_id)["cleared"]
    except AichaosError as exc:
        term.error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    if not cleared:
        term.info("no active faults")
    for fault in cleared:
        term.info(f"cleared {fault['id']}: {fault['description']}")
