"""The Registry: models, versions, training log lines and aliases over one SQLAlchemy database,
with artifacts on shared storage.

Writers are many processes at once (the server, training drivers, Ray Train workers writing
log lines), so every write is one short transaction, and the few that allocate numbers
(version numbers, log positions) retry when a concurrent writer took the same number first.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from registry import schema
from registry.artifacts import ArtifactStore, directory_digest
from registry.changes import count_changes, read_counter
from registry.errors import Conflict, NotFound
from registry.names import format_model_id, validate_name
from registry.settings import Settings

STATUSES = ("queued", "training", "ready", "failed", "cancelled")
ACTIVE = ("queued", "training")  # a job may still be working on the version
PRODUCTION = "production"  # the alias served when a request names no version
MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
# Transient errors of concurrent writers on SQLite, PostgreSQL and MySQL/MariaDB.
TRANSIENT = ("locked", "already exists", "deadlock", "could not serialize", "duplicate",
             "lock wait timeout")
TERMINAL = ("ready", "failed", "cancelled")
T = TypeVar("T")


@dataclass
class VersionRecord:
    name: str
    kind: str
    version: int
    status: str
    params: dict
    metrics: dict
    artifact_uri: str | None
    job_id: str | None
    created_at: datetime
    updated_at: datetime
    digest: str | None = None  # of the published artifacts

    @property
    def model_id(self) -> str:
        """What replicas load and cache this version as: `name:version@<content digest>`.

        Version numbers start again at 1 after a model is deleted, so `name:version` alone
        could name other weights tomorrow; the digest makes the id never reused. (Versions
        published before digests existed fall back to their creation time.)"""
        return format_model_id(self.name, self.version, self.digest
                               or self.created_at.strftime("%Y%m%dT%H%M%S%f"))

    def to_dict(self) -> dict:
        """The public view: what a client needs, no storage location."""
        return {**{k: getattr(self, k) for k in ("name", "kind", "version", "status", "params",
                                                 "metrics", "job_id")},
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at)}


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite returns naive datetimes; they were stored as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def _json(value) -> dict:
    """A JSON column read through a scalar subquery comes back as text on some backends."""
    if isinstance(value, str):
        return json.loads(value)
    return dict(value or {})


def _now() -> datetime:
    return datetime.now(UTC)


def _summary_columns() -> list:
    """A model's summary as columns of a query over `models` (read back by `_summary`): its
    latest version and that version's status, its production version and the metrics of the
    version it serves; each a correlated subquery, so a page of models is one query."""
    m, a = schema.models, schema.aliases
    # One alias of the versions table per subquery, each correlated with the outer model row
    # only (nested subqueries on one table would otherwise correlate with each other).
    v_latest, v_status, v_ready, v_metrics = (schema.versions.alias() for _ in range(4))

    def per_model(column, v, *conditions):
        return (sa.select(column).where(v.c.model_id == m.c.id, *conditions)
                .correlate(m).scalar_subquery())

    production = per_model(a.c.version, a, a.c.alias == PRODUCTION)
    latest = per_model(sa.func.max(v_latest.c.version), v_latest)
    latest_ready = per_model(sa.func.max(v_ready.c.version), v_ready,
                             v_ready.c.status == "ready")
    # What a request naming no version is served: production, else the latest ready one.
    served = sa.func.coalesce(production, latest_ready)
    return [m.c.name, m.c.kind, m.c.created_at, latest.label("latest_version"),
            per_model(v_status.c.status, v_status, v_status.c.version == latest).label("status"),
            production.label("production_version"),
            per_model(v_metrics.c.metrics, v_metrics, v_metrics.c.version == served)
            .label("metrics")]


def _summary(row) -> dict:
    return {"name": row.name, "kind": row.kind, "created_at": _iso(row.created_at),
            "latest_version": row.latest_version, "status": row.status,
            "production_version": row.production_version, "metrics": _json(row.metrics)}


# A model's aliases in one column, `alias=version` a line: few per model (MySQL's group_concat
# cuts at 1024 bytes), named by the code (production), never by a request.
_ALIAS_SEPARATOR = "\n"


def _aliases_column():
    m, a = schema.models, schema.aliases
    line = a.c.alias + "=" + sa.cast(a.c.version, sa.String)
    return (sa.select(sa.func.aggregate_strings(line, _ALIAS_SEPARATOR))
            .where(a.c.model_id == m.c.id).correlate(m).scalar_subquery())


def _aliases(column: str | None) -> dict[str, int]:
    pairs = (line.rpartition("=") for line in (column or "").split(_ALIAS_SEPARATOR) if line)
    return {alias: int(version) for alias, _, version in pairs}


def _version_columns(row) -> SimpleNamespace:
    """The `versions` columns of a row that holds them prefixed `v_` (beside other tables')."""
    return SimpleNamespace(**{c.name: getattr(row, f"v_{c.name}") for c in schema.versions.c})


def _make_engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(connection, _record):
        # WAL lets readers run beside one writer; busy_timeout makes writers wait, not fail.
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


class Registry:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.engine = _make_engine(self.settings.db_url)
        self.artifacts = ArtifactStore(self.settings.storage, self.settings.s3_endpoint)
        self._retry(self._migrate)
        count_changes(self.engine)

    def change_count(self) -> int:
        """Moves with every write to models, versions and aliases (registry/changes.py)."""
        return read_counter(self.engine)

    def _migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (a no-op when it is there)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            tables = set(sa.inspect(connection).get_table_names())
            if "models" in tables and "alembic_version" not in tables:
                command.stamp(config, "0001")  # made by create_all before migrations existed
            command.upgrade(config, "head")

    # ---- plumbing -------------------------------------------------------------------------
    def _retry(self, work: Callable[[], T], attempts: int = 20) -> T:
        """Run `work` again when a concurrent writer got in first (unique number taken,
        database locked); any other error goes straight to the caller."""
        for attempt in range(attempts):
            try:
                return work()
            except (IntegrityError, OperationalError, ProgrammingError) as error:
                message = str(error).lower()
                transient = isinstance(error, IntegrityError) or any(t in message for t in TRANSIENT)
                if not transient or attempt == attempts - 1:
                    raise
                time.sleep(0.01 * (attempt + 1) + random.random() * 0.02)
        raise AssertionError("unreachable")

    def _model_row(self, conn, name: str):
        row = conn.execute(sa.select(schema.models).where(
            schema.models.c.name == validate_name(name))).first()
        if row is None:
            raise NotFound(f"model {name!r} not found")
        return row

    def _version_row(self, conn, name: str, version: int):
        model = self._model_row(conn, name)
        row = conn.execute(sa.select(schema.versions).where(
            schema.versions.c.model_id == model.id,
            schema.versions.c.version == version)).first()
        if row is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return model, row

    @staticmethod
    def _record(model, row) -> VersionRecord:
        return VersionRecord(name=model.name, kind=model.kind, version=row.version,
                             status=row.status, params=dict(row.params or {}),
                             metrics=dict(row.metrics or {}), artifact_uri=row.artifact_uri,
                             job_id=row.job_id, created_at=row.created_at,
                             updated_at=row.updated_at, digest=row.digest)

    # ---- versions -------------------------------------------------------------------------
    def create_version(self, name: str, kind: str = "charrnn", params: dict | None = None,
                       status: str = "queued") -> VersionRecord:
        validate_name(name)
        if status not in ACTIVE:
            raise ValueError(f"a new version starts queued or training, not {status}")

        def attempt() -> VersionRecord:
            with self.engine.begin() as conn:
                model = conn.execute(sa.select(schema.models).where(
                    schema.models.c.name == name)).first()
                if model is None:
                    conn.execute(schema.models.insert().values(
                        name=name, kind=kind, created_at=_now()))
                    model = self._model_row(conn, name)
                if model.kind != kind:
                    raise Conflict(f"model {name!r} is a {model.kind} model, not {kind}")
                latest = conn.execute(sa.select(sa.func.max(schema.versions.c.version)).where(
                    schema.versions.c.model_id == model.id)).scalar() or 0
                now = _now()
                conn.execute(schema.versions.insert().values(
                    model_id=model.id, version=latest + 1, status=status,
                    params=params or {}, metrics={}, created_at=now, updated_at=now))
                return self._record(model, self._version_row(conn, name, latest + 1)[1])

        return self._retry(attempt)

    def get_version(self, name: str, version: int | None = None) -> VersionRecord:
        """That version; or with None, the production version, else the latest ready one."""
        with self.engine.connect() as conn:
            model = self._model_row(conn, name)
            if version is None:
                version = self._alias_version(conn, model.id, PRODUCTION)
            if version is None:
                version = conn.execute(sa.select(sa.func.max(schema.versions.c.version)).where(
                    schema.versions.c.model_id == model.id,
                    schema.versions.c.status == "ready")).scalar()
                if version is None:
                    raise NotFound(f"model {name!r} has no ready version")
            return self._record(model, self._version_row(conn, name, version)[1])

    def list_versions(self, name: str) -> list[VersionRecord]:
        with self.engine.connect() as conn:
            model = self._model_row(conn, name)
            rows = conn.execute(sa.select(schema.versions).where(
                schema.versions.c.model_id == model.id).order_by(schema.versions.c.version))
            return [self._record(model, row) for row in rows]

    def update_version(self, name: str, version: int, *, status: str | None = None,
                       metrics: dict | None = None, job_id: str | None = None,
                       artifact_uri: str | None = None,
                       params: dict | None = None) -> VersionRecord:
        if status == "ready":
            raise ValueError("a version becomes ready only through publish_version")
        return self._update(name, version, status=status, metrics=metrics, job_id=job_id,
                            artifact_uri=artifact_uri, params=params)

    def end_version(self, name: str, version: int, status: str, reason: str) -> VersionRecord:
        """End a version `failed` or `cancelled` and say why in its log: the reason goes in
        first, so whoever sees the status can read the cause (its lines become log lines)."""
        if status not in ("failed", "cancelled"):
            raise ValueError(f"a version ends failed or cancelled here, not {status}")
        self.append_logs(name, version, reason.splitlines() or [reason])
        return self.update_version(name, version, status=status)

    def _update(self, name, version, *, status=None, metrics=None, job_id=None,
                artifact_uri=None, params=None, digest=None,
                may_leave: tuple[str, ...] = ()) -> VersionRecord:
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")

        def attempt() -> VersionRecord:
            with self.engine.begin() as conn:
                model, row = self._version_row(conn, name, version)
                if (status is not None and row.status in TERMINAL and status != row.status
                        and row.status not in may_leave):
                    raise Conflict(f"version {version} of {name!r} is already {row.status}")
                values = {"updated_at": _now()}
                if status is not None:
                    values["status"] = status
                if metrics is not None:
                    values["metrics"] = {**(row.metrics or {}), **metrics}
                if params is not None:
                    values["params"] = params
                if job_id is not None:
                    values["job_id"] = job_id
                if artifact_uri is not None:
                    values["artifact_uri"] = artifact_uri
                if digest is not None:
                    values["digest"] = digest
                # The status in WHERE makes this a compare-and-set against concurrent writers.
                result = conn.execute(schema.versions.update().where(
                    schema.versions.c.id == row.id,
                    schema.versions.c.status == row.status).values(**values))
                if result.rowcount != 1:
                    raise IntegrityError("status changed concurrently", None, Exception())
                return self._record(model, self._version_row(conn, name, version)[1])

        return self._retry(attempt)

    def publish_version(self, name: str, version: int, local_dir: str,
                        metrics: dict | None = None) -> VersionRecord:
        """Copy the artifacts to storage, then (only then) mark the version ready.

        A version marked `failed` by a status check that guessed wrong (its job looked gone)
        still becomes ready: the run that finished with all its files is the authority."""
        record = self.get_version(name, version)
        if record.status in ("ready", "cancelled"):
            raise Conflict(f"version {version} of {name!r} is already {record.status}")
        digest = directory_digest(local_dir)
        relpath = self.artifacts.version_path(name, version, digest)
        self.artifacts.upload_dir(local_dir, relpath)
        return self._update(name, version, status="ready", metrics=metrics or {},
                            artifact_uri=self.artifacts.uri(relpath), digest=digest,
                            may_leave=("failed",))

    def fetch_version(self, name: str, version: int | None = None,
                      dest_dir: str | None = None) -> tuple[VersionRecord, str]:
        """A ready version and a local directory holding its artifacts."""
        record = self.get_version(name, version)
        if record.status != "ready":
            raise Conflict(f"version {record.version} of {name!r} is {record.status}, not ready")
        relpath = self.artifacts.version_path(name, record.version, record.digest)
        local = self.artifacts.local_dir(relpath)
        if local is not None:
            return record, local
        # The path is content-addressed, so a copy keyed by it is a copy of those bytes.
        key = hashlib.sha1(f"{self.settings.storage}/{relpath}".encode()).hexdigest()[:16]
        dest = dest_dir or os.path.join(tempfile.gettempdir(), "rnnserve-cache", key)
        if not os.path.isdir(dest):
            staging = f"{dest}.tmp-{os.getpid()}-{random.randrange(1 << 30)}"
            self.artifacts.download_dir(relpath, staging)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            try:
                os.rename(staging, dest)
            except OSError:  # another process finished the same download first
                pass
        return record, dest

    # ---- models ---------------------------------------------------------------------------
    def list_models(self, limit: int | None = None, after: str | None = None) -> list[dict]:
        """Model summaries in name order, `limit` of them after the name `after`: one query
        per page, whatever the number of models or versions."""
        m = schema.models
        query = sa.select(*_summary_columns()).order_by(m.c.name)
        if after is not None:
            query = query.where(m.c.name > after)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_summary(row) for row in rows]

    def versions_with_status(self, statuses: tuple[str, ...]) -> list[VersionRecord]:
        """Every version (of any model) in one of `statuses`, in one query."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(schema.versions, schema.models.c.name, schema.models.c.kind)
                .join(schema.models, schema.models.c.id == schema.versions.c.model_id)
                .where(schema.versions.c.status.in_(statuses))
                .order_by(schema.models.c.name, schema.versions.c.version)).all()
        return [self._record(row, row) for row in rows]

    def ready_versions(self, limit: int, kind: str | None = None,
                       name: str | None = None) -> list[tuple[VersionRecord, int | None]]:
        """The `limit` newest ready versions (of models of `kind`, or of the model `name`),
        newest first, each with its model's production version: one query, whatever the
        number of models or versions."""
        m, v, a = schema.models, schema.versions, schema.aliases
        production = (sa.select(a.c.version).where(a.c.model_id == m.c.id,
                                                   a.c.alias == PRODUCTION)
                      .correlate(m).scalar_subquery())
        query = (sa.select(v, m.c.name, m.c.kind, production.label("production"))
                 .join(m, m.c.id == v.c.model_id).where(v.c.status == "ready")
                 .order_by(v.c.id.desc()).limit(limit))  # ids grow with creation
        if kind is not None:
            query = query.where(m.c.kind == kind)
        if name is not None:
            query = query.where(m.c.name == validate_name(name))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(self._record(row, row), row.production) for row in rows]

    def count_versions(self) -> dict[tuple[str, str], int]:
        """{(kind, status): number of versions}, in one query."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(schema.models.c.kind, schema.versions.c.status, sa.func.count())
                .join(schema.models, schema.models.c.id == schema.versions.c.model_id)
                .group_by(schema.models.c.kind, schema.versions.c.status)).all()
        return {(kind, status): count for kind, status, count in rows}

    def get_model(self, name: str, limit: int | None = None, after: int = 0,
                  newest_first: bool = False) -> dict:
        """The model's summary (as list_models gives it), its aliases, and its versions in
        number order (`newest_first`: the highest first), `limit` of them after the version
        `after` (None: all of them): one query per page, whatever the number of versions."""
        m, v = schema.models, schema.versions
        model = sa.select(m.c.id.label("model_pk"), *_summary_columns(),
                          _aliases_column().label("aliases")) \
            .where(m.c.name == validate_name(name)).subquery()
        # An outer join: a page past the last version is still the model's (no versions).
        page = sa.select(model, *(c.label(f"v_{c.name}") for c in v.c)).select_from(
            model.outerjoin(v, sa.and_(v.c.model_id == model.c.model_pk, v.c.version > after))
        ).order_by(v.c.version.desc() if newest_first else v.c.version).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(page).all()
        if not rows:
            raise NotFound(f"model {name!r} not found")
        versions = [self._record(row, _version_columns(row)).to_dict()
                    for row in rows if row.v_id is not None]
        return {**_summary(rows[0]), "aliases": _aliases(rows[0].aliases), "versions": versions}

    def delete_model(self, name: str) -> None:
        with self.engine.begin() as conn:
            model = self._model_row(conn, name)
            version_ids = sa.select(schema.versions.c.id).where(
                schema.versions.c.model_id == model.id)
            conn.execute(schema.log_lines.delete().where(
                schema.log_lines.c.version_id.in_(version_ids)))
            conn.execute(schema.aliases.delete().where(schema.aliases.c.model_id == model.id))
            conn.execute(schema.versions.delete().where(schema.versions.c.model_id == model.id))
            conn.execute(schema.models.delete().where(schema.models.c.id == model.id))
        self.artifacts.delete_model_files(name)

    # ---- aliases --------------------------------------------------------------------------
    @staticmethod
    def _alias_version(conn, model_id: int, alias: str) -> int | None:
        return conn.execute(sa.select(schema.aliases.c.version).where(
            schema.aliases.c.model_id == model_id, schema.aliases.c.alias == alias)).scalar()

    def set_alias(self, name: str, alias: str, version: int) -> None:
        def attempt() -> None:
            with self.engine.begin() as conn:
                model, row = self._version_row(conn, name, version)
                if row.status != "ready":
                    raise Conflict(f"version {version} of {name!r} is {row.status}, not ready")
                updated = conn.execute(schema.aliases.update().where(
                    schema.aliases.c.model_id == model.id, schema.aliases.c.alias == alias
                ).values(version=version)).rowcount
                if not updated:
                    conn.execute(schema.aliases.insert().values(
                        model_id=model.id, alias=alias, version=version))

        self._retry(attempt)

    def move_alias(self, name: str, alias: str, version: int, expected: int | None) -> bool:
        """Point `alias` at `version` only if it still points at `expected` (None: unset).

        False when another writer moved it first: the caller compared against `expected`,
        and its decision may not hold against the new one."""
        def attempt() -> bool:
            with self.engine.begin() as conn:
                model, row = self._version_row(conn, name, version)
                if row.status != "ready":
                    raise Conflict(f"version {version} of {name!r} is {row.status}, not ready")
                if expected is None:
                    if self._alias_version(conn, model.id, alias) is not None:
                        return False
                    # A concurrent insert fails on the primary key; the retry then sees it.
                    conn.execute(schema.aliases.insert().values(
                        model_id=model.id, alias=alias, version=version))
                    return True
                return conn.execute(schema.aliases.update().where(
                    schema.aliases.c.model_id == model.id, schema.aliases.c.alias == alias,
                    schema.aliases.c.version == expected).values(version=version)).rowcount == 1

        return self._retry(attempt)

    def get_alias(self, name: str, alias: str) -> int | None:
        with self.engine.connect() as conn:
            return self._alias_version(conn, self._model_row(conn, name).id, alias)

    # ---- training logs --------------------------------------------------------------------
    def append_logs(self, name: str, version: int, lines: list[str]) -> int:
        """Append lines at the next positions; returns the position after the last one."""
        def attempt() -> int:
            with self.engine.begin() as conn:
                _, row = self._version_row(conn, name, version)
                start = conn.execute(sa.select(sa.func.count()).where(
                    schema.log_lines.c.version_id == row.id)).scalar()
                if lines:
                    conn.execute(schema.log_lines.insert(), [
                        {"version_id": row.id, "position": start + i, "text": text}
                        for i, text in enumerate(lines)])
                return start + len(lines)

        return self._retry(attempt)

    def read_logs(self, name: str, version: int, offset: int = 0,
                  limit: int = 1000) -> list[str]:
        with self.engine.connect() as conn:
            _, row = self._version_row(conn, name, version)
            return [r.text for r in conn.execute(
                sa.select(schema.log_lines.c.text).where(
                    schema.log_lines.c.version_id == row.id,
                    schema.log_lines.c.position >= offset)
                .order_by(schema.log_lines.c.position).limit(limit))]
