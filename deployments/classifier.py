"""Classifier deployment: multiplexed LSTM classifiers with request-level batching.

Every prediction costs the same, so `@serve.batch` (which Serve splits per model id) is the
right batching here, unlike autoregressive generation.
"""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.generator import enable_gpu_memory_growth
from models.artifacts import load_classifier
from registry import Registry, Settings, parse_model_ref


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
    def __init__(self, settings: dict | None = None, max_models_per_replica: int = 4,
                 max_batch_size: int = 64, batch_wait_timeout_s: float = 0.005):
        enable_gpu_memory_growth()
        self.registry = Registry(Settings.from_env(**(settings or {})))

        async def load(model_id: str) -> LoadedClassifier:
            name, version = parse_model_ref(model_id)
            _, directory = await asyncio.to_thread(self.registry.fetch_version, name, version)
            return LoadedClassifier(*await asyncio.to_thread(load_classifier, directory))

        self.get_model = serve.multiplexed(max_num_models_per_replica=max_models_per_replica)(load)
        self.predict_batch.set_max_batch_size(max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def predict_batch(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        model = await self.get_model(serve.get_multiplexed_model_id())
        sizes = [len(b) for b in batches]
        probabilities = await asyncio.to_thread(model, np.concatenate(batches))
        return np.split(probabilities, np.cumsum(sizes)[:-1])

    async def predict(self, x: np.ndarray) -> list[list[float]]:
        return (await self.predict_batch(x)).tolist()
