"""Artifact storage over a local path (or NFS mount) or any pyarrow filesystem URI (s3://).

Layout under the root, owned by this class: `uploads/<name>/<id>-<file>` for training data,
`models/<name>/v<N>-<digest>/` for a version's artifacts (content-addressed: a path never
holds other bytes than the first ones written to it, so no copy of it can go stale),
`runs/<name>/` for its Ray Train runs (checkpoints), so everything a model stores is found
(and deleted) by its name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from urllib.parse import urlparse

from pyarrow import fs as pafs

_VERSIONS, _UPLOADS, _RUNS = "models", "uploads", "runs"
DIGEST_CHARS = 16  # of the sha256 in paths and model ids: 64 bits, no collision in practice


def directory_digest(local_dir: str) -> str:
    """sha256 over a directory's files: their relative paths, sizes and bytes."""
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(local_dir)):
        for file in sorted(files):
            path = os.path.join(folder, file)
            digest.update(f"{os.path.relpath(path, local_dir)}\0{os.path.getsize(path)}\0".encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _safe_filename(filename: str) -> str:
    base = os.path.basename(filename.replace("\\", "/")) or "upload"
    return re.sub(r"[^A-Za-z0-9._-]", "_", base)[:80]


class ArtifactStore:
    def __init__(self, root: str, s3_endpoint: str | None = None):
        self.root = root
        self.s3_endpoint = s3_endpoint
        self.is_local = "://" not in root or root.startswith("file://")
        self._fs = None

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """(pyarrow filesystem, base path) — also handed to Ray Train's RunConfig."""
        if self._fs is None:
            if self.is_local:
                base = os.path.abspath(self.root.removeprefix("file://"))
                os.makedirs(base, exist_ok=True)
                self._fs = (pafs.LocalFileSystem(), base)
            else:
                parsed = urlparse(self.root)
                if parsed.scheme == "s3" and self.s3_endpoint:
                    endpoint = urlparse(self.s3_endpoint)
                    # Credentials from this process's environment go into the filesystem
                    # object, so Ray Train workers that receive it pickled can use it too.
                    s3 = pafs.S3FileSystem(
                        endpoint_override=endpoint.netloc or endpoint.path,
                        scheme=endpoint.scheme or "http",
                        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
                        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"))
                    self._fs = (s3, f"{parsed.netloc}{parsed.path}".rstrip("/"))
                else:
                    filesystem, base = pafs.FileSystem.from_uri(self.root)
                    self._fs = (filesystem, base.rstrip("/"))
        return self._fs

    def _path(self, relpath: str) -> str:
        relpath = relpath.strip("/")
        if ".." in relpath.split("/"):
            raise ValueError(f"path escapes the storage root: {relpath}")
        return f"{self.filesystem()[1]}/{relpath}"

    def uri(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *[p.strip("/") for p in parts]])

    def version_path(self, name: str, version: int, digest: str | None) -> str:
        # Versions published before digests existed live at the plain `v<N>`.
        return f"{_VERSIONS}/{name}/v{version}" + (f"-{digest[:DIGEST_CHARS]}" if digest else "")

    def upload_path(self, name: str, filename: str) -> str:
        return f"{_UPLOADS}/{name}/{uuid.uuid4().hex[:12]}-{_safe_filename(filename)}"

    def runs_path(self, name: str) -> str:
        """Folder of a model's training runs (each trainer names its runs inside it)."""
        return f"{_RUNS}/{name}"

    def delete_model_files(self, name: str) -> None:
        for folder in (_VERSIONS, _UPLOADS, _RUNS):
            self.delete(f"{folder}/{name}")

    def exists(self, relpath: str) -> bool:
        fs, _ = self.filesystem()
        return fs.get_file_info(self._path(relpath)).type != pafs.FileType.NotFound

    def put_bytes(self, relpath: str, data: bytes) -> None:
        self.write_stream(relpath, [data], None)

    def write_stream(self, relpath: str, chunks: Iterable[bytes], max_bytes: int | None) -> int:
        """Write chunks as they come; over `max_bytes` the partial file is deleted and
        ValueError raised, so an oversize upload never lands whole on disk first."""
        fs, _ = self.filesystem()
        path = self._path(relpath)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        written = 0
        try:
            with fs.open_output_stream(path) as out:
                for chunk in chunks:
                    written += len(chunk)
                    if max_bytes is not None and written > max_bytes:
                        raise ValueError(f"larger than {max_bytes} bytes")
                    out.write(chunk)
        except BaseException:
            self.delete(relpath)
            raise
        return written

    def get_bytes(self, relpath: str) -> bytes:
        fs, _ = self.filesystem()
        path = self._path(relpath)
        if fs.get_file_info(path).type != pafs.FileType.File:
            raise FileNotFoundError(relpath)
        with fs.open_input_stream(path) as stream:
            return stream.read()

    def delete(self, relpath: str) -> None:
        fs, _ = self.filesystem()
        path = self._path(relpath)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)

    def list(self, relpath: str) -> list[str]:
        """Names of the entries directly under a directory (empty when it does not exist)."""
        fs, _ = self.filesystem()
        selector = pafs.FileSelector(self._path(relpath), allow_not_found=True)
        return [info.base_name for info in fs.get_file_info(selector)]

    def upload_dir(self, local_dir: str, relpath: str) -> None:
        """Copy a local directory to `relpath`. Locally the copy is made beside the target
        and renamed into place, so the target appears complete or not at all."""
        fs, _ = self.filesystem()
        target = self._path(relpath)
        if self.is_local:
            staging = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
            shutil.copytree(local_dir, staging)
            for folder, _, files in os.walk(staging):
                for file in files:
                    with open(os.path.join(folder, file), "rb") as f:
                        os.fsync(f.fileno())
            if os.path.exists(target):
                shutil.rmtree(target)
            os.rename(staging, target)
            return
        fs.create_dir(target, recursive=True)
        pafs.copy_files(local_dir, target, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)

    def download_dir(self, relpath: str, local_dir: str) -> None:
        fs, _ = self.filesystem()
        os.makedirs(local_dir, exist_ok=True)
        pafs.copy_files(self._path(relpath), local_dir, source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())

    def local_dir(self, relpath: str) -> str | None:
        """The directory itself when storage is local (no copy needed), else None."""
        return self._path(relpath) if self.is_local else None
