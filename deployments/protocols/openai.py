"""OpenAI completions for the char-RNN models: the request schema, its translation into the
engine's SampleConfig, and the answers (whole, streamed as Server-Sent Events, errors) in the
shapes the official `openai` client parses. A token is a character here: `max_tokens` and the
usage counts are characters.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.errors import ApiError, first_problem, register_error_shape
from models.config import MAX_STOP_CHARS, MAX_STOP_STRINGS, SampleConfig

# Per request: prompts, samples of each, and samples in all (each is a sequence in a batch).
MAX_PROMPTS, MAX_N, MAX_SAMPLES = 16, 16, 16
# The request fields a SampleConfig field comes from (samples_of), for errors to name them.
REQUEST_FIELDS = {"prime": "prompt", "max_length": "max_tokens"}


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="a last chunk with the usage of the request")
    include_obfuscation: bool = Field(False, description="accepted, ignored")


class CompletionRequest(BaseModel):
    """`POST /v1/completions`; fields as OpenAI's, plus `top_k` (other servers take it too)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, max_length=80,
                       description="a model name (its production version) or `name:version`")
    prompt: str | list[str] = Field(
        "", description="the text to continue (the prime); a list answers each in turn")
    max_tokens: int = Field(16, ge=1, le=10_000, description="characters to generate")
    temperature: float = Field(1.0, ge=0.0, le=10.0, description="0: always the likeliest")
    top_p: float = Field(1.0, ge=0.0, le=1.0)
    top_k: int = Field(0, ge=-1, le=100_000, description="0 or -1: all characters")
    n: int = Field(1, ge=1, le=MAX_N, description="samples per prompt (seeds seed, seed+1, ...)")
    seed: int | None = Field(None, ge=0, le=2**63 - 1 - MAX_N)
    stop: str | list[str] | None = Field(None, description=f"up to {MAX_STOP_STRINGS} strings; "
                                         "the text ends before the first one")
    echo: bool = Field(False, description="answer the prompt in front of the completion")
    logprobs: int | None = Field(None, ge=0, le=20, description="log-probabilities of each "
                                 "character and of this many likeliest alternatives")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256, description="accepted, ignored")
    # OpenAI fields this server cannot honour: accepted at their neutral value only.
    best_of: int | None = Field(None, ge=1, le=1)
    frequency_penalty: float = Field(0.0, ge=0.0, le=0.0)
    presence_penalty: float = Field(0.0, ge=0.0, le=0.0)
    suffix: None = None

    @model_validator(mode="after")
    def _bounded_lists(self):
        if isinstance(self.prompt, list) and not 1 <= len(self.prompt) <= MAX_PROMPTS:
            raise ValueError(f"prompt: 1 to {MAX_PROMPTS} strings")
        if len(self.prompts) * self.n > MAX_SAMPLES:
            raise ValueError(f"n times the number of prompts: at most {MAX_SAMPLES}")
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) > MAX_STOP_STRINGS or any(not 0 < len(s) <= MAX_STOP_CHARS for s in stops):
            raise ValueError(f"stop: at most {MAX_STOP_STRINGS} strings of 1 to "
                             f"{MAX_STOP_CHARS} characters")
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt


def parse_model(model: str) -> tuple[str, int | None]:
    """`name` or `name:version` (model names never hold a colon)."""
    name, colon, version = model.rpartition(":")
    if not colon:
        return model, None
    if not version.isdigit() or not 1 <= int(version) <= 2**31 - 1:
        raise ApiError(404, f"model {model!r} does not exist (use NAME or NAME:VERSION)")
    return name, int(version)


def samples_of(request: CompletionRequest) -> list[SampleConfig]:
    """One SampleConfig per choice, in choice order: each prompt `n` times, seeds counting up
    from `seed`. Temperature 0 is greedy decoding (the engine's top_k=1)."""
    greedy = request.temperature == 0
    stops = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    return [SampleConfig(prime=prompt, max_length=request.max_tokens,
                         temperature=1.0 if greedy else request.temperature,
                         top_k=1 if greedy else max(request.top_k, 0), top_p=request.top_p,
                         seed=None if request.seed is None else request.seed + i,
                         stop=stops, logprobs=request.logprobs)
            for prompt in request.prompts for i in range(request.n)]


# ---- answers -------------------------------------------------------------------------------

def finish_reason(engine_reason: str | None) -> str | None:
    """OpenAI knows "stop" and "length": a generation cut by its deadline ran out of budget."""
    return None if engine_reason is None else "stop" if engine_reason == "stop" else "length"


def logprobs_block(text: str, entries: list | None, offset: int, echoed: str = "",
                   echoed_entries: list | None = None) -> dict | None:
    """OpenAI's logprobs of a choice's characters: `entries` are the engine's (logprob of the
    chosen character, its alternatives). Echoed prompt characters have theirs in
    `echoed_entries` (None for the first, which nothing predicts: null, as OpenAI answers);
    without them, null."""
    if entries is None:
        return None
    every = [*(echoed_entries or [None] * len(echoed)), *entries]
    tokens = list(echoed) + list(text)
    chosen = [None if entry is None else entry[0] for entry in every]
    top = [None if entry is None else dict(entry[1]) for entry in every]
    return {"tokens": tokens, "token_logprobs": chosen, "top_logprobs": top,
            "text_offset": list(range(offset, offset + len(tokens)))}


class Completion:
    """The answer's envelope: one id, creation time and model name for every chunk."""

    def __init__(self, request: CompletionRequest, model: str):
        self.request, self.model = request, model
        self.id, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        self.prompt_chars = sum(map(len, request.prompts))

    def prompt_of(self, index: int) -> str:
        return self.request.prompts[index // self.request.n]

    def body(self, choices: list[dict], usage: dict | None = None) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model, "choices": choices, "usage": usage}

    def usage(self, completion_chars: int) -> dict:
        return {"prompt_tokens": self.prompt_chars, "completion_tokens": completion_chars,
                "total_tokens": self.prompt_chars + completion_chars}

    def whole(self, results: list[dict]) -> dict:
        """The non-streamed answer from the Generator's results, one per choice."""
        choices = []
        for index, result in enumerate(results):
            echoed = self.prompt_of(index) if self.request.echo else ""
            choices.append({"index": index, "text": echoed + result["generated"],
                            "logprobs": logprobs_block(
                                result["generated"], result.get("logprobs"), 0, echoed,
                                result.get("prompt_logprobs") if echoed else None),
                            "finish_reason": finish_reason(result["finish_reason"])})
        return self.body(choices, self.usage(sum(r["generated_chars"] for r in results)))


class CompletionStream:
    """Server-Sent Events of a streamed completion, from the Generator's events: a chunk per
    delivery with the new text, `finish_reason` on each choice's last, the usage chunk if
    asked, then `[DONE]`; or an error event when the stream fails mid-way."""

    def __init__(self, completion: Completion):
        self.completion = completion
        self.sent: dict[int, int] = {}  # characters sent per choice (logprobs' text_offset)
        self.generated = 0

    @staticmethod
    def event(data) -> str:
        return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"

    def _chunk(self, index: int, text: str, logprobs, reason: str | None) -> str:
        return self.event(self.completion.body(
            [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}]))

    def on_event(self, event: dict) -> str:
        index = event["index"]
        out = ""
        if index not in self.sent:  # this choice's first chunk: its echoed prompt first
            self.sent[index] = 0
            if self.completion.request.echo:
                prompt = self.completion.prompt_of(index)
                empty = [] if self.completion.request.logprobs is not None else None
                out += self._chunk(index, prompt, logprobs_block(
                    "", empty, 0, prompt, event.get("prompt_logprobs")), None)
                self.sent[index] = len(prompt)
        if "finish_reason" in event:
            return out + self._chunk(index, "", None, finish_reason(event["finish_reason"]))
        text = event["text"]
        logprobs = logprobs_block(text, event["logprobs"], self.sent[index])
        self.sent[index] += len(text)
        self.generated += len(text)
        return out + self._chunk(index, text, logprobs, None)

    def end(self) -> str:
        options = self.completion.request.stream_options
        usage = (self.event(self.completion.body([], self.completion.usage(self.generated)))
                 if options and options.include_usage else "")
        return usage + "data: [DONE]\n\n"

    def error(self, status: int, message: str) -> str:
        return self.event(error_shape(status, message, None)[1])


# ---- errors --------------------------------------------------------------------------------

_OWNED = re.compile(r"/v1/(completions|models(/[^/:]+(:\d+)?)?)/?")
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 408: "timeout_error", 409: "invalid_request_error",
          413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_exceeded", 503: "server_overloaded"}


def error_shape(status: int, message: str, detail) -> tuple[int, dict]:
    """`{"error": {message, type, param, code}}`. A body that does not match the schema is a
    400 as OpenAI answers it (the native API's 422), naming the first field at fault; an
    error whose detail names a `field` (a limit's) has it as `param`."""
    param = detail.get("field") if isinstance(detail, dict) else None
    if status == 422:
        param, problem = first_problem(detail)
        message = (problem or message) + (f" ({param})" if param else "")
        status = 400
    code = "model_not_found" if status == 404 else None
    return status, {"error": {"message": message, "type": _TYPES.get(status, "server_error"),
                              "param": param, "code": code}}


def owns(path: str) -> bool:
    """/v1/completions, /v1/models and /v1/models/{name[:version]} (TF Serving's /v1/models
    routes have a `:verb` or a `/versions/` part)."""
    return _OWNED.fullmatch(path) is not None


register_error_shape(owns, error_shape)


def models_list(page: list, has_more: bool) -> dict:
    """The ready char-RNN versions of `page` (the registry's ready_versions: newest first, each
    with its model's production version) in OpenAI's shape: `name:version` for each, and `name`
    (served as a request without a version is: production, else the latest ready version; its
    `created` the latest ready one's when production is older than the page) for each model.
    `has_more`: there are older ready versions than the page (OpenAI's list has no paging)."""
    by_name: dict[str, tuple[int | None, list]] = {}
    for record, production in page:
        by_name.setdefault(record.name, (production, []))[1].append(record)
    data = []
    for name, (production, newest_first) in by_name.items():
        records = newest_first[::-1]
        served = next((r for r in records if r.version == production), records[-1])
        data.append(model_card(name, served.created_at))
        data += [model_card(f"{name}:{r.version}", r.created_at) for r in records]
    return {"object": "list", "data": data, "has_more": has_more}


def model_card(model_id: str, created: datetime) -> dict:
    if created.tzinfo is None:  # SQLite hands back naive datetimes, stored as UTC
        created = created.replace(tzinfo=UTC)
    return {"id": model_id, "object": "model", "created": int(created.timestamp()),
            "owned_by": "rnnserve"}
