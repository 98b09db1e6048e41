"""The HTML report of a 10-minute run: its size, the time to render it, and the time to open it.

Builds a synthetic journal of a 10-minute run (2 min baseline, 4 min fault, 4 min recovery; 200
requests a second with log-normal latencies, errors during the fault, three services scraped every
second with eight series each, LLM stream figures when aichaos measures them), analyses it as a run
does, renders report.html, and opens it in headless Chromium (when there is one) to measure the time
from navigation to the charts drawn. Targets: under 1.5 MB, opening in under a second.

    python benchmarks/html_report.py [--minutes 10] [--rps 200] [--keep report.html]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.browser drives the browser

from aichaos.experiment.model import Experiment  # noqa: E402
from aichaos.metrics.histogram import bucket_of  # noqa: E402
from aichaos.metrics.samples import Bucket  # noqa: E402
from aichaos.metrics.scrape import ScrapeStore  # noqa: E402
from aichaos.report.html import html_report  # noqa: E402
from aichaos.report.journal import Journal, PhaseRecord, analyse  # noqa: E402

T0 = 1_800_000_000


def experiment(minutes: int) -> Experiment:
    seconds = minutes * 60
    return Experiment.model_validate({
        "version": 1, "name": "bench-10-minutes", "stack": "stack.yaml",
        "description": "A 10-minute run: the model answers 300 ms slower; p95 stays under 800 ms.",
        "load": {"target": "gateway", "users": 50, "requests": [{"name": "predict", "path": "/predict"}]},
        "steady_state": {"window": "5s", "slo": {"p95_ms": {"max": 800}, "error_rate": {"max": 0.02},
                                                 "metrics": {"gateway": {"queue_depth": {"max": 100}}}}},
        "phases": [{"name": "baseline", "duration": f"{seconds // 5}s"},
                   {"name": "fault", "duration": f"{seconds * 2 // 5}s",
                    "faults": [{"type": "latency", "edge": "gateway->model-server", "latency_ms": 300}]},
                   {"name": "recovery", "duration": f"{seconds * 2 // 5}s"}],
        "gates": {"recovery_time": {"max": "15s"}, "degradation": {"p95_ms": {"max_ratio": 4}}},
    })


def synthetic_journal(minutes: int, rps: int, run_dir: Path) -> Journal:
    exp = experiment(minutes)
    rng = random.Random(7)
    journal = Journal(run_id="bench", run_dir=run_dir, experiment_file="bench.yaml", stack_file="stack.yaml",
                      experiment=exp.model_dump(mode="json", by_alias=True), started_at=T0 - 5.0, t0=float(T0),
                      status="completed")
    journal.environment = {"runtime": "local", "python": sys.version.split()[0], "aichaos": "bench",
                           "proxy": {"kind": "builtin", "url": "http://127.0.0.1:1", "version": "bench"}}
    start = T0
    for phase in exp.phases:
        journal.phases.append(PhaseRecord(phase.name, start, start + phase.duration))
        start += int(phase.duration)
    fault = journal.phases[1]
    journal.faults = [{"phase": "fault", "type": "latency", "target": "gateway->model-server",
                       "description": "latency on gateway->model-server downstream: +300 ms (±0)",
                       "applied_at": fault.start + 0.004, "reverted_at": fault.end + 0.003, "detail": {}}]
    try:
        from aichaos.metrics.llm import LlmStats  # measured when the load is LLM streams
    except ImportError:
        LlmStats = None
    store = ScrapeStore()
    for second in range(T0 - 3, int(journal.phases[-1].end) + 1):
        in_fault = fault.start <= second < fault.end + 8
        bucket = Bucket(second=second)
        llm = LlmStats() if LlmStats is not None else None
        for _ in range(rps + rng.randint(-10, 10)):
            bucket.count += 1
            if in_fault and rng.random() < 0.03:
                kind = rng.choice(["timeout", "5xx", "connection"])
                bucket.errors[kind] = bucket.errors.get(kind, 0) + 1
                continue
            ms = rng.lognormvariate(math.log(40), 0.5) + (300 if in_fault else 0)
            key = bucket_of(ms)
            bucket.hist[key] = bucket.hist.get(key, 0) + 1
            if llm is not None:
                llm.requests += 1
                llm.streams += 1
                llm.good += 1
                llm.output_tokens += 64
                for name, value in (("ttft", ms / 2), ("tpot", ms / 60), ("itl", ms / 60), ("e2el", ms),
                                    ("gap", ms / 20)):
                    hist = getattr(llm, name)
                    hist[bucket_of(value)] = hist.get(bucket_of(value), 0) + 1
        if llm is not None and hasattr(bucket, "llm"):
            bucket.llm = llm
        journal.samples[second] = bucket
        journal.users[second] = 50
        for service in ("gateway", "model-server", "redis"):
            values = {f"requests_total{{status=\"{s}\"}}": float((second - T0) * rps + s) for s in (200, 503)}
            values.update({"queue_depth": rng.uniform(0, 80 if in_fault else 10), "batch_size": rng.uniform(1, 8),
                           "gpu_memory_bytes": 2e9 + rng.uniform(0, 1e8), "in_flight": rng.uniform(0, 50),
                           "cache_hit_ratio": rng.uniform(0.8, 0.95), "process_cpu_seconds_total": second * 0.1})
            kinds = {k: "counter" if k.endswith("_total") or "_total{" in k else "gauge" for k in values}
            store.add(second, service, values, kinds)
    journal.scrapes = store
    analyse(journal, exp)
    journal.finish()
    return journal


def open_time(path: Path) -> list[tuple[float, float, int]] | str:
    """For a first (cold) and a second open: (ms from navigation to the load event, to the charts
    drawn, charts drawn); or why there is no browser. Raises on a console error."""
    from tests.browser import Chromium, find_chromium

    found, why = find_chromium()
    if found is None:
        return why
    out = []
    with Chromium() as browser:
        page = browser.page()
        for _ in range(2):
            page.open(path.as_uri())
            loaded = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
            drawn = page.evaluate("window.aichaosRendered")
            charts = page.evaluate("document.querySelectorAll('.chart canvas').length")
            out.append((float(loaded), float(drawn), int(charts)))
        if page.console_errors():
            raise RuntimeError(f"console errors: {page.console_errors()}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rps", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="also write the report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        journal = synthetic_journal(args.minutes, args.rps, Path(tmp))
        began = time.perf_counter()
        page = html_report(journal)
        rendered = time.perf_counter() - began
        path = Path(tmp) / "report.html"
        path.write_text(page)
        if args.keep:
            args.keep.write_text(page)
        size = len(page.encode())
        print(f"{args.minutes}-minute run, {sum(b.count for b in journal.samples.values()):,} requests, "
              f"journal {len(journal.dumps().encode()) / 1e6:.1f} MB")
        print(f"report.html: {size / 1e6:.3f} MB (target < 1.5 MB); rendered in {rendered * 1000:.0f} ms")
        opened = open_time(path)
        if isinstance(opened, str):
            print(f"open time: not measured ({opened})")
            return
        for label, (loaded, drawn, charts) in zip(("first open", "second open"), opened, strict=True):
            print(f"{label} in headless Chromium: {charts} charts drawn {drawn:.0f} ms after navigation, load "
                  f"event at {loaded:.0f} ms (target < 1000 ms)")


if __name__ == "__main__":
    main()
