"""One OpenAI-compatible request from a Locust user, every chunk of its answer timed as it arrives.

Runs inside the load process only (gevent): each user holds one keep-alive connection
(geventhttpclient, the client under Locust's ``FastHttpUser``), reads the response line by line as
the bytes arrive, parses the server-sent events with ``sseclient-py`` and stamps each event with
``time.perf_counter()`` the moment it is complete. ``aichaos.load.openai.StreamReader`` makes the
request's measurements from those stamps; the request goes to Locust's ``request`` event like any
other, with its E2EL as the response time and the ``StreamResult`` attached (``llm=``).

``benchmarks/llm_load.py`` measures what this costs against a bare asyncio client.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPSocketPoolResponse
from geventhttpclient.url import URL
from sseclient import SSEClient

from aichaos.load.openai import Goodput, StreamReader, StreamResult, body_draw, read_whole

log = logging.getLogger(__name__)

MAX_ERROR_BODY = 64 * 1024


class StatusError(Exception):
    """A non-2xx answer (Locust's stats show it; aichaos counts it as 4xx or 5xx)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        self.status_code = status


class LlmAnswerError(Exception):
    """A stream that failed after its headers: truncated, an error event, malformed data."""

    def __init__(self, result: StreamResult) -> None:
        super().__init__(f"{result.error}: {result.detail}")
        self.kind = result.error


def client_for(host: str, timeout: float) -> HTTPClient:
    """One keep-alive connection; ``timeout`` bounds connecting and each wait for the next bytes."""
    return HTTPClient.from_url(URL(host), concurrency=1, connection_timeout=timeout, network_timeout=timeout)


def make_llm_request(req: dict[str, Any], goodput: Goodput) -> Callable[[Any], None]:
    """The task that sends ``req`` (a request spec whose ``llm`` block the generator filled in)."""
    llm = req["llm"]
    draw = body_draw(llm)
    chat = llm["api"] == "chat"
    stream = bool(llm["stream"])
    name, path = req["name"], req["path"]
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json",
               **(req.get("headers") or {})}
    key_env = llm.get("api_key_env")
    if key_env:
        key = os.environ.get(key_env)
        if key is None:
            log.error("environment variable %s (the API key of request %s) is not set here: sending without it",
                      key_env, name)
        else:
            headers["Authorization"] = f"Bearer {key}"

    def send(user: Any) -> None:
        client = getattr(user, "llm_client", None)
        if client is None:
            client = user.llm_client = client_for(user.host, user.network_timeout)
            user.llm_prefix = URL(user.host).path.rstrip("/")
        body = json.dumps(draw(user.rng)).encode()
        started = time.time()
        sent = time.perf_counter()
        response: Any = None
        answer: HTTPSocketPoolResponse | None = None
        try:
            answer = client.request("POST", user.llm_prefix + path, body=body, headers=headers)
            status = answer.status_code
            if status >= 400:
                raise StatusError(status, answer.read(MAX_ERROR_BODY))
            if stream:
                result = read_stream(answer, sent, chat)
            else:
                result = read_whole(answer.read(), sent, time.perf_counter(), chat)
            exception: BaseException | None = None if result.ok else LlmAnswerError(result)
        except StatusError as exc:
            response, exception = exc, exc
            result = StreamResult(error="status", detail=str(exc), e2el_ms=(time.perf_counter() - sent) * 1000)
        except Exception as exc:  # connection refused or reset, timeout, a broken response: counted by kind
            exception = exc
            result = StreamResult(error="transport", detail=repr(exc), e2el_ms=(time.perf_counter() - sent) * 1000)
        finally:
            if answer is not None:
                # back to the user's one-connection pool (closed unless the answer ended cleanly), on every
                # path: a socket left checked out would block the user's next request for ever
                answer.release()
        result.good = goodput.good(result)
        user.environment.events.request.fire(
            request_type="POST", name=name, response_time=result.e2el_ms, response_length=0, exception=exception,
            context={}, start_time=started, url=path, response=response, llm=result)

    return send


def read_stream(answer: HTTPSocketPoolResponse, sent: float, chat: bool) -> StreamResult:
    """Read a ``text/event-stream`` answer to its end, timing each event as it completes.

    A timeout waiting for the next bytes propagates (the request is a ``timeout``); a connection
    that drops mid-stream ends the stream, which the reader then judges (``truncated`` unless its
    ``[DONE]`` had arrived).
    """
    reader = StreamReader(sent, chat)
    ended = False

    def lines() -> Iterator[bytes]:
        nonlocal ended
        while True:
            line = answer.readline(b"\n")
            if not line:
                ended = True
                return
            yield line

    problem = ""
    clock = time.perf_counter
    try:
        for event in SSEClient(lines()).events():
            if ended:
                break  # an event left unterminated when the stream ended is discarded, as the SSE spec says
            reader.on_event(event.event, event.data, clock())
    except TimeoutError:
        raise
    except Exception as exc:  # the connection dropped or the response broke mid-stream
        problem = f"{type(exc).__name__}: {exc}"
    return reader.finish(clock(), complete=answer.message_complete and not problem, problem=problem)
