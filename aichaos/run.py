"""The timeline of one run: stand the stack up, drive load, apply and revert faults phase by phase,
analyse, and write the journal. Everything that was started or injected is undone in ``finally``,
whatever happened: success, a failed gate, an error, SIGINT or SIGTERM. A state file in the run
directory lets ``aichaos cleanup`` finish the job after a ``kill -9``: it is saved (and the run added to
the per-user index of live runs) before anything starts, and every process the run starts carries the
run's id (``aichaos.runtime.labels``), so cleanup finds even one started a moment before the kill. The
run directory is locked for the run's life (``aichaos.runtime.state.RunDirLock``).
"""

from __future__ import annotations

import logging
import os
import platform
import secrets
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aichaos import __version__, clock
from aichaos.correctness import GoldenProber
from aichaos.errors import (
    AichaosError,
    BaselineNotSteady,
    EnvironmentFailure,
    ExitCode,
    FaultRevertError,
    Interrupted,
    LoadError,
    ProxyError,
    StackStartError,
)
from aichaos.experiment.loader import LoadedExperiment
from aichaos.experiment.model import Experiment
from aichaos.faults.base import AppliedFault
from aichaos.faults.registry import FaultContext, RunCheck, check_faults, kind_of
from aichaos.interrupts import SignalGate, signals_raise
from aichaos.metrics.analysis import queries_of
from aichaos.metrics.samples import SampleStore
from aichaos.metrics.scrape import Scraper
from aichaos.metrics.verdict import baseline_problem, stop_condition
from aichaos.report.journal import Journal, PhaseRecord, analyse
from aichaos.runtime.index import index_dir
from aichaos.runtime.labels import labelled_children
from aichaos.runtime.registry import RuntimeKind, RuntimeSetup, choose_runtime
from aichaos.runtime.state import RunDirLock, RunState
from aichaos.session import LoadDriver, RunSession

if TYPE_CHECKING:
    from aichaos.proxy.backend import ProxyBackend
    from aichaos.runtime.base import Runtime

log = logging.getLogger(__name__)

Reporter = Callable[[str], None]
# called about ten times a second while the load runs, with the journal as it grows, the samples so far
# and the time: a live view (aichaos.cli.live) draws from them; a failure in it is logged, never fatal
Progress = Callable[[Journal, SampleStore, float], None]
LoadFactory = Callable[[dict[str, Any], Path, SampleStore], LoadDriver]


@dataclass
class RunOptions:
    runs_dir: Path = Path("runs")
    run_dir: Path | None = None
    toxiproxy_url: str | None = None
    keep_stack: bool = False
    runtime: str | None = None  # overrides the experiment's runtime (a name in aichaos.runtime.registry)
    network: str | None = None  # overrides the stack file's network (docker runtime): run or host
    seed: int | None = None
    build_args: dict[str, str] = field(default_factory=dict)  # docker build args (--build-arg)
    allow_external: bool = False  # container faults may touch containers the run did not start
    runtime_kind: RuntimeKind | None = None  # this runtime, not one chosen by name (the fake, in tests)
    allow_unhealthy_baseline: bool = False  # inject the faults even when the baseline was not steady


class JournalNotWritten(EnvironmentFailure):
    """The run ended (faults reverted, everything stopped) but its journal could not be written (a full
    disk). ``journal`` holds what was measured, to print; ``saved_to`` is where a copy went instead, if
    anywhere."""

    def __init__(self, message: str, journal: Journal, saved_to: Path | None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.journal = journal
        self.saved_to = saved_to


def _new_run_dir(options: RunOptions, experiment: Experiment) -> tuple[str, Path, RunDirLock]:
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    run_dir = options.run_dir or (options.runs_dir / f"{run_id}-{experiment.name}")
    try:
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentFailure(f"cannot create the run directory {run_dir}: {exc.strerror or exc}",
                                 hint="choose another place with --runs-dir or --run-dir") from exc
    return run_id, run_dir, RunDirLock.for_new_run(run_dir)


def run_experiment(loaded: LoadedExperiment, options: RunOptions, report: Reporter = print,
                   load_factory: LoadFactory | None = None, held: ExitStack | None = None,
                   progress: Progress | None = None) -> Journal:
    """Run one experiment end to end. Never raises for a run that started: errors end up in the journal,
    except ``JournalNotWritten`` when the journal itself cannot be written. Raises a UsageError, before
    anything starts, when the run directory is in use by another run or holds a killed run's state.

    The run directory stays locked until the function returns, or with ``held`` until that stack
    closes (the CLI writes its reports there first). ``load_factory`` replaces the Locust load (unit
    tests drive the run loop with a fake load and the fake runtime, ``aichaos.runtime.fake``)."""
    run_id, run_dir, lock = _new_run_dir(options, loaded.experiment)
    with ExitStack() as own:
        (held if held is not None else own).callback(lock.release)
        own.enter_context(labelled_children(run_id))
        return _run(loaded, options, report, load_factory, run_id, run_dir, progress)


def _run(loaded: LoadedExperiment, options: RunOptions, report: Reporter, load_factory: LoadFactory | None,
         run_id: str, run_dir: Path, progress: Progress | None = None) -> Journal:
    experiment = loaded.experiment
    journal = Journal.start(run_id, run_dir, loaded)
    state = RunState(run_dir / "state.json", run_id)
    store = SampleStore()
    session = RunSession()
    report(f"run {run_id}: {experiment.name} (run directory {run_dir})")
    with signals_raise() as sig:
        try:
            state.save()  # before anything starts: cleanup finds the run from here on
            kind = options.runtime_kind or choose_runtime(options.runtime or experiment.runtime, loaded.stack,
                                                          report)
            setup = RuntimeSetup(run_id, run_dir, loaded.stack, loaded.stack_path.parent, loaded.stack_path.stem,
                                 dict(options.build_args), options.network,
                                 options.toxiproxy_url or experiment.toxiproxy_url)
            kind.check(setup)
            check_faults(experiment.phases, RunCheck(kind.capabilities, kind.name, options.allow_external))
            from aichaos.load.generator import check_load_environment

            # an API key that is not set fails here, not after the stack stood up
            check_load_environment(experiment.load, [r for p in experiment.phases if p.load and p.load.requests
                                                     for r in p.load.requests])
            state.runtime = kind.name
            journal.environment.update({
                "runtime": kind.name, "python": sys.version.split()[0], "platform": platform.platform(),
                "aichaos": __version__, "pid": os.getpid(),
            })
            state.save()
            _execute(loaded, options, report, journal, state, store, session, kind, setup,
                     load_factory or _locust_load, progress)
        except Interrupted as exc:
            journal.status = "interrupted"
            journal.errors.append(str(exc))
            report(f"interrupted by {exc.signal_name}: reverting faults and tearing down")
        except AichaosError as exc:
            journal.status = "error"
            journal.exit_code = exc.exit_code
            journal.errors.append(str(exc))
        except Exception as exc:  # a bug: still revert and tear down, and say so plainly
            trace = run_dir / "internal-error.txt"
            try:
                trace.write_text(traceback.format_exc())
                where = f"the traceback is in {trace}"
            except OSError:
                where = "run with -v for its traceback"
            log.debug("unexpected failure", exc_info=True)
            journal.status = "error"
            journal.exit_code = ExitCode.ENVIRONMENT
            journal.errors.append(f"internal error: {exc!r} (a bug in aichaos; {where})")
        finally:
            _teardown(journal, state, session, options, report, sig)
        # still inside the gate: a signal from here on is noted, and the journal is written anyway
        journal.samples = store.snapshot()
        journal.users = store.users()
        journal.scrapes = journal.scrapes.snapshot()
        if journal.t0 is not None:
            analyse(journal, experiment)
        journal.finish()
        try:
            journal.write()
        except EnvironmentFailure as exc:
            unwritten: EnvironmentFailure | None = exc
        else:
            unwritten = None
        if options.keep_stack and session.runtime is not None:
            state.kept = True  # `aichaos cleanup --run ID` stops the kept stack later
            _save_last(state, report)
        elif journal.leftovers:  # what could not be stopped or reverted: cleanup tries again from the state
            report(f"the run's state file is kept for `aichaos cleanup --run {run_id}`: {state.path}")
            _save_last(state, report)
        else:
            state.remove()
    if unwritten is not None:
        saved_to = _save_elsewhere(journal)
        raise JournalNotWritten(unwritten.message, journal, saved_to,
                                hint=f"the journal was saved to {saved_to} instead" if saved_to else
                                "nothing could save it: the summary below is what was measured")
    return journal


def _save_last(state: RunState, report: Reporter) -> None:
    try:
        state.save()
    except EnvironmentFailure as exc:  # the state saved last still names every process and fault
        report(f"{exc.message}: `aichaos cleanup` reads the state saved last")


def _save_elsewhere(journal: Journal) -> Path | None:
    """Save the journal beside the index of live runs (another disk, often) when its run directory
    refused it; None when that fails too."""
    path = index_dir().parent / "journals" / f"{journal.run_id}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(journal.dumps())
    except OSError:
        with suppress(OSError):
            path.unlink(missing_ok=True)
        return None
    return path


def _locust_load(spec: dict[str, Any], log_path: Path, store: SampleStore) -> LoadDriver:
    from aichaos.load.generator import LoadGenerator

    return LoadGenerator(spec, log_path, store)


def _execute(loaded: LoadedExperiment, options: RunOptions, report: Reporter, journal: Journal,
             state: RunState, store: SampleStore, session: RunSession, kind: RuntimeKind, setup: RuntimeSetup,
             load_factory: LoadFactory, progress: Progress | None = None) -> None:
    from aichaos.load.generator import load_spec
    from aichaos.load.schedule import plan_load
    from aichaos.stackup import record_services, start_fault_proxy, start_services

    experiment = loaded.experiment
    started = time.monotonic()
    up = start_fault_proxy(session, kind, setup, state, report)
    runtime, backend = up.runtime, up.backend
    journal.environment.update(up.environment)
    # what only the builtin proxy can do is refused here, before the stack starts (exit 2)
    check_faults(experiment.phases, RunCheck(kind.capabilities, kind.name, options.allow_external,
                                             proxy=backend.kind, proxy_version=backend.version))
    client = backend.client
    for note in loaded.notes:  # what a Compose file's reading inferred or ignored
        report(note)
    report(f"starting stack {loaded.stack_path} ({', '.join(loaded.stack.start_order())})")
    handle = start_services(session, up, loaded.stack, state)
    record_started = record_services(state, handle)
    journal.stack_ready_s = time.monotonic() - started
    facts, note = runtime.stack_facts()
    journal.environment.update(facts)
    journal.services = {n: {"port": s.port, "pid": s.pid, "container": s.container,
                            "ready_after_s": round(s.ready_after_s, 3), "log": str(s.log_path),
                            **({"ports": s.ports} if len(s.ports) > 1 else {}),
                            **({"gpus": s.gpus} if s.gpus else {})}
                        for n, s in handle.services.items()}
    journal.proxies = {edge: {"proxy": p.name, "listen": p.listen, "upstream": p.upstream,
                              "address": handle.addresses.get(edge)}
                       for edge, p in handle.proxies.items()}
    report(f"stack ready in {journal.stack_ready_s:.1f}s{note}")

    targets = {name: f"http://{s.host}:{s.port_of(service.metrics_port)}{service.metrics_path}"
               for name, s in handle.services.items() if (service := loaded.stack.services[name]).metrics}
    scraper = Scraper(targets, journal.scrapes)
    scraper.start()
    session.started("scraper", _stopper(scraper.stop))
    context = FaultContext(client, runtime, handle, loaded.stack, setup.run_dir / "logs", record_started,
                           state.helpers)
    for phase in experiment.phases:
        for fault in phase.faults:
            probe = kind_of(fault).before_load(fault, context, journal.scrapes)
            if probe is not None:
                session.started(f"probe for {fault.type}", _stopper(probe.stop))
    if experiment.correctness is not None:  # golden answers, taken before the load and any fault
        probed = handle.services[experiment.correctness_target or experiment.load.target]
        golden = GoldenProber(probed.name, f"http://{probed.host}:{probed.port}", experiment.correctness,
                              journal.scrapes)
        session.started("golden-answer probes", _stopper(golden.stop))
        report(golden.record_golden())
        golden.start()

    plan = plan_load(experiment.load, experiment.phases)
    if experiment.load.target_is_url:  # a server this run does not start (an LLM endpoint, say)
        target_url = experiment.load.target.rstrip("/")
    else:
        target = handle.services[experiment.load.target]
        target_url = f"http://{target.host}:{target.port}"
    spec = load_spec(experiment.load, target_url, plan, options.seed, loaded.path.parent)
    load = load_factory(spec, setup.run_dir / "logs" / "load.log", store)
    session.load = load

    def stop_load(hurry: bool) -> list[str]:
        load.stop(timeout=2.0 if hurry else 15.0)
        journal.load_totals = {"locust_total": load.locust_total, "collected_total": load.collected_total}
        llm_total = getattr(load, "llm_total", None)  # LLM requests, streams, output tokens, ITL samples
        if llm_total:
            journal.load_totals["llm"] = llm_total
        if getattr(load, "cpu_max", None) is not None:  # was the load itself the bottleneck?
            journal.load_totals["load_cpu_max"] = round(load.cpu_max, 3)  # type: ignore[attr-defined]
            journal.load_totals["load_saturated_s"] = load.saturated_s  # type: ignore[attr-defined]
        return []

    session.started("load", stop_load)
    if experiment.load.remote_workers:
        master = f"{spec['master_bind']}:{spec['master_port']}"
        report(f"waiting up to 60s for {experiment.load.remote_workers} remote load worker(s): on each machine run "
               f"`aichaos worker --master {master}` (with the address this machine has there)")
    load.start()
    state.load_pid = load.pid
    state.save()
    ramp = plan.levels[0].users / spec["spawn_rate"]
    # phases start on a whole second, so fault boundaries fall on bucket boundaries
    t0 = float(int(clock.now() + ramp) + 1)
    journal.t0 = t0
    load.set_t0(t0)
    journal.offered = {int(t0) + k: level.rate for k, level in enumerate(plan.levels) if level.rate is not None}
    load_kind = f"{experiment.load.users} users" if experiment.load.rate is None else \
        f"{experiment.load.rate:g} req/s paced over {experiment.load.users} users"
    if experiment.load.distributed:
        load_kind += (f" on {experiment.load.workers} worker(s)" +
                      (f" + {experiment.load.remote_workers} remote" if experiment.load.remote_workers else "") +
                      f", master {spec['master_bind']}:{spec['master_port']}")
    report(f"load: {load_kind} against {experiment.load.target}; baseline starts in {t0 - clock.now():.1f}s")
    watch = Watch(store, journal, load, runtime, backend, loaded, context.expected_down, progress)
    watch.until(t0, stop_conditions=False)

    phase_start = t0
    for phase in experiment.phases:
        record = PhaseRecord(phase.name, phase_start, phase_start + phase.duration)
        journal.phases.append(record)
        watch.until(phase_start, stop_conditions=False)
        for i, fault in enumerate(phase.faults):
            applied = kind_of(fault).apply(fault, phase.name, i, context)
            session.applied.append(applied)
            session.started(f"fault {applied.description}", _reverter(applied, journal, report))
            _save_faults(state, session)
            journal.event("fault_applied", phase.name, applied.description, applied.applied_at)
            report(f"[{phase.name}] applied {applied.description}")
        if not phase.faults:
            report(f"[{phase.name}] {phase.duration:g}s")
        stopped = watch.until(record.end, stop_conditions=True)
        for applied in [f for f in session.applied if f.phase == phase.name and not f.reverted]:
            _revert(applied, journal, report)
        _save_faults(state, session)
        if stopped:
            record.end = clock.now()
            break
        if phase is experiment.phases[0] and any(p.faults for p in experiment.phases):
            _check_baseline(loaded, options, store, journal, report, record, watch.lag)
            if "attached" in kind.capabilities:
                _check_edges_carry_traffic(client, handle, report)
        phase_start = record.end
    journal.status = "aborted" if journal.stop else "completed"


def _check_baseline(loaded: LoadedExperiment, options: RunOptions, store: SampleStore, journal: Journal,
                    report: Reporter, baseline: PhaseRecord, lag: int) -> None:
    """Steady state before the method: no fault goes into a system that was not steady without it.
    Judged on the baseline's complete seconds (the load reports each a moment after it ends)."""
    experiment = loaded.experiment
    start = int(baseline.start + experiment.steady_state.warmup)
    problem = baseline_problem(experiment, store.snapshot(), start, int(baseline.end) - lag, journal.scrapes)
    if problem is None:
        return
    if options.allow_unhealthy_baseline:
        report(f"[{baseline.name}] {problem}; injecting the faults anyway (--allow-unhealthy-baseline)")
        return
    raise BaselineNotSteady(f"{problem}: no fault was injected, since the experiment cannot be conducted on a "
                            "system that is not steady without it",
                            hint="fix the system under test or the SLO, or pass --allow-unhealthy-baseline")


def _check_edges_carry_traffic(client: Any, handle: Any, report: Reporter) -> None:
    """An attached stack (runtime external) routes its edges through the proxy only when its services
    are configured to: a fault on an edge that saw no traffic in the baseline would do nothing."""
    from aichaos.runtime.external import check_attached

    quiet = check_attached(client, handle)
    if quiet:
        raise StackStartError("no traffic went through the fault proxy on " + "; ".join(quiet) + " during the "
                              "baseline: no fault was injected, since it would have reached nothing",
                              hint="point each dependent at the proxy address printed for its edge (a fixed "
                                   "one: the edge's listen port), then run again")
    report(f"every edge carried traffic through the fault proxy ({len(handle.proxies)})")


def _stopper(stop: Callable[[], None]) -> Callable[[bool], list[str]]:
    def stopped(hurry: bool) -> list[str]:
        stop()
        return []

    return stopped


def _save_faults(state: RunState, session: RunSession) -> None:
    state.faults = [f.undo_record for f in session.applied if not f.reverted and f.undo_record]
    state.save()


class Watch:
    """Sleeps until a deadline while watching the load process, the fault proxy, the stack and the
    stop conditions."""

    def __init__(self, store: SampleStore, journal: Journal, load: LoadDriver, runtime: Runtime,
                 backend: ProxyBackend, loaded: LoadedExperiment, expected_down: set[str],
                 progress: Progress | None = None) -> None:
        self.store, self.journal, self.load, self.runtime, self.backend = store, journal, load, runtime, backend
        self.loaded, self.expected_down, self.progress = loaded, expected_down, progress
        self.queries = queries_of(loaded.experiment)
        # a distributed load reports a second about a second later: read only seconds that are complete
        self.lag = 2 if loaded.experiment.load.distributed else 1

    def until(self, deadline: float, *, stop_conditions: bool) -> bool:
        """Returns True when a stop condition fired."""
        experiment, journal = self.loaded.experiment, self.journal
        next_check = next_watch = 0.0
        lag = self.lag
        while True:
            now = clock.now()
            if now >= deadline:
                return False
            if not self.load.alive():
                raise LoadError(f"the load process died (see {self.load.log_path})")
            if now >= next_watch:  # twice a second: under docker each look is an API call per container
                next_watch = now + 0.5
                if not self.backend.alive():
                    raise ProxyError(f"the fault proxy ({self.backend.kind} at {self.backend.url}) died during the "
                                     "run", hint=f"see {journal.run_dir / 'logs' / 'proxy.log'}")
                for name in self.loaded.stack.services:
                    if name not in self.expected_down and not self.runtime.is_alive(name):
                        raise StackStartError(f"service {name!r} {self.runtime.exit_reason(name)} during the run",
                                              hint=f"see {self.runtime.logs.get(name)}")
            if stop_conditions and experiment.stop_when and now >= next_check:
                next_check = now + 0.5
                longest = max(max(1, round(t.for_)) for c in experiment.stop_when for t in c.conditions().values())
                end = int(now) - lag  # seconds before this one are complete
                fired = stop_condition(experiment, self.store.snapshot(end - longest, end), end, journal.scrapes,
                                       self.queries)
                if fired:
                    journal.stop = fired
                    journal.event("stop_condition", "", fired, now)
                    return True
            if self.progress is not None:
                try:
                    self.progress(journal, self.store, now)
                except Exception:  # a view must never fail a run
                    log.warning("the progress hook failed", exc_info=True)
            clock.sleep(min(0.1, max(0.0, deadline - now)))


def _revert(fault: AppliedFault, journal: Journal, report: Reporter) -> None:
    began = clock.now()
    try:
        fault.revert()
    except AichaosError as exc:
        fault.revert_error = exc.message
        journal.errors.append(f"could not revert {fault.description}: {exc.message}")
        report(f"[{fault.phase}] FAILED to revert {fault.description}: {exc.message}")
        return
    took = (fault.reverted_at or clock.now()) - began
    fault.detail["revert_s"] = round(took, 3)  # a restart and its readiness wait are part of the recovery
    journal.event("fault_reverted", fault.phase, fault.description, fault.reverted_at or clock.now())
    report(f"[{fault.phase}] reverted {fault.description}" + (f" (took {took:.1f}s)" if took >= 0.05 else ""))


def _reverter(fault: AppliedFault, journal: Journal, report: Reporter) -> Callable[[bool], list[str]]:
    def revert(hurry: bool) -> list[str]:
        if not fault.reverted:
            _revert(fault, journal, report)
        return []  # one that could not be reverted is reported with the run's leftovers

    return revert


def _teardown(journal: Journal, state: RunState, session: RunSession, options: RunOptions, report: Reporter,
              sig: SignalGate) -> None:
    sig.raising = False  # from here on, signals are noted, never raised
    if session.runtime is not None and options.keep_stack:
        report("--keep-stack: leaving the stack running; stop it with `aichaos cleanup --run "
               f"{journal.run_id}`")
    leftovers = session.teardown(hurry=sig.hurried, keep_stack=options.keep_stack)
    journal.faults = [f.to_json() for f in session.applied]
    unreverted = [f for f in session.applied if not f.reverted]
    if unreverted:
        leftovers += [f"fault {f.description} ({f.revert_error})" for f in unreverted]
        if journal.status != "interrupted":
            journal.status = "error"
            journal.exit_code = FaultRevertError.exit_code
    journal.leftovers = leftovers
    if sig.received and journal.status not in ("interrupted",):
        journal.status = "interrupted"
    if not leftovers:
        state.faults = []
