"""The fault and runtime registries: complete, consistent with the experiment format, and used by
cleanup without guessing."""

from __future__ import annotations

import os

from aichaos.experiment.model import Experiment, FaultSpec
from aichaos.experiment.stack import Stack
from aichaos.faults.registry import UndoContext, kind_of, kinds, revert_undo, undo_record
from aichaos.runtime.registry import RUNTIME_CHOICES, choose_runtime, runtime_kind


def test_every_fault_type_of_the_format_has_exactly_one_kind_and_no_kind_lacks_a_type():
    types = [m.type_name() for m in FaultSpec.MODELS]
    assert len(types) == len(set(types)) and len(types) >= 23
    assert set(kinds()) == set(types)
    for name, kind in kinds().items():
        assert kind.model.type_name() == name
        assert kind.target in ("edge", "service", "container", "load")


def test_the_schema_offers_every_fault_type_and_every_public_runtime():
    schema = Experiment.model_json_schema()
    text = str(schema)
    for model in FaultSpec.MODELS:
        assert f"'const': '{model.type_name()}'" in text
    assert schema["properties"]["runtime"]["enum"] == list(RUNTIME_CHOICES)
    assert "fake" not in RUNTIME_CHOICES  # the test double is not offered to users


def test_an_undo_record_names_its_kind_and_cleanup_reverts_through_it():
    record = undo_record("process_resume", pid=os.getpid())
    assert record["kind"] == "process_resume"
    said = revert_undo(record, UndoContext(is_ours=lambda pid: False))
    assert said == f"paused process group {os.getpid()} is gone already"  # never signals a process not its own


def test_an_undo_record_of_an_unknown_kind_is_reported_not_guessed():
    said = revert_undo({"proxy_url": "http://127.0.0.1:1", "proxy": "p", "toxic": "t"}, UndoContext(lambda p: True))
    assert "no undoer for kind None" in said
    assert "no undoer for kind 'teleport'" in revert_undo({"kind": "teleport"}, UndoContext(lambda p: True))


def test_auto_says_why_it_passes_a_runtime_by():
    stack = Stack.model_validate({"services": {"api": {"command": ["python", "-m", "x"], "ready": {"tcp": True}}}})
    said: list[str] = []
    kind = choose_runtime("auto", stack, said.append)
    assert kind.name == "local"
    assert said == ["runtime auto: using local processes; not docker: api has no image or build"]
    assert runtime_kind("local").name == "local" and kind_of("latency").target == "edge"
