"""aichaos: chaos engineering for AI serving stacks.

Only typer and rich are imported here; each command imports what it needs when it runs, so that
`aichaos --help` stays fast and never imports torch, locust or docker.
"""

from __future__ import annotations

import sys

import typer

from aichaos import __version__

EXIT_CODES = (
    "Exit codes: 0 every gate held; 1 a gate failed or a stop condition fired; "
    "2 invalid experiment or usage (or a run directory in use); 3 environment failure (stack did not "
    "start, a fault could not be injected or reverted, the disk is full); 130 interrupted."
)

app = typer.Typer(
    name="aichaos",
    help="Chaos engineering for AI serving stacks: inject faults under real load, measure degradation "
    "and recovery against SLOs, and gate releases on the verdict.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
proxy_app = typer.Typer(help="The builtin Toxiproxy-compatible fault proxy.", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(proxy_app, name="proxy")
stack_app = typer.Typer(help="Game days: bring a stack up and leave it up, see it, take it down.",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(stack_app, name="stack")
fault_app = typer.Typer(help="Game days: inject, list and clear faults on the stack that is up.",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(fault_app, name="fault")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aichaos {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details to stderr."),
) -> None:
    import logging

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)


def _register() -> None:
    from aichaos.cli import (
        cmd_cleanup,
        cmd_compare,
        cmd_fault,
        cmd_init,
        cmd_proxy,
        cmd_report,
        cmd_run,
        cmd_schema,
        cmd_stack,
        cmd_validate,
        cmd_watch,
        cmd_worker,
    )

    app.command("run", epilog=EXIT_CODES)(cmd_run.run)
    app.command("report")(cmd_report.report)
    app.command("compare")(cmd_compare.compare)
    app.command("validate", epilog=EXIT_CODES)(cmd_validate.validate)
    app.command("init")(cmd_init.init)
    app.command("schema")(cmd_schema.schema)
    app.command("cleanup")(cmd_cleanup.cleanup)
    app.command("worker")(cmd_worker.worker)
    proxy_app.command("serve")(cmd_proxy.serve)
    stack_app.command("up", epilog=EXIT_CODES)(cmd_stack.up)
    stack_app.command("status")(cmd_stack.status)
    stack_app.command("down")(cmd_stack.down)
    fault_app.command("inject", epilog=EXIT_CODES)(cmd_fault.inject)
    fault_app.command("list")(cmd_fault.list_)
    fault_app.command("clear")(cmd_fault.clear)
    app.command("watch", epilog=EXIT_CODES)(cmd_watch.watch)


_register()


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # until a run installs its own handlers: exit 130, not a silent death


def main() -> None:
    import signal

    from aichaos.errors import AichaosError, ExitCode

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        app(standalone_mode=True)
    except AichaosError as exc:  # commands translate their own; this is the last net
        from aichaos.cli.terminal import Terminal

        Terminal().error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)
    finally:
        # the work is done: a signal now must not raise inside interpreter shutdown (finalizers
        # would print "Exception ignored ... Traceback")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
