"""Golden answers: what a deterministic answer should be, and how a later answer differs from it.

A probe set is sent with deterministic decoding (temperature 0 and a seed) before any fault; those
answers are the golden ones. The same probes are sent again every second of the run, and each
answer is compared with its golden one (``compare``). The problems, each a share of the probes sent
in that second (``round_metrics``), are series of the probed service, usable in SLOs, stop
conditions and degradation gates as ``<service>/aichaos_golden_<problem>``:

==========================  ==================================================================
``aichaos_golden_failed``   no answer: a non-2xx status, a broken connection, or an error event
                            in the stream (the load's errors count these too)
``…_truncated``             the answer ended without a ``finish_reason`` (or ``[DONE]`` when
                            streamed), or its text is a strict prefix of the golden text
``…_duplicated``            text repeated: the golden text's start, then the golden text again
                            from its beginning (a retry or failover that restarted the stream)
``…_changed``               another text (a model swap, a replica on another version)
``…_finish_reason``         a complete answer whose ``finish_reason`` is not the golden one
``…_usage``                 ``usage.completion_tokens`` that disagrees with the text: not the
                            golden count for the golden text, or, when the golden answer showed
                            the server sends one token per chunk, not the chunks received
``…_mismatch``              any of the five above: the answer is not the golden one
==========================  ==================================================================

Pure functions of answers; ``aichaos.correctness`` sends the probes and records the series.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

PREFIX = "aichaos_golden_"
PROBLEMS = ("failed", "truncated", "duplicated", "changed", "finish_reason", "usage")
SERIES = tuple(PREFIX + p for p in (*PROBLEMS, "mismatch"))


@dataclass(frozen=True)
class Answer:
    """One answer to a probe, as the client saw it."""

    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int | None = None  # the server's usage, when it gave one
    chunks: int = 0  # events that carried text (1 for an answer not streamed)
    complete: bool = True  # a stream that ended with [DONE] (an answer not streamed: always)
    error: str | None = None  # a status, a broken connection, an error event

    @property
    def failed(self) -> bool:
        return self.error is not None


def _choice(payload: dict[str, Any]) -> dict[str, Any]:
    choices = payload.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    return first if isinstance(first, dict) else {}


def _text_of(choice: dict[str, Any]) -> str:
    """Chat: ``delta.content`` (streamed) or ``message.content``; completions: ``text``."""
    for key in ("delta", "message"):
        part = choice.get(key)
        if isinstance(part, dict):
            content = part.get("content")
            return content if isinstance(content, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def _tokens(payload: dict[str, Any]) -> int | None:
    usage = payload.get("usage")
    value = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_events(events: Iterable[str]) -> Answer:
    """The answer a stream's ``data:`` payloads make (each without its ``data:``), in order."""
    text: list[str] = []
    finish = tokens = None
    chunks = 0
    for data in events:
        data = data.strip()
        if data == "[DONE]":
            return Answer("".join(text), finish, tokens, chunks, complete=True)
        try:
            payload = json.loads(data)
        except ValueError:
            return Answer("".join(text), finish, tokens, chunks, complete=False, error="malformed event")
        if not isinstance(payload, dict):
            return Answer("".join(text), finish, tokens, chunks, complete=False, error="malformed event")
        if "error" in payload:
            error = payload["error"]
            code = error.get("code") if isinstance(error, dict) else None
            return Answer("".join(text), finish, tokens, chunks, complete=False,
                          error=f"error event{f' ({code})' if code is not None else ''}")
        choice = _choice(payload)
        piece = _text_of(choice)
        if piece:
            text.append(piece)
            chunks += 1
        if choice.get("finish_reason") is not None:
            finish = str(choice["finish_reason"])
        tokens = _tokens(payload) if _tokens(payload) is not None else tokens
    return Answer("".join(text), finish, tokens, chunks, complete=False)


def read_body(body: bytes) -> Answer:
    """The answer of a request that was not streamed (one JSON object)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return Answer(error="malformed answer")
    if not isinstance(payload, dict) or "error" in payload:
        return Answer(error="error answer")
    choice = _choice(payload)
    text = _text_of(choice)
    finish = choice.get("finish_reason")
    return Answer(text, None if finish is None else str(finish), _tokens(payload), 1 if text else 0)


def is_duplicated(text: str, golden: str) -> bool:
    """``text`` is a start of ``golden`` followed by ``golden`` again from its beginning (all of it or a
    start of it): what a client gets from a stream restarted elsewhere without skipping what it had."""
    if text == golden or not golden:
        return False
    for k in range(1, min(len(text), len(golden)) + 1):
        if text[k - 1] != golden[k - 1]:
            return False
        rest = text[k:]
        if rest and (golden.startswith(rest) or rest.startswith(golden)):
            return True
    return False


def compare(golden: Answer, answer: Answer) -> frozenset[str]:
    """The problems (names of ``PROBLEMS``) of ``answer`` against the ``golden`` one; empty when it is
    the golden answer."""
    if answer.failed:
        return frozenset({"failed"})
    problems: set[str] = set()
    ended = answer.complete and answer.finish_reason is not None
    if not ended or (answer.text != golden.text and golden.text.startswith(answer.text)):
        problems.add("truncated")
    if answer.text != golden.text and "truncated" not in problems:
        problems.add("duplicated" if is_duplicated(answer.text, golden.text) else "changed")
    if ended and answer.finish_reason != golden.finish_reason:
        problems.add("finish_reason")
    if ended and answer.completion_tokens is not None:
        one_per_chunk = golden.completion_tokens is not None and golden.completion_tokens == golden.chunks
        expected = answer.chunks if one_per_chunk else \
            golden.completion_tokens if answer.text == golden.text else None
        if expected is not None and answer.completion_tokens != expected:
            problems.add("usage")
    return frozenset(problems)


def round_metrics(goldens: Sequence[Answer | None], answers: Sequence[Answer]) -> dict[str, float]:
    """Each problem's share of the probes that have a golden answer (``SERIES``), for one round; empty
    when none has."""
    found = [compare(g, a) for g, a in zip(goldens, answers, strict=True) if g is not None]
    if not found:
        return {}
    out = {PREFIX + p: sum(p in f for f in found) / len(found) for p in PROBLEMS}
    out[PREFIX + "mismatch"] = sum(bool(f - {"failed"}) for f in found) / len(found)
    return out
