"""How right aichaos's numbers are, on the plain stack where the truth is known.

Two runs of `aichaos run` machinery (local runtime, builtin proxy, real Locust):

1. a ``down`` fault of known length on frontend->backend: the service is broken exactly while the
   edge is down, so the true outage is the fault's length and the true time to recover is 0 s
   (target: measured within ±1 s of both);
2. a ``latency`` fault of known size: the true added p50 is the injected latency
   (target: measured within ±5%).

    python benchmarks/measurement_accuracy.py [--down 6] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from aichaos.experiment.loader import load_experiment
from aichaos.run import RunOptions, run_experiment

ROOT = Path(__file__).resolve().parent.parent

EXPERIMENT = """\
version: 1
name: {name}
stack: {stack}
runtime: local
load:
  target: frontend
  users: 8
  wait: {{min: 5ms, max: 15ms}}
  requests: [{{name: work, method: GET, path: /work}}]
steady_state:
  window: 1s
  warmup: 1s
  slo: {{p95_ms: {{max: {slo_ms}}}, error_rate: {{max: 0.01}}}}
phases:
  - {{name: baseline, duration: 6s}}
  - {{name: fault, duration: {fault_s}s, faults: [{fault}]}}
  - {{name: recovery, duration: 8s}}
"""


def run(folder: Path, name: str, fault: str, fault_s: int, slo_ms: float) -> dict:
    path = folder / f"{name}.yaml"
    path.write_text(EXPERIMENT.format(name=name, stack=ROOT / "sample_stack" / "plain.yaml", fault=fault,
                                      fault_s=fault_s, slo_ms=slo_ms))
    journal = run_experiment(load_experiment(path), RunOptions(run_dir=folder / name), report=lambda _: None)
    if journal.verdict == "error":
        raise SystemExit(f"{name}: the run failed: {journal.errors}")
    return journal.to_json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--down", type=int, default=6, help="seconds the edge is down")
    parser.add_argument("--latency-ms", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        down = run(folder, "down", "{type: down, edge: frontend->backend}", args.down, 100)
        latency = run(folder, "latency", f"{{type: latency, edge: frontend->backend, latency_ms: {args.latency_ms}}}",
                      8, args.latency_ms / 2)

    [d] = down["fault_results"]
    outage = None
    if d["time_to_detect_s"] is not None and d["time_to_recover_s"] is not None:
        # violated from (detect - window) after the start, steady again TTR after the revert
        outage = (d["revert"] - d["start"]) + d["time_to_recover_s"] - (d["time_to_detect_s"] - 1)
    phases = {p["name"]: p["metrics"] for p in latency["phases"]}
    added = phases["fault"]["p50_ms"] - phases["baseline"]["p50_ms"]
    error = (added - args.latency_ms) / args.latency_ms

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}s"

    print(f"{'measure':<34} {'truth':>8} {'measured':>9} {'error':>8} {'target':>8}")
    ttr = d["time_to_recover_s"]
    print(f"{'down: time to recover':<34} {'0.0s':>8} {fmt(ttr):>9} "
          f"{'n/a' if ttr is None else f'{ttr:+.1f}s':>8} {'±1s':>8}")
    print(f"{'down: outage (detect → recover)':<34} {f'{args.down:.1f}s':>8} {fmt(outage):>9} "
          f"{'n/a' if outage is None else f'{outage - args.down:+.1f}s':>8} {'±1s':>8}")
    print(f"{'latency: added p50':<34} {f'{args.latency_ms}ms':>8} {f'{added:.1f}ms':>9} {error:>+8.1%} {'±5%':>8}")
    print(f"latency run p50: baseline {phases['baseline']['p50_ms']:.2f} ms, fault {phases['fault']['p50_ms']:.2f} ms")
    print(f"samples: down run {sum(s['count'] for s in down['samples'])} requests, "
          f"latency run {sum(s['count'] for s in latency['samples'])} requests")


if __name__ == "__main__":
    main()
