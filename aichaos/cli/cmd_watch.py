"""``aichaos watch``: a live view of a game-day stack (``aichaos.gameday.watch``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from aichaos.cli.cmd_stack import STACK_OPTION


def watch(
    experiment: Path | None = typer.Argument(None, help="An experiment: bring its stack up for the watch (taken "
                                                        "down after it) and drive its load. Without it: the stack "
                                                        "that is up.", show_default=False),
    stack: str | None = STACK_OPTION,
    load: Path | None = typer.Option(None, "--load", help="Drive this experiment's load (its baseline level) in the "
                                                          "background."),
    metric: list[str] = typer.Option([], "--metric", help="A scraped metric to show, SERVICE/SELECTOR, e.g. "
                                                          "frontend/echo_in_flight (repeatable; default: each "
                                                          "service's own series, or the experiment's)."),
    duration: str | None = typer.Option(None, "--duration", help="Stop after this long (30s, 5m); default: Ctrl-C."),
    mode: str = typer.Option("auto", help="auto (live on a terminal; plain lines when stdout is not one or "
                                          "CI=true), live or plain."),
    seed: int | None = typer.Option(None, help="Seed for the load's random draws."),
) -> None:
    """Watch a game-day stack live: per-second request rate, p50/p95/p99, errors by kind, the scraped
    metrics the stack declares and the active faults. What it measures goes into the game day's journal."""
    from aichaos.cli.terminal import Terminal
    from aichaos.errors import ExitCode

    term = Terminal()
    if mode not in ("auto", "live", "plain"):
        term.error(f"--mode must be auto, live or plain, not {mode!r}")
        raise typer.Exit(ExitCode.INVALID)
    with term.failures():
        code = _watch(term, experiment, stack, load, metric, duration, mode, seed)
    raise typer.Exit(code)


def _watch(term: Any, experiment: Path | None, stack: str | None, load: Path | None, metric: list[str],
           duration: str | None, mode: str, seed: int | None) -> int:
    import time
    from contextlib import ExitStack

    from rich.live import Live

    from aichaos.cli.live import choose_mode
    from aichaos.errors import AichaosError, ExitCode, LoadError, UsageError
    from aichaos.experiment.durations import parse_duration
    from aichaos.experiment.loader import load_experiment
    from aichaos.gameday.control import MEASUREMENTS_FILE, Control, find_game_day
    from aichaos.gameday.watch import Watcher, watch_line, watch_table
    from aichaos.metrics.analysis import queries_of
    from aichaos.metrics.samples import SampleStore
    from aichaos.metrics.scrape import Scraper, ScrapeStore, parse_selector

    try:
        until = None if duration is None else time.time() + parse_duration(duration)
    except ValueError as exc:
        raise UsageError(f"--duration {duration}: {exc}") from None
    queries = {}
    for text in metric:
        service, sep, selector = text.partition("/")
        try:
            if not sep:
                raise ValueError("expected SERVICE/SELECTOR")
            queries[text] = (service, parse_selector(selector))
        except ValueError as exc:
            raise UsageError(f"--metric {text}: {exc}") from None
    source = load or experiment
    loaded = load_experiment(source) if source is not None else None
    if loaded is not None and not queries:
        queries = dict(queries_of(loaded.experiment))
    drawn = choose_mode(mode)
    with ExitStack() as stop:
        if experiment is not None:
            from aichaos.cli.cmd_stack import start_game_day

            day = start_game_day(term, experiment, runtime=None, network=None, runs_dir=Path("runs"),
                                 toxiproxy_url=None)
            stop.callback(_take_down, term, day)
        else:
            day = find_game_day(stack)
        control = Control(day)
        status = control.status()
        unknown = [t for t, (s, _) in queries.items() if s not in status["services"]]
        if unknown:
            raise UsageError(f"--metric {unknown[0]}: no service {unknown[0].partition('/')[0]!r} in the stack")
        store, generator = None, None
        if loaded is not None:
            store = SampleStore()
            generator = _start_load(loaded, status, day.folder, store, seed)
            stop.callback(generator.stop, 5.0)
            term.info(f"load: {loaded.experiment.load.users} users against {loaded.experiment.load.target} "
                      f"(from {loaded.path})")
        scrapes = ScrapeStore()
        targets = {n: s["metrics"] for n, s in status["services"].items() if s["metrics"]}
        scraper = Scraper(targets, scrapes)
        scraper.start()
        stop.callback(scraper.stop)
        watcher = Watcher(store, scrapes, list(targets), control.status,
                          day.folder / MEASUREMENTS_FILE, queries)
        title = f"aichaos watch: stack {day.stack_id} ({Path(day.source).name})"
        term.info(f"watching stack {day.stack_id}" + ("" if until is None else f" for {duration}") +
                  "; Ctrl-C to stop")
        seconds: list[Any] = []
        live = None
        if drawn == "live":
            live = Live(watch_table(title, seconds), console=term.out, auto_refresh=False, transient=False)
            live.start()
            stop.callback(live.stop)
        try:
            while until is None or time.time() < until:
                if generator is not None and not generator.alive():
                    raise LoadError(f"the load process died (see {generator.log_path})")
                try:
                    new = watcher.tick(time.time())
                except AichaosError as exc:
                    if not day.keeper_alive():
                        term.info(f"stack {day.stack_id} went down")
                        return ExitCode.OK
                    raise exc
                for watched in new:
                    seconds.append(watched)
                    if live is None:
                        term.data(watch_line(watched))
                del seconds[:-60]
                if live is not None and new:
                    live.update(watch_table(title, seconds), refresh=True)
                time.sleep(0.2)
        except KeyboardInterrupt:
            term.info("stopped")
    return ExitCode.OK


def _start_load(loaded: Any, status: dict[str, Any], folder: Path, store: Any, seed: int | None) -> Any:
    import time

    from aichaos.errors import UsageError
    from aichaos.load.generator import LoadGenerator, load_spec
    from aichaos.load.schedule import plan_load

    experiment = loaded.experiment
    target = status["services"].get(experiment.load.target)
    if target is None:
        raise UsageError(f"the load's target {experiment.load.target!r} ({loaded.path}) is not a service of the stack",
                         hint=f"services: {', '.join(status['services'])}")
    plan = plan_load(experiment.load, experiment.phases[:1])  # the baseline's level, held to the end
    spec = load_spec(experiment.load, target["url"], plan, seed, loaded.path.parent)
    generator = LoadGenerator(spec, folder / "logs" / f"watch-load-{time.strftime('%H%M%S')}.log", store)
    generator.start()
    generator.set_t0(time.time())
    return generator


def _take_down(term: Any, day: Any) -> None:
    from aichaos.errors import AichaosError
    from aichaos.gameday.control import Control

    try:
        answer = Control(day).down()
    except AichaosError as exc:
        term.error(f"could not take the stack down: {exc}")
        return
    term.info(f"stack {day.stack_id} is down; journal {answer['journal']}")
