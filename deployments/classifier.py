"""Classifier deployment: multiplexed LSTM classifiers with request-level batching.

Every prediction costs the same, so `@serve.batch` (which Serve splits per model id) is the
right batching here, unlike autoregressive generation.
"""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.model_cache import LoadedModels
from models.artifacts import load_classifier
from models.devices import enable_gpu_memory_growth
from registry import Registry, Settings


class LoadedClassifier:
    def __init__(self, model, config):
        import tensorflow as tf

        self.config = config
        self._predict = tf.function(lambda x: tf.nn.softmax(model(x, training=False), axis=-1),
                                    reduce_retracing=True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._predict(x).numpy()


@serve.deployment
class Classifier:
    def __init__(self, settings: dict, max_models_per_replica: int, max_batch_size: int,
                 batch_wait_timeout_s: float):
        enable_gpu_memory_growth()
        self.registry = Registry(Settings.from_env(**settings))

        async def build(model_id: str, directory: str) -> LoadedClassifier:
            return LoadedClassifier(*await asyncio.to_thread(load_classifier, directory))

        self.models = LoadedModels(self.registry, build, release=lambda model: None)
        self._forget_task = asyncio.get_event_loop().create_task(self.models.forget_deleted())

        async def load(model_id: str):
            return await self.models.load(model_id)

        self.get_model = serve.multiplexed(max_num_models_per_replica=max_models_per_replica)(load)
        self.predict_batch.set_max_batch_size(max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch  # sized in __init__, from the app's arguments
    async def predict_batch(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        model_id = serve.get_multiplexed_model_id()
        await self.get_model(model_id)
        model = self.models.get(model_id)
        sizes = [len(b) for b in batches]
        probabilities = await asyncio.to_thread(model, np.concatenate(batches))
        return np.split(probabilities, np.cumsum(sizes)[:-1])

    async def predict(self, x: np.ndarray) -> list[list[float]]:
        return (await self.predict_batch(x)).tolist()
