"""Toxic definitions of the builtin proxy, with Toxiproxy v2's names, attributes and defaults.

A toxic applies to one stream of a proxy: ``downstream`` (upstream server → client) or ``upstream``
(client → upstream server). Attributes, as in Toxiproxy:

============  =============================================  ==========================
type          attributes                                     unit
============  =============================================  ==========================
latency       latency, jitter                                ms (jitter ±, uniform)
bandwidth     rate                                           KB/s (1 KB = 1000 bytes)
slow_close    delay                                          ms before the close passes
timeout       timeout                                        ms; 0 holds data forever
reset_peer    timeout                                        ms before the RST
slicer        average_size, size_variation, delay            bytes, bytes, µs
limit_data    bytes                                          bytes, then close
============  =============================================  ==========================

HTTP toxics, which only the builtin server has and only on a proxy with ``protocol: http`` (see
``aichaos.proxy.http``). Each acts on whole requests: its toxicity is the share of requests it
acts on (rolled per request, not per connection), and ``path`` (a prefix) and ``method`` narrow
which requests; its ``stream`` is ignored. Events are server-sent events (``data: ...\\n\\n``):

================  =========================================  =====================================
type              attributes                                 meaning
================  =========================================  =====================================
http_error        status, retry_after                        answer ``status`` without forwarding
                                                             (``Retry-After: retry_after`` s on
                                                             429 and 503)
first_byte_delay  delay                                      ms the response's first byte waits
stream_stall      after_events, stall                        after N events, hold ``stall`` ms
stream_throttle   rate                                       at most ``rate`` events per second
stream_truncate   after_events, mode                         after N events: ``close`` the
                                                             connection, or ``end`` the body well
                                                             framed, without the rest
stream_corrupt    after_events, mode, status                 event N+1 ``malformed``, or an
                                                             ``error`` event (code ``status``)
                                                             inserted before it
================  =========================================  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOXIC_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "latency": ("latency", "jitter"),
    "bandwidth": ("rate",),
    "slow_close": ("delay",),
    "timeout": ("timeout",),
    "reset_peer": ("timeout",),
    "slicer": ("average_size", "size_variation", "delay"),
    "limit_data": ("bytes",),
}
_MATCH: dict[str, int | str] = {"path": "", "method": ""}
HTTP_TOXICS: dict[str, dict[str, int | str]] = {  # type -> attribute -> default (its type is the attribute's)
    "http_error": {"status": 503, "retry_after": 1, **_MATCH},
    "first_byte_delay": {"delay": 0, **_MATCH},
    "stream_stall": {"after_events": 0, "stall": 5000, **_MATCH},
    "stream_throttle": {"rate": 10, **_MATCH},
    "stream_truncate": {"after_events": 0, "mode": "close", **_MATCH},
    "stream_corrupt": {"after_events": 0, "mode": "malformed", "status": 500, **_MATCH},
}
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("stream_truncate", "mode"): ("close", "end"),
    ("stream_corrupt", "mode"): ("malformed", "error"),
}
LIMITS: dict[tuple[str, str], tuple[int, int]] = {
    ("http_error", "status"): (100, 599),
    ("stream_corrupt", "status"): (100, 599),
    ("stream_throttle", "rate"): (1, 1_000_000),
}
STREAMS = ("upstream", "downstream")
MAX_ATTRIBUTE = 2**53  # JSON-safe integers; larger values are almost surely mistakes


class ApiError(Exception):
    """An error the HTTP API answers with ``{"error": message, "status": status}``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def bad_body(detail: str) -> ApiError:
    return ApiError(f"bad request body: {detail}", 400)


def check_attributes(kind: str, attributes: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``attributes`` for a toxic type; missing ones keep ``base`` (or 0, or an HTTP toxic's default)."""
    if kind in HTTP_TOXICS:
        return _check_http_attributes(kind, attributes, base)
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        raise bad_body("attributes must be an object")
    allowed = TOXIC_ATTRIBUTES[kind]
    out = dict(base) if base is not None else dict.fromkeys(allowed, 0)
    for key, value in attributes.items():
        if key not in allowed:
            raise bad_body(f"unknown attribute {key!r} for a {kind} toxic (allowed: {', '.join(allowed)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise bad_body(f"attribute {key!r} must be an integer")
        if not 0 <= value <= MAX_ATTRIBUTE:
            raise bad_body(f"attribute {key!r} must be between 0 and {MAX_ATTRIBUTE}")
        out[key] = int(value)
    return out


def _check_http_attributes(kind: str, attributes: Any, base: dict[str, Any] | None) -> dict[str, Any]:
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        raise bad_body("attributes must be an object")
    defaults = HTTP_TOXICS[kind]
    out: dict[str, Any] = dict(base) if base is not None else dict(defaults)
    for key, value in attributes.items():
        if key not in defaults:
            raise bad_body(f"unknown attribute {key!r} for a {kind} toxic (allowed: {', '.join(defaults)})")
        if isinstance(defaults[key], str):
            if not isinstance(value, str) or len(value) > 1024:
                raise bad_body(f"attribute {key!r} must be a string")
            choices = CHOICES.get((kind, key))
            if choices is not None and value not in choices:
                raise bad_body(f"attribute {key!r} must be one of {', '.join(choices)}")
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise bad_body(f"attribute {key!r} must be an integer")
        low, high = LIMITS.get((kind, key), (0, MAX_ATTRIBUTE))
        if not low <= value <= high:
            raise bad_body(f"attribute {key!r} must be between {low} and {high}")
        out[key] = int(value)
    return out


def check_toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise bad_body("toxicity must be a number between 0 and 1")
    return float(value)


@dataclass
class Toxic:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, Any]
    version: int = field(default=0, compare=False)  # bumped on update; links re-roll toxicity

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "stream": self.stream,
                "toxicity": self.toxicity, "attributes": dict(self.attributes)}

    @classmethod
    def from_json(cls, body: Any) -> Toxic:
        if not isinstance(body, dict):
            raise bad_body("expected a JSON object")
        unknown = set(body) - {"name", "type", "stream", "toxicity", "attributes"}
        if unknown:
            raise bad_body(f"unknown field(s): {', '.join(sorted(unknown))}")
        stream = body.get("stream", "downstream")
        if stream in ("", None):
            stream = "downstream"
        if stream not in STREAMS:
            raise ApiError("stream was invalid, can be either upstream or downstream", 400)
        kind = body.get("type")
        if not isinstance(kind, str) or (kind not in TOXIC_ATTRIBUTES and kind not in HTTP_TOXICS):
            raise ApiError("invalid toxic type", 400)
        name = body.get("name") or f"{kind}_{stream}"
        if not isinstance(name, str) or len(name) > 256:
            raise bad_body("name must be a string of at most 256 characters")
        toxicity = check_toxicity(body.get("toxicity", 1.0))
        return cls(name=name, type=kind, stream=stream, toxicity=toxicity,
                   attributes=check_attributes(kind, body.get("attributes")))
