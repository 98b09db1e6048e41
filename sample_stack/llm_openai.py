"""The OpenAI API's shapes, as the sample LLM server speaks them: requests, answers, stream chunks.

Requests are validated with pydantic (unknown fields ignored, as OpenAI-compatible servers do; a
field of the wrong type is a 400 naming it). Streams follow OpenAI and vLLM: ``data: {json}``
events, a chat stream opening with a chunk that carries only the role, one chunk per token, the
last token's chunk carrying ``finish_reason``, then a chunk with ``usage`` (and no choices) when
``stream_options.include_usage`` asks for it, then ``data: [DONE]``. Token chunks are written from a
template with only the text JSON-encoded: at 32 streams they are most of what the front writes.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

DONE = b"data: [DONE]\n\n"


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)  # accepted; the sample server samples from the full distribution
    seed: int | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    ignore_eos: StrictBool = False  # vLLM's extension: generate exactly max_tokens

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def requested_tokens(self) -> int | None:
        return self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[int]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"] = "text"
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else " ".join(p.text for p in self.content)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @property
    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def parse(model: type[_Sampling], raw: bytes) -> Any:
    """The request body as ``model``, or BadRequest saying which field is wrong."""
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadRequest(f"{where}: {first['msg']}" if where else first["msg"], where or None) from None


def error_body(status: int, message: str, kind: str | None = None, param: str | None = None) -> dict[str, Any]:
    kinds = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
             429: "rate_limit_exceeded", 500: "internal_server_error", 503: "service_unavailable"}
    return {"error": {"message": message, "type": kind or kinds.get(status, "server_error"), "param": param,
                      "code": status}}


class Answer:
    """One request's answer: the id and the object names of its kind, and the encoders of its chunks."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = json.dumps({"id": self.id, "object": obj, "created": self.created, "model": model},
                          separators=(",", ":"))[:-1]
        self._head = f'data: {head},"choices":[{{"index":0,'
        self._key = '"delta":{"content":' if chat else '"text":'
        self._close = "}" if chat else ""

    def role_chunk(self) -> bytes:
        return (self._head + '"delta":{"role":"assistant","content":""},"logprobs":null,'
                '"finish_reason":null}]}\n\n').encode()

    def token_chunk(self, text: str, finish_reason: str | None = None) -> bytes:
        reason = "null" if finish_reason is None else f'"{finish_reason}"'
        return (f'{self._head}{self._key}{json.dumps(text)}{self._close},"logprobs":null,'
                f'"finish_reason":{reason}}}]}}\n\n').encode()

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        body = {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": [],
                "usage": usage(prompt_tokens, completion_tokens)}
        return f"data: {json.dumps(body)}\n\n".encode()

    def complete(self, text: str, finish_reason: str | None, prompt_tokens: int,
                 completion_tokens: int) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text}
        choice.update(logprobs=None, finish_reason=finish_reason)
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [choice],
                "usage": usage(prompt_tokens, completion_tokens)}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def error_event(message: str, status: int = 500) -> bytes:
    """An error in the middle of a stream, as vLLM sends it: an event with an ``error`` object."""
    return f"data: {json.dumps(error_body(status, message))}\n\n".encode()
