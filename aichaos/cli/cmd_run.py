from __future__ import annotations

import json
from pathlib import Path

import typer

from aichaos.runtime.registry import RUNTIME_CHOICES  # a table of names: imports no runtime


def run(
    file: Path = typer.Argument(..., help="The experiment file.", show_default=False),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set load.users=50 (repeatable)."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where run directories are created."),
    run_dir: Path | None = typer.Option(None, help="Use exactly this run directory."),
    toxiproxy_url: str | None = typer.Option(None, help="Use the Toxiproxy server at this URL."),
    runtime: str | None = typer.Option(None, help=f"Override the experiment's runtime: {', '.join(RUNTIME_CHOICES)}."),
    network: str | None = typer.Option(None, help="Docker runtime: 'run' (a network of the run's own) or 'host'; "
                                                  "overrides the stack file's network."),
    keep_stack: bool = typer.Option(False, "--keep-stack", help="Leave the stack running after the run."),
    junit: Path | None = typer.Option(None, help="Also write the gates as JUnit XML here."),
    markdown: Path | None = typer.Option(None, help="Also write a Markdown report here."),
    html: Path | None = typer.Option(None, help="Also write the HTML report here (every run directory gets "
                                                "report.html)."),
    progress: str = typer.Option("auto", "--progress",
                                 help="How the run shows its progress on stderr: live (redrawn in place), plain "
                                      "(timestamped lines), off; auto: live on a terminal, plain when stdout is "
                                      "not one or CI=true."),
    json_out: bool = typer.Option(False, "--json", help="Print the journal as JSON on stdout instead of tables."),
    seed: int | None = typer.Option(None, help="Seed for the load's random draws."),
    build_arg: list[str] = typer.Option([], "--build-arg", help="Docker build arg KEY=VALUE (repeatable)."),
    allow_external: bool = typer.Option(False, "--allow-external",
                                        help="Let container faults act on containers this run did not start."),
    allow_unhealthy_baseline: bool = typer.Option(
        False, "--allow-unhealthy-baseline",
        help="Inject the faults even when the baseline was not steady (by default the run stops, exit 3)."),
) -> None:
    """Run an experiment: stand up the stack, drive load, inject faults, report the verdict.

    The run directory gets journal.json, junit.xml, report.md and report.html; with
    GITHUB_STEP_SUMMARY set, the Markdown report is appended to that file.
    """
    import os
    from contextlib import ExitStack

    from aichaos.cli.live import MODES, LiveView, choose_mode
    from aichaos.cli.render import render_summary
    from aichaos.cli.terminal import Terminal
    from aichaos.errors import ExitCode, ExperimentError
    from aichaos.experiment.loader import load_experiment
    from aichaos.report.formats import FORMATS
    from aichaos.report.journal import Journal, read_journal
    from aichaos.run import JournalNotWritten, RunOptions, run_experiment
    from aichaos.runtime.cleanup import stale_runs

    term = Terminal()
    if runtime is not None and runtime not in RUNTIME_CHOICES:
        term.error(f"--runtime must be {', '.join(RUNTIME_CHOICES[:-1])} or {RUNTIME_CHOICES[-1]}, not {runtime!r}")
        raise typer.Exit(ExitCode.INVALID)
    if progress not in MODES:
        term.error(f"--progress must be {', '.join(MODES[:-1])} or {MODES[-1]}, not {progress!r}")
        raise typer.Exit(ExitCode.INVALID)
    if network is not None and network not in ("run", "host"):
        term.error(f"--network must be run or host, not {network!r}")
        raise typer.Exit(ExitCode.INVALID)
    build_args = {}
    for item in build_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            term.error(f"--build-arg must be KEY=VALUE, not {item!r}")
            raise typer.Exit(ExitCode.INVALID)
        build_args[key] = value
    try:
        loaded = load_experiment(file, set_)
    except ExperimentError as exc:
        for problem in exc.problems:
            term.error(str(problem))
        raise typer.Exit(ExitCode.INVALID) from None
    for stale in stale_runs():  # this user's, wherever they ran
        why = "left its stack running (--keep-stack)" if stale.kept else "ended without cleaning up"
        term.warning(f"run {stale.run_id} {why} ({stale.path}); `aichaos cleanup --run {stale.run_id}` stops it")
    options = RunOptions(runs_dir=runs_dir, run_dir=run_dir, toxiproxy_url=toxiproxy_url,
                         keep_stack=keep_stack, runtime=runtime, network=network, seed=seed, build_args=build_args,
                         allow_external=allow_external, allow_unhealthy_baseline=allow_unhealthy_baseline)
    view = LiveView(loaded.experiment, choose_mode(progress), console=term.err, print_message=term.info,
                    lag=2 if loaded.experiment.load.distributed else 1)
    with ExitStack() as held:  # the run directory stays locked until its reports are written
        try:
            try:
                journal = run_experiment(loaded, options, report=view.message, held=held, progress=view.progress)
            finally:
                view.stop()
        except JournalNotWritten as exc:  # a full disk: say so, and print what was measured
            term.error(str(exc))
            record = Journal.from_json(json.loads(exc.journal.dumps()))  # as it would have been read back
            if json_out:
                term.raw(FORMATS["json"](record))
            else:
                render_summary(term, record)
            raise typer.Exit(exc.exit_code) from None
        # every report is rendered from the journal as written, so `aichaos report` reproduces it exactly
        record = read_journal(journal.path)
        junit_text, markdown_text = FORMATS["junit"](record), FORMATS["md"](record)
        html_text = FORMATS["html"](record)
        exit_code = journal.exit_code
        written = journal.run_dir
        for target, text in ((written / "junit.xml", junit_text), (written / "report.md", markdown_text),
                             (written / "report.html", html_text), (junit, junit_text), (markdown, markdown_text),
                             (html, html_text)):
            if target is not None:
                try:
                    target.write_text(text)
                except OSError as exc:
                    term.error(f"cannot write {target}: {exc.strerror or exc}")
                    exit_code = ExitCode.ENVIRONMENT
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:  # GitHub Actions shows this file on the job's page
            try:
                with open(step_summary, "a", encoding="utf-8") as summary_file:
                    summary_file.write(markdown_text if markdown_text.endswith("\n") else markdown_text + "\n")
            except OSError as exc:
                term.warning(f"cannot append the summary to GITHUB_STEP_SUMMARY ({step_summary}): "
                             f"{exc.strerror or exc}")
        if json_out:
            term.raw(FORMATS["json"](record))
        else:
            render_summary(term, record)
    raise typer.Exit(exit_code)
