"""The ecosystem's protocols, spoken next to the native API by the same Ingress:

- `openai_routes`: OpenAI completions and models for the char-RNN models (`/v1/completions`,
  `/v1/models`), translated in `openai`;
- `tfserving_routes`: TF Serving's REST API for the classifiers (`/v1/models/{name}:predict`),
  translated in `tfserving`;
- `kserve_routes`: KServe's Open Inference Protocol v2 for the classifiers (`/v2/...`),
  translated in `kserve`.

Each `*_routes` module is a mixin of the Ingress with its routes on its own APIRouter (Serve
finds the routes of the Ingress' base classes); underneath they share the native routes' code
path (deployments/serving.py): the same version resolution, limits, engine and metrics.
"""
