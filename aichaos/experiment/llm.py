"""The experiment format's LLM requests: a request's ``llm:`` block, and the load's goodput limits.

A request with an ``llm`` block is sent to an OpenAI-compatible endpoint (``/v1/chat/completions``
or ``/v1/completions``: its path and method follow from ``api`` unless given) and measured token
by token (``aichaos.load.openai``)::

    requests:
      - name: chat
        llm:
          model: tiny
          prompt: "{{ words(lognormal(200, 0.5)) }}"   # or messages: [...], or prompts: prompts.jsonl
          max_tokens: "{{ randint(32, 256) }}"
          temperature: 0
          api_key_env: OPENAI_API_KEY                   # read from the environment, never written down
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from aichaos.experiment.types import Strict

MAX_PROMPTS_BYTES = 16 * 1024 * 1024  # a prompts file travels to every load worker in the load spec


def _check(value: Any) -> Any:
    from aichaos.load.templates import check_templates

    check_templates(value)
    return value


class Message(Strict):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str = Field(description="may hold {{ template }} calls")


class LlmRequest(Strict):
    """One kind of request to an OpenAI-compatible server."""

    api: Literal["chat", "completions"] = Field("chat", description="chat: /v1/chat/completions (messages); "
                                                                     "completions: /v1/completions (prompt)")
    model: str = Field(min_length=1, max_length=500, description="the model name the server serves")
    stream: bool = Field(True, description="stream the answer (server-sent events) and time every token")
    usage: bool = Field(True, description="ask for usage in the last chunk (stream_options.include_usage); "
                                          "without it tokens are counted from the chunks")
    prompt: str | None = Field(None, description='the prompt (a user message for chat), e.g. '
                                                 '"{{ words(lognormal(200, 0.5)) }}"')
    messages: list[Message] | None = Field(None, min_length=1, description="chat messages (api: chat)")
    prompts: str | None = Field(None, description="a file of prompts, relative to this file: one per line, or "
                                                  "JSON Lines of strings, message lists or {prompt|messages}; "
                                                  "each request takes one at random")
    max_tokens: int | str = Field(128, description="an integer, or a template such as '{{ randint(32, 256) }}'")
    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="more body fields (templates allowed), "
                                                                     "e.g. {top_p: 0.9, ignore_eos: true}")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="environment variable holding the API key, sent as "
                                                "'Authorization: Bearer'; the key is never written down")

    @field_validator("prompt", "max_tokens", "extra")
    @classmethod
    def _templates_parse(cls, value: Any) -> Any:
        return _check(value)

    @field_validator("messages")
    @classmethod
    def _message_templates(cls, value: list[Message] | None) -> list[Message] | None:
        for message in value or ():
            _check(message.content)
        return value

    @field_validator("max_tokens")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 1_000_000:
            raise ValueError("max_tokens must be from 1 to 1000000")
        return value

    @model_validator(mode="after")
    def _one_prompt(self) -> LlmRequest:
        given = [k for k in ("prompt", "messages", "prompts") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of prompt, messages and prompts" +
                             (f" (got {', '.join(given)})" if given else ""))
        if self.messages is not None and self.api != "chat":
            raise ValueError("messages are for api: chat; give prompt for api: completions")
        reserved = {"model", "stream", "stream_options", "messages", "prompt", "max_tokens"} & set(self.extra)
        if reserved:
            raise ValueError(f"extra must not set {', '.join(sorted(reserved))}: aichaos sets them")
        return self

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.api == "chat" else "/v1/completions"


class Goodput(Strict):
    """Per-request limits, as vLLM's ``--goodput`` takes them: a successful request that meets every
    limit given counts towards ``goodput`` (requests per second). Without limits every successful
    LLM request counts."""

    ttft_ms: float | None = Field(None, gt=0, description="time to first token at most this")
    tpot_ms: float | None = Field(None, gt=0, description="time per output token at most this")
    e2el_ms: float | None = Field(None, gt=0, description="whole request at most this")
    max_gap_ms: float | None = Field(None, gt=0, description="no gap between tokens longer than this")
