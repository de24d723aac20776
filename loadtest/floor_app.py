"""Ray Serve's own floor for rnnserve's HTTP path: the same topology with no model behind it.

Serve's proxy -> a FastAPI ingress deployment -> a second deployment called through a handle,
answering `POST /models/{name}/generate` with as many characters as asked, streamed in a set
number of chunks. Whatever it costs per request is what any app shaped like rnnserve pays Ray
Serve; `loadtest/run_load.py` loads it in the same run as rnnserve (route prefix /floor), and
rnnserve's requests/s divided by the floor's says how much of the path is rnnserve's own.
"""

# No `from __future__ import annotations`: FastAPI must see the body's type itself, not a
# string to resolve, to read it as the JSON body.
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from ray import serve

TEXT = "To be, or not to be, that is the question:\n"
MODEL = "floor"  # the one model name it lists (locust asks GET /models first)

app = FastAPI(title="Serve floor")


class FloorRequest(BaseModel):
    prime: str = ""
    max_length: int = 200
    temperature: float = 1.0
    stream: bool = False


def text_of(length: int) -> str:
    return (TEXT * (length // len(TEXT) + 1))[:length]


@serve.deployment
class FloorGenerator:
    def __init__(self, chunks: int):
        self.chunks = max(1, chunks)

    async def generate(self, length: int) -> dict:
        text = text_of(length)
        return {"text": text, "generated": text, "generated_chars": length}

    async def stream(self, length: int):
        text, step = text_of(length), max(1, -(-length // self.chunks))
        for start in range(0, length, step):
            yield text[start:start + step]


@serve.deployment
@serve.ingress(app)
class FloorIngress:
    def __init__(self, generator):
        self.generator = generator

    @app.get("/models")
    async def list_models(self) -> dict:
        return {"models": [{"name": MODEL, "kind": "charrnn", "production_version": 1}],
                "next_cursor": None}

    @app.post("/models/{name}/generate")
    async def generate(self, name: str, body: FloorRequest):
        if body.stream:
            chunks = self.generator.options(stream=True).stream.remote(body.max_length)
            return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")
        answer = await self.generator.generate.remote(body.max_length)
        return {**answer, "model": name, "prime": body.prime}


def build(chunks: int, ingress_options: dict, generator_options: dict):
    """The floor app streaming `chunks` chunks per request, each deployment with the options
    rnnserve's counterpart has in serve_config.yaml (replicas, autoscaling, CPUs)."""
    generator = FloorGenerator.options(**generator_options).bind(chunks)
    return FloorIngress.options(**ingress_options).bind(generator)
