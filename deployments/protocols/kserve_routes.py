"""KServe / Open Inference Protocol v2 routes for the classifiers, a mixin of the Ingress (see
protocols/__init__.py). Without a version, a model is its production version."""

# No `from __future__ import annotations`: these methods travel to the replicas by value
# (see ingress.py), where FastAPI could not resolve string annotations against their globals.
from functools import partial

from fastapi import APIRouter, Request, Response

from deployments.protocols.kserve import (
    HEADER_LENGTH,
    InferRequest,
    encode,
    infer_output,
    model_metadata,
    read_infer,
)
from deployments.schemas import PAGE_LIMIT, VERSION_PATH, documented_body
from deployments.serving import CLASSIFIER, ServingRoutes

router = APIRouter(tags=["KServe v2 (Open Inference Protocol)"])
BODY = documented_body(InferRequest)  # read raw by the route, documented at /docs


class KServeRoutes(ServingRoutes):
    @router.get("/v2")
    async def kserve_server(self) -> dict:
        return {"name": "rnnserve", "version": "0.1.0", "extensions": ["binary_tensor_data"]}

    @router.get("/v2/health/live")
    async def kserve_live(self) -> dict:
        return {"live": True}

    @router.get("/v2/health/ready")
    async def kserve_ready(self) -> dict:
        return {"ready": True}

    # Registry-only routes are plain `def`: FastAPI runs them in its thread pool.
    @router.get("/v2/models/{name}")
    def kserve_model(self, name: str, limit: int = PAGE_LIMIT) -> dict:
        """Inputs and outputs (name, datatype, shape) of the production version; `versions`:
        the `limit` newest ready ones."""
        return self._kserve_metadata(name, None, limit)

    @router.get("/v2/models/{name}/versions/{version}")
    def kserve_model_version(self, name: str, version: int = VERSION_PATH,
                             limit: int = PAGE_LIMIT) -> dict:
        return self._kserve_metadata(name, version, limit)

    def _kserve_metadata(self, name: str, version: int | None, limit: int) -> dict:
        record, _ = self._servable(name, version, CLASSIFIER)
        ready = sorted(r.version for r, _ in self.registry.ready_versions(limit, name=name))
        return model_metadata(record, ready)

    @router.get("/v2/models/{name}/ready")
    def kserve_model_ready(self, name: str) -> dict:
        """200 when the production version can answer; an error (404, 409) otherwise."""
        self._servable(name, None, CLASSIFIER)
        return {"name": name, "ready": True}

    @router.get("/v2/models/{name}/versions/{version}/ready")
    def kserve_version_ready(self, name: str, version: int = VERSION_PATH) -> dict:
        self._servable(name, version, CLASSIFIER)
        return {"name": name, "ready": True}

    @router.post("/v2/models/{name}/infer", openapi_extra=BODY)
    async def kserve_infer(self, name: str, request: Request) -> Response:
        """`inputs: [{name: x_input, shape: [N, T, F], datatype: FP32, data}]` answers
        `outputs: [{name: y_output, shape: [N, classes], datatype: FP32, data}]`; binary
        tensors (Inference-Header-Content-Length) in and out as the Triton client sends them."""
        return await self._kserve_infer(name, None, request)

    @router.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=BODY)
    async def kserve_infer_version(self, name: str, request: Request,
                                   version: int = VERSION_PATH) -> Response:
        return await self._kserve_infer(name, version, request)

    async def _kserve_infer(self, name: str, version: int | None, request: Request):
        read_batch = partial(read_infer, await request.body(), request.headers.get(HEADER_LENGTH))
        record, probabilities, body = await self._classify_request(name, version, read_batch)
        content, headers = encode(*infer_output(body, record, probabilities))
        return Response(content, headers=headers)
