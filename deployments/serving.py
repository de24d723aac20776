"""What every inference route shares, the native API's and each protocol's: resolving the
version to serve, calling the Generator/Classifier, the lost-replica retry.

`ServingRoutes` is the base of the Ingress and of its protocol mixins (deployments/protocols/):
they all reach the registry, the limits and the deployment handles the Ingress was built
with through it, so a protocol is a translation, never a second copy of this logic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments.errors import ApiError, Overloaded
from deployments.limits import Limits
from models.config import SampleConfig
from registry import CachedVersions, Registry, VersionRecord, validate_name

logger = logging.getLogger("ray.serve")
CLASSIFIER = "lstm-classifier"  # the kind of model the classification routes serve


async def retrying_lost_replicas(call, attempts: int = 3):
    """`await call()`, again on another replica when the one it reached died before answering
    (its node was lost): nothing was returned yet and sampling is seeded, so a retry is safe."""
    for attempt in range(attempts):
        try:
            return await call()
        except Overloaded as error:
            raise ApiError(503, str(error), headers={"Retry-After": "1"}) from None
        except (ActorDiedError, ActorUnavailableError) as error:
            logger.warning("inference: replica lost (%s), attempt %d", type(error).__name__,
                           attempt + 1)
            if attempt == attempts - 1:
                raise ApiError(503, "the model's replica was lost; retry",
                               headers={"Retry-After": "1"}) from None
            await asyncio.sleep(0.5 * (attempt + 1))


async def prepend(first, rest):
    """The stream `rest` with the item already read from it (`first`) in front."""
    if first is not None:
        yield first
    async for item in rest:
        yield item


class ServingRoutes:
    """Set by Ingress.__init__: the registry, the limits, and the Generator/Classifier handles."""

    registry: Registry
    # The registry's answers on the inference path, reused while its change counter stands
    # still: one one-row read per request instead of a version lookup's several queries.
    served_versions: CachedVersions
    limits: Limits
    generator: DeploymentHandle  # of the Generator deployment
    classifier: DeploymentHandle  # of the Classifier deployment

    def _servable(self, name: str, version: int | None, kind: str) -> tuple[VersionRecord, str]:
        """The ready version to serve (None: production) and its model id. Blocking: call it
        in a thread from async routes."""
        record = self.served_versions.get_version(validate_name(name), version)
        if record.kind != kind:
            raise ApiError(400, f"model {name} is a {record.kind} model, not {kind}")
        if record.status != "ready":
            raise ApiError(409, f"version {record.version} of {name} is {record.status}, "
                                "not ready")
        return record, record.model_id

    async def _servable_async(self, name: str, version: int | None, kind: str):
        return await asyncio.to_thread(self._servable, name, version, kind)

    # ---- char-RNN generation -------------------------------------------------------------
    def _check_samples(self, samples: list[SampleConfig],
                       names: Mapping[str, str] | None = None) -> None:
        """The native route's limits; `names`: the request's own names of the fields."""
        for sample in samples:
            self.limits.check_sample(sample, names)

    async def _generate(self, model_id: str, samples: list[SampleConfig]) -> list[dict]:
        """Every sample generated together on one replica (they share batched steps)."""
        handle = self.generator.options(multiplexed_model_id=model_id)
        return await retrying_lost_replicas(lambda: handle.generate_many.remote(samples))

    async def _stream(self, model_id: str, samples: list[SampleConfig], events: bool = True):
        """The Generator's stream (events of every sample, or the text of one), started:
        errors before its first item (queue full, replica lost) become a status code or a
        retry here; once something has gone out, a lost replica ends the stream with an error.
        """
        handle = self.generator.options(multiplexed_model_id=model_id, stream=True)

        async def start():
            items = (handle.stream_events.remote(samples) if events
                     else handle.stream.remote(samples[0]))
            try:
                return items, await items.__anext__()
            except StopAsyncIteration:
                return items, None

        items, first = await retrying_lost_replicas(start)
        return prepend(first, items)

    # ---- classification ------------------------------------------------------------------
    async def _classify_request(self, name: str, version: int | None, read_batch):
        """(the classifier version served, its class probabilities, what `read_batch` returned
        beside the batch): `read_batch(timesteps, features, max_rows)` reads the request's
        examples for the version's input shape (float32 [N, timesteps, features]), or raises
        ApiError(400). The version is resolved first, so an unknown model is a 404 whatever
        the body."""
        record, model_id = await self._servable_async(name, version, CLASSIFIER)
        x, request_info = read_batch(int(record.params["timesteps"]),
                                     int(record.params["features"]),
                                     self.limits.max_predict_rows)
        return record, await self._classify(model_id, x), request_info

    async def _classify(self, model_id: str, x) -> list[list[float]]:
        """Class probabilities for a batch of examples [N, timesteps, features]."""
        handle = self.classifier.options(multiplexed_model_id=model_id)
        return await retrying_lost_replicas(lambda: handle.predict.remote(x))
