"""OpenAI's completions and models routes, a mixin of the Ingress (see protocols/__init__.py).

Generation takes the native route's path underneath (deployments/serving.py): the version
resolved in a thread, the sample limits, the Generator's engine, the lost-replica retry.
`GET /v1/models/{model}` is shared with TF Serving, whose clients ask it for a classifier's
status: one route answers by the model's kind.
"""

# No `from __future__ import annotations`: these methods travel to the replicas by value
# (see ingress.py), where FastAPI could not resolve string annotations against their globals.
import logging

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from deployments.protocols.openai import (
    REQUEST_FIELDS,
    Completion,
    CompletionRequest,
    CompletionStream,
    model_card,
    models_list,
    parse_model,
    samples_of,
)
from deployments.protocols.tfserving import model_status, status_page
from deployments.schemas import PAGE_LIMIT
from deployments.serving import ServingRoutes
from registry import validate_name

logger = logging.getLogger("ray.serve")
router = APIRouter(tags=["OpenAI completions"])


class OpenAIRoutes(ServingRoutes):
    @router.post("/v1/completions")
    async def completions(self, body: CompletionRequest):
        """Complete each prompt `n` times (all sampled together by the model's engine);
        `stream: true` answers Server-Sent Events ending with `data: [DONE]`."""
        name, version = parse_model(body.model)
        record, model_id = await self._servable_async(name, version, "charrnn")
        samples = samples_of(body)
        self._check_samples(samples, REQUEST_FIELDS)
        completion = Completion(body, f"{name}:{record.version}")
        if body.stream:
            events = await self._stream(model_id, samples)
            return StreamingResponse(_server_sent(CompletionStream(completion), events),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return completion.whole(await self._generate(model_id, samples))

    # Registry-only routes are plain `def`: FastAPI runs them in its thread pool.
    @router.get("/v1/models")
    def openai_models(self, limit: int = PAGE_LIMIT) -> dict:
        """The newest `limit` ready char-RNN versions as `name:version`, and their models as
        `name` (the production version); `has_more` when older ones are left out."""
        page = self.registry.ready_versions(limit + 1, kind="charrnn")
        return models_list(page[:limit], has_more=len(page) > limit)

    @router.get("/v1/models/{model}")
    def model(self, model: str, limit: int = PAGE_LIMIT) -> dict:
        """A char-RNN model in OpenAI's shape; a classifier's versions in TF Serving's
        (`model_version_status`: the one named, or the `limit` newest)."""
        name, version = parse_model(model)
        detail = status_page(self.registry, validate_name(name), version, limit)
        if detail["kind"] != "charrnn":
            return model_status(detail, version)
        record, _ = self._servable(name, version, "charrnn")
        return model_card(model, record.created_at)


async def _server_sent(stream: CompletionStream, events):
    try:
        async for event in events:
            yield stream.on_event(event)
    except Exception:  # noqa: BLE001 - headers are gone: the error travels as an event
        logger.exception("a /v1/completions stream failed mid-way")
        yield stream.error(500, "the generation failed mid-way; retry")
        return
    yield stream.end()
