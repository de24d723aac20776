"""TF Serving's REST routes for the classifiers, a mixin of the Ingress (see
protocols/__init__.py). A version is named by number (`/versions/{version}`), by label
(`/labels/{label}`: an alias of the registry, such as `production`) or not at all (the
production version). `GET /v1/models/{name}` is OpenAI's route too, which answers a classifier
with `model_status` (protocols/openai_routes.py)."""

# No `from __future__ import annotations`: these methods travel to the replicas by value
# (see ingress.py), where FastAPI could not resolve string annotations against their globals.
import asyncio
from functools import partial

from fastapi import APIRouter, Request

from deployments.protocols.tfserving import (
    PredictRequest,
    model_metadata,
    model_status,
    predict_output,
    read_predict,
    status_page,
    unknown_label,
)
from deployments.schemas import LABEL_PATH, VERSION_PATH, documented_body
from deployments.serving import CLASSIFIER, ServingRoutes
from registry import validate_name

router = APIRouter(tags=["TF Serving REST"])
BODY = documented_body(PredictRequest)  # read raw by the route, documented at /docs


class TFServingRoutes(ServingRoutes):
    @router.post("/v1/models/{name}:predict", openapi_extra=BODY)
    async def tfserving_predict(self, name: str, request: Request) -> dict:
        """`{"instances": [...]}` answers `{"predictions": [...]}`; `{"inputs": ...}` answers
        `{"outputs": ...}` (probabilities per class). Production version."""
        return await self._tfserving_predict(name, None, request)

    @router.post("/v1/models/{name}/versions/{version}:predict", openapi_extra=BODY)
    async def tfserving_predict_version(self, name: str, request: Request,
                                        version: int = VERSION_PATH) -> dict:
        return await self._tfserving_predict(name, version, request)

    @router.post("/v1/models/{name}/labels/{label}:predict", openapi_extra=BODY)
    async def tfserving_predict_label(self, name: str, request: Request,
                                      label: str = LABEL_PATH) -> dict:
        version = await asyncio.to_thread(self._labelled_version, name, label)
        return await self._tfserving_predict(name, version, request)

    async def _tfserving_predict(self, name: str, version: int | None, request: Request):
        _, probabilities, rows = await self._classify_request(
            name, version, partial(read_predict, await request.body()))
        return predict_output(probabilities, rows)

    def _labelled_version(self, name: str, label: str) -> int:
        """The version `label` (a registry alias) points at; 404 for a label it does not
        have. Blocking: call it in a thread from async routes."""
        version = self.registry.get_alias(validate_name(name), label)
        if version is None:
            raise unknown_label(label)
        return version

    # Registry-only routes are plain `def`: FastAPI runs them in its thread pool.
    @router.get("/v1/models/{name}/versions/{version}")
    def tfserving_version_status(self, name: str, version: int = VERSION_PATH) -> dict:
        """`model_version_status` of one version (AVAILABLE when ready)."""
        return model_status(status_page(self.registry, validate_name(name), version, 1), version)

    @router.get("/v1/models/{name}/labels/{label}")
    def tfserving_label_status(self, name: str, label: str = LABEL_PATH) -> dict:
        """`model_version_status` of the version a label points at."""
        return self.tfserving_version_status(name, self._labelled_version(name, label))

    @router.get("/v1/models/{name}/metadata")
    def tfserving_metadata(self, name: str) -> dict:
        """The `serving_default` signature of the production version."""
        return model_metadata(self._servable(name, None, CLASSIFIER)[0])

    @router.get("/v1/models/{name}/versions/{version}/metadata")
    def tfserving_version_metadata(self, name: str, version: int = VERSION_PATH) -> dict:
        return model_metadata(self._servable(name, version, CLASSIFIER)[0])

    @router.get("/v1/models/{name}/labels/{label}/metadata")
    def tfserving_label_metadata(self, name: str, label: str = LABEL_PATH) -> dict:
        return self.tfserving_version_metadata(name, self._labelled_version(name, label))
