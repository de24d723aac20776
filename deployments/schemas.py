"""HTTP request bodies, generated from the config dataclasses so each parameter is defined once."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, create_model

from deployments.errors import ApiError
from models.config import SampleConfig, field_types
from registry.names import NAME_CHARS

# The registry's integer columns (version numbers, log line positions) are 32-bit on every
# backend: a larger number could never match a row, and some drivers fail on it.
DB_INT_MAX = 2**31 - 1
# A version number in a route's path: 1 up to what the registry's column holds.
VERSION_PATH = Path(..., ge=1, le=DB_INT_MAX)
# Paged lists (GET /models, a model's versions in GET /models/{name}): items per page, and
# the page after the one whose last item's key is passed back as `cursor`.
# Names from a request that reach the database as they are (a cursor, a version label): the
# alphabet of model names, so what a database refuses (such as a NUL) never reaches one.
NAME_PATTERN = rf"^[{NAME_CHARS}]+$"
PAGE_LIMIT = Query(100, ge=1, le=500, description="items per page")
_CURSOR = "the `next_cursor` of the page before (none: the first page)"
MODEL_CURSOR = Query(None, max_length=64, pattern=NAME_PATTERN,
                     description=_CURSOR)  # a model name
VERSION_CURSOR = Query(None, ge=1, le=DB_INT_MAX, description=_CURSOR)  # a version number


def next_cursor(page: list[dict], limit: int, key: str):
    """The cursor of the page after `page`: its last item's `key`; None when `page` is the
    last (shorter than `limit`)."""
    return page[-1][key] if len(page) == limit else None


# A version label in a route's path: an alias of the registry (its column holds 32 characters).
LABEL_PATH = Path(..., min_length=1, max_length=32, pattern=NAME_PATTERN,
                  description="a version label: an alias such as `production`")


def _pydantic_fields(cls: type) -> dict[str, Any]:
    types = field_types(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        limits = {k: meta[src] for k, src in (("ge", "lo"), ("le", "hi")) if meta.get(src) is not None}
        kind = types[f.name]
        if kind is tuple:  # a list of strings in JSON, its `hi` the most items
            kind, limits = list[str], {"max_length": meta["hi"]} if meta.get("hi") else {}
        annotation = kind | None if f.default is None else kind
        fields[f.name] = (annotation, Field(f.default, description=meta.get("help"), **limits))
    return fields


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


GenerateRequest = create_model(
    "GenerateRequest",
    __base__=_Strict,
    stream=(bool, Field(False, description="stream text as it is sampled (chunked text/plain)")),
    version=(int | None, Field(None, ge=1, le=DB_INT_MAX,
                               description="model version (default: production)")),
    **_pydantic_fields(SampleConfig),
)


class PromoteRequest(_Strict):
    version: int = Field(..., ge=1, le=DB_INT_MAX,
                         description="version to take the production alias")


def sample_config(request: BaseModel) -> SampleConfig:
    names = {f.name for f in dataclasses.fields(SampleConfig)}
    values = {k: v for k, v in request.model_dump().items() if k in names}
    try:
        return SampleConfig(**{**values, "stop": tuple(values.get("stop") or ())})
    except ValueError as error:  # what the schema cannot say (each stop string's length)
        raise ApiError(400, str(error)) from None


def documented_body(model: type[BaseModel]) -> dict:
    """`openapi_extra` that documents a JSON body a route reads raw (to check every number
    itself, or because it may carry binary data), with `model`'s schema inlined."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": inline(schema)}}}}
