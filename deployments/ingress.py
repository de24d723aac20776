"""The HTTP front door (FastAPI under @serve.ingress): the routes documented at /docs.

The ingress owns no model: it validates input, talks to the registry and the job client, and
routes generation/prediction to the Generator/Classifier deployments with the version's
multiplexed model id (`name:version@digest`, never reused), resolving the `production` alias
here so a promotion takes effect at the next request without restarting a replica. The
OpenAI, TF Serving and KServe routes are its base classes (deployments/protocols/), on the same
code path (deployments/serving.py).
"""


import asyncio
import logging
import time
from functools import partial
from pathlib import Path

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from ray import cloudpickle, serve

from deployments.auth import check_api_key, key_required_for_inference
from deployments.errors import ApiError, install_error_handlers
from deployments.guards import BODY_TOO_LARGE, RequestGuards, client_of
from deployments.limits import Limits
from deployments.metrics import JobMetrics
from deployments.origin_guard import SameOriginGuard
from deployments.predict_input import parse_json_body, parse_predict_body
from deployments.protocols import kserve_routes, openai_routes, tfserving_routes
from deployments.protocols.kserve_routes import KServeRoutes
from deployments.protocols.openai_routes import OpenAIRoutes
from deployments.protocols.tfserving_routes import TFServingRoutes
from deployments.schemas import (
    DB_INT_MAX,
    MODEL_CURSOR,
    PAGE_LIMIT,
    VERSION_CURSOR,
    VERSION_PATH,
    GenerateRequest,
    PromoteRequest,
    next_cursor,
    sample_config,
)
from deployments.training_jobs import TrainingJobs
from registry import ACTIVE, PRODUCTION, CachedVersions, Registry, Settings, validate_name
from trainers.families import FAMILIES

logger = logging.getLogger("ray.serve")
PAGE = Path(__file__).with_name("web") / "index.html"
FORM_FIELDS = ("file", "name", "kind")

app = FastAPI(title="rnnserve", version="0.1.0",
              description="Train character-level RNN/LSTM models on Ray and serve them.")
install_error_handlers(app)
# The protocols' routes are methods of the Ingress' base classes (Serve binds those too).
# Serve gives each route method its `self` dependency here, at decoration, then ships the class
# to the replicas with cloudpickle: by value, so the methods keep it (imported by reference,
# a replica's copy would not have it and would ask for `self` as a query parameter).
for protocol in (openai_routes, tfserving_routes, kserve_routes):
    app.include_router(protocol.router)
    cloudpickle.register_pickle_by_value(protocol)


# Above the class: Serve pickles the Ingress class when it is decorated, with the module
# names its methods use as they are at that moment.
def _read_native_predict(raw: bytes, timesteps: int, features: int,
                         max_rows: int) -> tuple:
    """(float32 [N, timesteps, features], whether the body was a batch) of a native predict
    body; any problem with it is a 400."""
    try:
        return parse_predict_body(parse_json_body(raw), timesteps, features, max_rows)
    except ValueError as error:
        raise ApiError(400, str(error)) from None


@serve.deployment
@serve.ingress(app)
class Ingress(OpenAIRoutes, TFServingRoutes, KServeRoutes):
    def __init__(self, generator, classifier, settings: dict, limits: Limits,
                 dashboard_address: str | None, job_server_grace_s: float,
                 job_sync_interval_s: float = 5.0):
        self.settings = Settings.from_env(**settings)
        self.registry = Registry(self.settings)
        self.served_versions = CachedVersions(self.registry.get_version,
                                              self.registry.change_count)
        self.limits = limits
        self.generator = generator
        self.classifier = classifier
        self.jobs = TrainingJobs(self.registry, self.settings, limits, dashboard_address,
                                 job_server_grace_s)
        self.job_metrics = JobMetrics()
        self._sync_task = asyncio.get_event_loop().create_task(self._sync_jobs(job_sync_interval_s))
        logger.info("rnnserve ingress up; writes %s", "need the API key" if self.settings.api_key
                    else "are open to anyone who can reach this port (RNNSERVE_API_KEY unset)")

    def __serve_build_asgi_app__(self):
        """This replica's copy of the app with the guards in front: their limits come from
        the deployment's arguments, so they are added here, after the constructor, to the
        replica's own app rather than to the module's."""
        self.app.add_middleware(RequestGuards, max_upload_bytes=self.limits.max_upload_bytes,
                                limiters=self.limits.rate_limiters(),
                                api_key=self.settings.api_key,
                                max_body_bytes=self.limits.max_body_bytes,
                                min_body_bytes_per_s=self.limits.min_body_bytes_per_s,
                                body_grace_s=self.limits.body_grace_s,
                                max_in_flight=self.limits.max_in_flight_per_client,
                                inference_needs_key=self.limits.inference_needs_key)
        # Added last, so it runs first: a foreign host or origin costs nothing else.
        self.app.add_middleware(SameOriginGuard, allowed_hosts=self.limits.allowed_hosts)
        return self.app

    async def _sync_jobs(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.jobs.sync_statuses)
                self.job_metrics.record(await asyncio.to_thread(self.registry.count_versions))
            except Exception:  # noqa: BLE001 - a failed poll must not end the loop
                logger.exception("job status sync failed")

    def _authorize(self, request: Request) -> None:
        check_api_key(self.settings.api_key, request.headers.get("authorization"))

    # ---- pages and liveness ---------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness, and whether writes (uploads, promote, cancel, delete) and inference need
        the API key."""
        api_key = self.settings.api_key
        return {"status": "ok", "writes_need_key": api_key is not None,
                "inference_needs_key": key_required_for_inference(
                    api_key, self.limits.inference_needs_key)}

    # ---- models ---------------------------------------------------------------------------
    @app.post("/models", status_code=202)
    async def upload(self, request: Request, file: UploadFile = File(...),
                     name: str = Form(...), kind: str = Form("charrnn")) -> JSONResponse:
        """Store the upload, queue a version and submit its training job (hyperparameters as
        extra form fields named like the trainer's flags, e.g. `max_steps`, `lstm_size`)."""
        self._authorize(request)
        if request.scope.get(BODY_TOO_LARGE):
            raise ApiError(413, f"upload larger than {self.limits.max_upload_bytes} bytes")
        validate_name(name)
        family = FAMILIES.get(kind)
        if family is None:
            raise ApiError(400, f"unknown kind {kind!r}", {"kinds": sorted(FAMILIES)})
        form = await request.form()
        raw = {k: v for k, v in form.items() if k not in FORM_FIELDS}
        if any(not isinstance(v, str) for v in raw.values()):
            raise ApiError(400, "only one file may be uploaded, in the field 'file'")
        try:
            params = family.parse_params(raw)
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        data = await file.read(self.limits.max_upload_bytes + 1)
        if len(data) > self.limits.max_upload_bytes:
            raise ApiError(413, f"upload larger than {self.limits.max_upload_bytes} bytes")
        record = await self.jobs.start(family, name, file.filename or "upload", data, params,
                                       client_of(request.scope, self.settings.api_key))
        return JSONResponse({"name": name, "version": record.version, "job_id": record.job_id,
                             "status": record.status, "kind": kind}, status_code=202)

    # Routes that only read or write the registry are plain `def`: FastAPI runs them in its
    # thread pool, so a slow database (or SQLite waiting on a writer's lock) holds a thread,
    # never this replica's event loop and the requests on it.
    @app.get("/models")
    def list_models(self, limit: int = PAGE_LIMIT, cursor: str | None = MODEL_CURSOR) -> dict:
        """Models in name order, `limit` per page; pass `next_cursor` back for the next page
        (null on the last)."""
        models = self.registry.list_models(limit=limit, after=cursor)
        return {"models": models, "next_cursor": next_cursor(models, limit, "name")}

    @app.get("/models/{name}")
    def get_model(self, name: str, limit: int = PAGE_LIMIT,
                  cursor: int | None = VERSION_CURSOR) -> dict:
        """The model's summary (as in GET /models), its aliases, and its versions in number
        order, `limit` per page; pass `next_cursor` back for the next page (null on the
        last)."""
        detail = self.registry.get_model(validate_name(name), limit=limit, after=cursor or 0)
        return {**detail, "next_cursor": next_cursor(detail["versions"], limit, "version")}

    @app.get("/models/{name}/versions/{version}/logs")
    def logs(self, name: str, version: int = VERSION_PATH,
                   offset: int = Query(0, ge=0, le=DB_INT_MAX),
                   limit: int = Query(1000, ge=1, le=10_000)) -> dict:
        record = self.registry.get_version(validate_name(name), version)
        lines = self.registry.read_logs(name, version, offset, limit)
        return {"name": name, "version": version, "status": record.status, "offset": offset,
                "next_offset": offset + len(lines), "lines": lines}

    @app.post("/models/{name}/promote")
    def promote(self, name: str, body: PromoteRequest, request: Request) -> dict:
        self._authorize(request)
        self.registry.set_alias(validate_name(name), PRODUCTION, body.version)
        self.registry.append_logs(name, body.version, [f"promoted to {PRODUCTION} by request"])
        return {"name": name, PRODUCTION: body.version}

    @app.post("/models/{name}/versions/{version}/cancel")
    def cancel(self, name: str, request: Request,
               version: int = VERSION_PATH) -> dict:
        self._authorize(request)
        record = self.registry.get_version(validate_name(name), version)
        if record.status not in ACTIVE:
            raise ApiError(409, f"version {version} is {record.status}, not running")
        if record.job_id:
            try:
                self.jobs.stop(record.job_id)
            except Exception as error:  # noqa: BLE001 - the job may already be gone
                logger.warning("stopping job %s: %s", record.job_id, error)
        self.registry.end_version(name, version, "cancelled", "cancelled by request")
        return {"name": name, "version": version, "status": "cancelled"}

    @app.delete("/models/{name}")
    def delete(self, name: str, request: Request) -> dict:
        self._authorize(request)
        for record in self.registry.list_versions(validate_name(name)):
            if record.status in ACTIVE and record.job_id:
                try:
                    self.jobs.stop(record.job_id)
                except Exception as error:  # noqa: BLE001
                    logger.warning("stopping job %s: %s", record.job_id, error)
        self.registry.delete_model(name)
        return {"name": name, "deleted": True}

    # ---- inference ------------------------------------------------------------------------
    @app.post("/models/{name}/generate")
    async def generate(self, name: str, body: GenerateRequest):
        record, model_id = await self._servable_async(name, body.version, "charrnn")
        sample = sample_config(body)
        self.limits.check_sample(sample)
        started = time.perf_counter()
        if body.stream:
            chunks = await self._stream(model_id, [sample], events=False)
            return StreamingResponse(chunks, media_type="text/plain; charset=utf-8",
                                     headers={"X-Model": name,
                                              "X-Model-Version": str(record.version)})
        [result] = await self._generate(model_id, [sample])
        return {**result, "model": name, "version": record.version, "prime": sample.prime,
                "seconds": round(time.perf_counter() - started, 4)}

    @app.post("/models/{name}/predict")
    async def predict(self, name: str, request: Request,
                      version: int | None = Query(None, ge=1, le=DB_INT_MAX)) -> dict:
        """Body `{"data": ...}`: one example (T*F numbers, or T lists of F) or a list of them;
        a bare JSON array of T*F numbers works too. Answers probabilities and argmax labels."""
        record, probabilities, batched = await self._classify_request(
            name, version, partial(_read_native_predict, await request.body()))
        labels = [int(max(range(len(p)), key=p.__getitem__)) for p in probabilities]
        if batched:
            return {"y": probabilities, "label": labels, "model": name, "version": record.version}
        return {"y": probabilities[0], "label": labels[0], "model": name,
                "version": record.version}
