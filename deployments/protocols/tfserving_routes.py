"""TF Serving's REST routes for the classifiers, a mixin of the Ingress (see
protocols/__init__.py). `GET /v1/models/{name}` is OpenAI's route too, which answers a
classifier with `model_status` (protocols/openai_routes.py)."""

# No `from __future__ import annotations`: these methods travel to the replicas by value
# (see ingress.py), where FastAPI could not resolve string annotations against their globals.
from fastapi import APIRouter, Request

from deployments.errors import ApiError
from deployments.predict_input import parse_json_body
from deployments.protocols.tfserving import (
    MAX_DEPTH,
    PredictRequest,
    model_metadata,
    model_status,
    predict_input,
    predict_output,
)
from deployments.schemas import VERSION_PATH, documented_body
from deployments.serving import ServingRoutes
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

    async def _tfserving_predict(self, name: str, version: int | None, request: Request):
        record, model_id = await self._servable_async(name, version, "lstm-classifier")
        try:
            body = parse_json_body(await request.body(), MAX_DEPTH)
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        x, rows = predict_input(body, int(record.params["timesteps"]),
                                int(record.params["features"]), self.limits.max_predict_rows)
        return predict_output(await self._classify(model_id, x), rows)

    # Registry-only routes are plain `def`: FastAPI runs them in its thread pool.
    @router.get("/v1/models/{name}/versions/{version}")
    def tfserving_version_status(self, name: str, version: int = VERSION_PATH) -> dict:
        """`model_version_status` of one version (AVAILABLE when ready)."""
        return model_status(self.registry.get_model(validate_name(name)), version)

    @router.get("/v1/models/{name}/metadata")
    def tfserving_metadata(self, name: str) -> dict:
        """The `serving_default` signature of the production version."""
        return model_metadata(self._servable(name, None, "lstm-classifier")[0])

    @router.get("/v1/models/{name}/versions/{version}/metadata")
    def tfserving_version_metadata(self, name: str, version: int = VERSION_PATH) -> dict:
        return model_metadata(self._servable(name, version, "lstm-classifier")[0])
