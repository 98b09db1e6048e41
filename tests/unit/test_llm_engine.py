"""The sample LLM server's engine in-process (tiny model): scheduling, the KV budget, preemption, faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

torch = pytest.importorskip("torch")

from sample_stack.llm_engine import (  # noqa: E402 - after the skip
    Engine,
    EngineConfig,
    EngineDead,
    Output,
    QueueFull,
    SamplingParams,
    Sequence,
    stop_at,
)


class Harness:
    def __init__(self, max_num_seqs: int, max_waiting: int) -> None:
        self.outputs: list[Output] = []
        self.batches: list[int] = []
        self.finished = threading.Condition()
        config = EngineConfig(model_size="tiny", max_model_len=128, max_num_seqs=max_num_seqs, max_waiting=max_waiting)
        self.engine = Engine(config, self._deliver, self, cold_start_ms=0)

    def _deliver(self, outputs: list[Output]) -> None:
        with self.finished:
            self.outputs += outputs
            self.finished.notify_all()

    def step(self, batch: int, prefill_tokens: int, decode_tokens: int, seconds: float) -> None:
        self.batches.append(batch)

    def submit(self, prompt: list[int], max_tokens: int = 12) -> Sequence:
        seq = Sequence(prompt, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True))
        self.engine.add(seq)
        return seq

    def wait(self, *seqs: Sequence, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        with self.finished:
            while not all(s.finish_reason for s in seqs):
                assert self.finished.wait(deadline - time.monotonic()), "the engine did not finish in time"


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(max_num_seqs=8, max_waiting=4)
    h.engine.start()
    assert h.engine.wait_started(30)
    yield h
    h.engine.stop()


def prompt(i: int, n: int = 20) -> list[int]:
    return [5 + (i * 7 + k) % 900 for k in range(n)]


def test_stop_strings_cut_the_text_before_them() -> None:
    assert stop_at(" a b", " cde", ("cd",)) == " "
    assert stop_at(" a b", " c", ("zz",)) is None
    assert stop_at(" a", "b c", ("ab",)) == ""  # began in text already sent: nothing more of it


def test_requests_join_a_running_batch_and_finish_with_their_length(harness: Harness) -> None:
    harness.engine.faults.decode_delay_ms = 5  # 40 tokens take 200 ms at least, whatever the machine
    first = [harness.submit(prompt(i), max_tokens=40) for i in range(3)]
    time.sleep(0.05)
    late = harness.submit(prompt(9), max_tokens=5)
    harness.wait(*first, late)
    assert [len(s.output) for s in (*first, late)] == [40, 40, 40, 5]
    assert late.finished is not None and late.finished < max(s.finished or 0 for s in first)
    assert max(harness.batches) >= 3
    assert harness.engine.used_blocks == 0 and harness.engine.num_running == 0


def test_preempted_sequences_are_recomputed_to_the_same_tokens(harness: Harness) -> None:
    alone = []
    for i in range(4):
        seq = harness.submit(prompt(i), max_tokens=30)
        harness.wait(seq)
        alone.append(seq.output)
    harness.engine.set_block_budget(6)  # 96 tokens for four sequences of up to 50
    squeezed = [harness.submit(prompt(i), max_tokens=30) for i in range(4)]
    harness.wait(*squeezed)
    assert harness.engine.preemptions > 0 and sum(s.preemptions for s in squeezed) == harness.engine.preemptions
    assert [s.output for s in squeezed] == alone
    assert harness.engine.used_blocks == 0


def test_aborted_sequences_free_their_blocks(harness: Harness) -> None:
    seq = harness.submit(prompt(1), max_tokens=100)
    while not seq.output:
        time.sleep(0.01)
    harness.engine.abort(seq)
    harness.wait(seq)
    assert seq.finish_reason == "abort" and harness.engine.used_blocks == 0


def test_the_admission_queue_is_bounded(harness: Harness) -> None:
    harness.engine.faults.hang = True  # nothing is admitted
    waiting = [harness.submit(prompt(i)) for i in range(4)]
    with pytest.raises(QueueFull):
        harness.submit(prompt(5))
    harness.engine.faults.hang = False
    harness.wait(*waiting)


def test_a_crash_fails_what_is_in_flight_and_a_restart_serves_again(harness: Harness) -> None:
    harness.engine.faults.decode_delay_ms = 20
    seq = harness.submit(prompt(1), max_tokens=100)
    while not seq.output:
        time.sleep(0.01)
    harness.engine.crash()
    harness.wait(seq)
    assert any(o.seq is seq and o.error and "engine died" in o.error for o in harness.outputs)
    assert not harness.engine.alive
    with pytest.raises(EngineDead):
        harness.submit(prompt(2))
    harness.engine.faults.decode_delay_ms = 0
    harness.engine.restart()
    assert harness.engine.wait_started(10)
    again = harness.submit(prompt(2), max_tokens=3)
    harness.wait(again)
    assert len(again.output) == 3
