"""The timeline of one run: stand the stack up, drive load, apply and revert faults phase by phase,
analyse, and write the journal. Everything that was started or injected is undone in ``finally``,
whatever happened: success, a failed gate, an error, SIGINT or SIGTERM. A state file in the run
directory lets ``aichaos cleanup`` finish the job after a ``kill -9``.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aichaos import __version__
from aichaos.errors import (
    AichaosError,
    EnvironmentFailure,
    ExitCode,
    FaultRevertError,
    Interrupted,
    LoadError,
    ProxyError,
    StackStartError,
    UsageError,
)
from aichaos.experiment.loader import LoadedExperiment
from aichaos.experiment.model import Experiment
from aichaos.faults.base import AppliedFault
from aichaos.interrupts import SignalGate, signals_raise
from aichaos.metrics.analysis import Queries, metrics_of, queries_of
from aichaos.metrics.samples import Bucket, SampleStore
from aichaos.metrics.scrape import Scraper, ScrapeStore
from aichaos.report.journal import Journal, PhaseRecord, analyse
from aichaos.runtime.state import RunState

log = logging.getLogger(__name__)

Reporter = Callable[[str], None]


@dataclass
class RunOptions:
    runs_dir: Path = Path("runs")
    run_dir: Path | None = None
    toxiproxy_url: str | None = None
    keep_stack: bool = False
    runtime: str | None = None  # overrides the experiment's runtime
    network: str | None = None  # overrides the stack file's network (docker runtime): run or host
    seed: int | None = None
    build_args: dict[str, str] = field(default_factory=dict)  # docker build args (--build-arg)
    allow_external: bool = False  # container faults may touch containers the run did not start


def _new_run_dir(options: RunOptions, experiment: Experiment) -> tuple[str, Path]:
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    run_dir = options.run_dir or (options.runs_dir / f"{run_id}-{experiment.name}")
    try:
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentFailure(f"cannot create the run directory {run_dir}: {exc.strerror or exc}",
                                 hint="choose another place with --runs-dir or --run-dir") from exc
    return run_id, run_dir


def _pick_runtime(requested: str, loaded: LoadedExperiment, report: Reporter) -> str:
    """docker or local; auto takes docker when an engine answers and every service has an image or
    a build context, else local. Raises when docker is asked for and no engine answers."""
    from aichaos.runtime.docker import engine, engine_answers

    if requested == "docker":
        engine()
        return "docker"
    if requested == "auto":
        imageless = [n for n, s in loaded.stack.services.items() if s.image is None and s.build is None]
        if imageless:
            report(f"runtime auto: using local processes ({', '.join(imageless)} has no image or build)")
            return "local"
        if engine_answers():
            report("runtime auto: a Docker engine answers, using containers")
            return "docker"
        report("runtime auto: no Docker engine answers, using local processes")
        return "local"
    return "local"


def _check_faults(experiment: Experiment, runtime_name: str, options: RunOptions) -> None:
    """Faults the chosen runtime cannot inject, caught before anything starts."""
    from aichaos.experiment.model import CONTAINER_FAULTS, DOCKER_ONLY_FAULTS

    for phase in experiment.phases:
        for fault in phase.faults:
            where = f"phases.{phase.name}: {fault.type}"
            if isinstance(fault, DOCKER_ONLY_FAULTS) and runtime_name != "docker":
                raise UsageError(f"{where} squeezes a container and needs runtime: docker (this run uses "
                                 f"{runtime_name})")
            if isinstance(fault, CONTAINER_FAULTS) and fault.container is not None:
                if not options.allow_external:
                    raise UsageError(f"{where} names container {fault.container!r}, which this run does not "
                                     "start: aichaos touches it only with --allow-external")
                if runtime_name != "docker":
                    from aichaos.runtime.docker import engine

                    engine()


def run_experiment(loaded: LoadedExperiment, options: RunOptions, report: Reporter = print) -> Journal:
    """Run one experiment end to end. Never raises for a run that started: errors end up in the journal."""
    experiment = loaded.experiment
    run_id, run_dir = _new_run_dir(options, experiment)
    journal = Journal.start(run_id, run_dir, loaded)
    state = RunState(run_dir / "state.json", run_id)
    store = SampleStore()
    applied: list[AppliedFault] = []
    holder: dict[str, Any] = {}  # what got started, for teardown
    report(f"run {run_id}: {experiment.name} (run directory {run_dir})")
    with signals_raise() as sig:
        try:
            runtime_name = _pick_runtime(options.runtime or experiment.runtime, loaded, report)
            _check_faults(experiment, runtime_name, options)
            state.runtime = runtime_name
            journal.environment.update({
                "runtime": runtime_name, "python": sys.version.split()[0], "platform": platform.platform(),
                "aichaos": __version__, "pid": os.getpid(),
            })
            state.save()
            _execute(loaded, options, report, journal, state, store, applied, run_dir, runtime_name, holder)
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
            trace.write_text(traceback.format_exc())
            log.debug("unexpected failure", exc_info=True)
            journal.status = "error"
            journal.exit_code = ExitCode.ENVIRONMENT
            journal.errors.append(f"internal error: {exc!r} (a bug in aichaos; the traceback is in {trace})")
        finally:
            _teardown(journal, state, applied, holder, options, report, sig)
        # still inside the gate: a signal from here on is noted, and the journal is written anyway
        journal.samples = store.snapshot()
        journal.users = store.users()
        journal.scrapes = journal.scrapes.snapshot()
        if journal.t0 is not None:
            analyse(journal, experiment)
        journal.finish()
        journal.write()
        if options.keep_stack and holder.get("runtime") is not None:
            state.kept = True  # `aichaos cleanup --run ID` stops the kept stack later
            state.save()
        else:
            state.remove()
    return journal


def _execute(loaded: LoadedExperiment, options: RunOptions, report: Reporter, journal: Journal,
             state: RunState, store: SampleStore, applied: list[AppliedFault], run_dir: Path,
             runtime_name: str, holder: dict[str, Any]) -> None:
    from aichaos.experiment.model import ModelSwapFault
    from aichaos.faults.apply import FaultContext, apply_fault
    from aichaos.faults.hooks import Prober
    from aichaos.load.generator import LoadGenerator, load_spec
    from aichaos.load.schedule import plan_load
    from aichaos.proxy.backend import start_proxy_backend, start_proxy_container_backend
    from aichaos.runtime.base import StackHandle, bring_up
    from aichaos.runtime.docker import DockerRuntime
    from aichaos.runtime.local import LocalRuntime

    experiment = loaded.experiment
    started = time.monotonic()
    url = options.toxiproxy_url or experiment.toxiproxy_url
    runtime: Any
    if runtime_name == "docker":
        network = options.network or loaded.stack.network
        if network == "run" and url:
            raise UsageError("a fault proxy at a URL cannot reach the services on the run's own docker network: "
                             "use network: host in the stack file (or --network host) with toxiproxy_url")
        runtime = DockerRuntime(journal.run_id, run_dir, loaded.stack_path.parent, options.build_args,
                                loaded.stack_path.stem, network=network)
    else:
        runtime = LocalRuntime(run_dir, loaded.stack_path.parent)
    holder["runtime"] = runtime  # before anything is made, so that teardown finds it all
    if runtime_name == "docker":
        runtime.open_network()
        journal.environment["network"] = runtime.network_name or "host"
        report(f"docker network {runtime.network_name}: services reach each other by name, ports are published "
               "on 127.0.0.1" if runtime.network_name else "docker network: the host's")
    if runtime_name == "docker" and not url:
        backend = start_proxy_container_backend(run_dir, runtime, options.build_args)
    else:
        backend = start_proxy_backend(run_dir, url)
    holder["backend"] = backend
    journal.environment["proxy"] = {"kind": backend.kind, "url": backend.url, "version": backend.version}
    state.proxy_url, state.proxy_pid = backend.url, backend.pid
    state.save()
    report(f"fault proxy: {backend.kind} at {backend.url} (version {backend.version})")
    if backend.kind == "builtin-container":
        report("the ghcr.io/shopify/toxiproxy image is not here and could not be pulled: the builtin "
               "Toxiproxy-compatible server serves in a container instead")

    client = backend.client
    handle = StackHandle()
    holder["handle"] = handle

    def record_started() -> None:
        state.services = {n: s.pid for n, s in handle.services.items() if s.pid}
        state.proxies = [p.name for p in handle.proxies.values()]
        state.save()

    report(f"starting stack {loaded.stack_path} ({', '.join(loaded.stack.start_order())})")
    bring_up(loaded.stack, runtime, client, handle, on_started=record_started)
    record_started()
    journal.stack_ready_s = time.monotonic() - started
    if runtime_name == "docker":
        journal.environment["image_build_s"] = round(runtime.build_seconds, 3)
    journal.services = {n: {"port": s.port, "pid": s.pid, "container": s.container,
                            "ready_after_s": round(s.ready_after_s, 3), "log": str(s.log_path)}
                        for n, s in handle.services.items()}
    journal.proxies = {edge: {"proxy": p.name, "listen": p.listen, "upstream": p.upstream,
                              "address": handle.addresses.get(edge)}
                       for edge, p in handle.proxies.items()}
    ready = f"stack ready in {journal.stack_ready_s:.1f}s"
    if runtime_name == "docker":
        ready += f" under docker (images built or checked in {runtime.build_seconds:.1f}s)"
    report(ready)

    targets = {name: f"http://{s.host}:{s.port}{loaded.stack.services[name].metrics}"
               for name, s in handle.services.items() if loaded.stack.services[name].metrics}
    scraper = Scraper(targets, journal.scrapes)
    holder["scraper"] = scraper
    scraper.start()
    # a model swap is measured against the answers given before any fault: take them now
    swaps = {f.service: f for p in experiment.phases for f in p.faults if isinstance(f, ModelSwapFault)}
    for name, swap in swaps.items():
        running = handle.services[name]
        prober = Prober(name, f"http://{running.host}:{running.port}", swap.probe, journal.scrapes)
        holder.setdefault("probers", []).append(prober)
        prober.start()
    context = FaultContext(client, runtime, handle, loaded.stack, run_dir / "logs", record_started, state.helpers,
                           holder.setdefault("expected_down", set()))

    plan = plan_load(experiment.load, experiment.phases)
    target = handle.services[experiment.load.target]
    spec = load_spec(experiment.load, f"http://{target.host}:{target.port}", plan, options.seed,
                     loaded.path.parent)
    load = LoadGenerator(spec, run_dir / "logs" / "load.log", store)
    holder["load"] = load
    if experiment.load.remote_workers:
        master = f"{spec['master_bind']}:{spec['master_port']}"
        report(f"waiting up to 60s for {experiment.load.remote_workers} remote load worker(s): on each machine run "
               f"`aichaos worker --master {master}` (with the address this machine has there)")
    load.start()
    state.load_pid = load.pid
    state.save()
    ramp = plan.levels[0].users / spec["spawn_rate"]
    # phases start on a whole second, so fault boundaries fall on bucket boundaries
    t0 = float(int(time.time() + ramp) + 1)
    journal.t0 = t0
    load.set_t0(t0)
    journal.offered = {int(t0) + k: level.rate for k, level in enumerate(plan.levels) if level.rate is not None}
    load_kind = f"{experiment.load.users} users" if experiment.load.rate is None else \
        f"{experiment.load.rate:g} req/s paced over {experiment.load.users} users"
    if experiment.load.distributed:
        load_kind += (f" on {experiment.load.workers} worker(s)" +
                      (f" + {experiment.load.remote_workers} remote" if experiment.load.remote_workers else "") +
                      f", master {spec['master_bind']}:{spec['master_port']}")
    report(f"load: {load_kind} against {experiment.load.target}; baseline starts in {t0 - time.time():.1f}s")
    _sleep_until(t0, store, journal, load, runtime, backend, loaded)

    phase_start = t0
    for phase in experiment.phases:
        record = PhaseRecord(phase.name, phase_start, phase_start + phase.duration)
        journal.phases.append(record)
        _sleep_until(phase_start, store, journal, load, runtime, backend, loaded, None, context.expected_down)
        for i, fault in enumerate(phase.faults):
            fault_record = apply_fault(fault, phase.name, i, context)
            applied.append(fault_record)
            state.faults = [f.undo_record for f in applied if not f.reverted and f.undo_record]
            state.save()
            journal.event("fault_applied", phase.name, fault_record.description, fault_record.applied_at)
            report(f"[{phase.name}] applied {fault_record.description}")
        if not phase.faults:
            report(f"[{phase.name}] {phase.duration:g}s")
        stopped = _sleep_until(record.end, store, journal, load, runtime, backend, loaded, experiment,
                               context.expected_down)
        for fault_record in [f for f in applied if f.phase == phase.name and not f.reverted]:
            _revert(fault_record, journal, report)
        state.faults = [f.undo_record for f in applied if not f.reverted and f.undo_record]
        state.save()
        if stopped:
            record.end = time.time()
            break
        phase_start = record.end
    journal.status = "aborted" if journal.stop else "completed"


def _sleep_until(deadline: float, store: SampleStore, journal: Journal, load: Any, runtime: Any, backend: Any,
                 loaded: LoadedExperiment, experiment: Experiment | None = None,
                 expected_down: set[str] | None = None) -> bool:
    """Sleep until ``deadline`` while watching the load process, the stack and stop conditions.

    Returns True when a stop condition fired.
    """
    next_check = next_watch = 0.0
    queries = queries_of(experiment) if experiment is not None else {}
    # a distributed load reports a second about a second later: read only seconds that are complete
    lag = 2 if loaded.experiment.load.distributed else 1
    while True:
        now = time.time()
        if now >= deadline:
            return False
        if not load.alive():
            raise LoadError(f"the load process died (see {load.log_path})")
        if now >= next_watch:  # twice a second: under docker each look is an API call per container
            next_watch = now + 0.5
            if not backend.alive():
                raise ProxyError(f"the fault proxy ({backend.kind} at {backend.url}) died during the run",
                                 hint=f"see {journal.run_dir / 'logs' / 'proxy.log'}")
            for name in loaded.stack.services:
                if name not in (expected_down or ()) and not runtime.is_alive(name):
                    raise StackStartError(f"service {name!r} {runtime.exit_reason(name)} during the run",
                                          hint=f"see {runtime.logs.get(name)}")
        if experiment is not None and experiment.stop_when and now >= next_check:
            next_check = now + 0.5
            longest = max(max(1, round(t.for_)) for c in experiment.stop_when for t in c.conditions().values())
            end = int(now) - lag  # seconds before this one are complete
            fired = _stop_condition(experiment, store.snapshot(end - longest, end), end, journal.scrapes, queries)
            if fired:
                journal.stop = fired
                journal.event("stop_condition", "", fired, now)
                return True
        time.sleep(min(0.1, max(0.0, deadline - now)))


def _stop_condition(experiment: Experiment, buckets: dict[int, Bucket], end: int,
                    scrapes: ScrapeStore | None = None, queries: Queries | None = None) -> str | None:
    """The first stop condition that holds over the trailing complete seconds, or None.

    A request metric needs ``min_requests`` in the span; a scraped one holds when every scrape in
    the span is past the threshold (a gauge's lowest value is above it, or its highest below it).
    """
    for condition in experiment.stop_when:
        for metric, threshold in condition.conditions().items():
            width = max(1, round(threshold.for_))
            m = metrics_of(buckets, end - width, end, scrapes, queries)
            if "/" not in metric and m.count < experiment.steady_state.min_requests:
                continue
            if threshold.above is not None:
                value = m.lowest(metric)
                if value is not None and value > threshold.above:
                    return f"{metric} = {value:.4g} above {threshold.above:g} for {width}s"
            if threshold.below is not None:
                value = m.get(metric)
                if value is not None and value < threshold.below:
                    return f"{metric} = {value:.4g} below {threshold.below:g} for {width}s"
    return None


def _revert(fault: AppliedFault, journal: Journal, report: Reporter) -> None:
    try:
        fault.revert()
    except AichaosError as exc:
        fault.revert_error = exc.message
        journal.errors.append(f"could not revert {fault.description}: {exc.message}")
        report(f"[{fault.phase}] FAILED to revert {fault.description}: {exc.message}")
        return
    journal.event("fault_reverted", fault.phase, fault.description, fault.reverted_at or time.time())
    report(f"[{fault.phase}] reverted {fault.description}")


def _teardown(journal: Journal, state: RunState, applied: list[AppliedFault], holder: dict[str, Any],
              options: RunOptions, report: Reporter, sig: SignalGate) -> None:
    sig.raising = False  # from here on, signals are noted, never raised
    load, runtime, backend = holder.get("load"), holder.get("runtime"), holder.get("backend")
    if holder.get("scraper") is not None:
        holder["scraper"].stop()
    for prober in holder.get("probers", []):
        prober.stop()
    for fault in applied:
        if not fault.reverted:
            _revert(fault, journal, report)
    journal.faults = [f.to_json() for f in applied]
    if load is not None:
        load.stop(timeout=2.0 if sig.hurried else 15.0)
        journal.load_totals = {"locust_total": load.locust_total, "collected_total": load.collected_total}
    leftovers: list[str] = []
    handle = holder.get("handle")
    if backend is not None and handle is not None and not options.keep_stack:
        for edge, info in handle.proxies.items():
            try:
                backend.client.delete_proxy(info.name)
            except AichaosError as exc:
                leftovers.append(f"proxy {info.name} for {edge} ({exc.message})")
    if runtime is not None and not options.keep_stack:
        leftovers += runtime.teardown(hurry=sig.hurried)
    elif runtime is not None:
        report("--keep-stack: leaving the stack running; stop it with `aichaos cleanup --run "
               f"{journal.run_id}`")
    if backend is not None and not options.keep_stack:
        leftovers += backend.close()
    if runtime is not None and not options.keep_stack:
        leftovers += runtime.close_network()  # last: the proxy and the services were on it
    unreverted = [f for f in applied if not f.reverted]
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
