"""Where the durable copy of the state dir's artefacts lives.

By default the state dir itself is the storage (`Storage()`: every operation here is a no-op). With
`rftlab serve --storage-url URL` (or `$RFTLAB_STORAGE_URL`; any fsspec URL: `s3://bucket/prefix` with s3fs,
`gs://bucket/prefix` with gcsfs, `file:///path`, `memory://` in tests), datasets, evaluator code, job checkpoints and
worker logs, and output adapters are kept under URL, each at its path relative to the state dir (its key, the
StateLayout path), so the same layout serves the server's state dir and each node's local copy (`root`).

Nothing reads as complete before it is: a file is written under a temporary name and renamed into place; a folder's
files are written first and its manifest (FOLDER_MANIFEST: its files, their sizes, a version) last, and a folder
without one reads as absent. Local copies are replaced the same way, so a reader never sees half of one.

The URL is a server setting kept in the database, like the executor, so job workers read it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy.orm import Session

from rftlab.server.layout import StateLayout
from rftlab.server.store import ServerSetting, Store, sqlite_url

STORAGE_SETTING = "storage"
STORAGE_URL_ENV = "RFTLAB_STORAGE_URL"
CACHE_DIR_ENV = "RFTLAB_CACHE_DIR"
"""On a Ray node: the folder for the node's local copy of what its job workers use (default: a temp folder)."""
FOLDER_MANIFEST = ".rftlab-folder.json"
FETCHED_VERSION_SUFFIX = ".fetched"
CREDENTIAL_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "CLOUDSDK_", "AZURE_", "FSSPEC_")
"""Environment variables that carry object-store credentials and settings: job workers get them for the storage."""
BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


class StorageError(RuntimeError):
    pass


class StorageMissing(StorageError, FileNotFoundError):
    pass


class StorageUnavailable(StorageError):
    """The storage kept failing (a network blip, throttling, a lost mount, or a bucket or permission that is
    gone): the job's worker ends with UNAVAILABLE_EXIT and the scheduler queues the job again."""


UNAVAILABLE_EXIT = 75
"""A job worker's exit status when the storage failed it (EX_TEMPFAIL): its job goes back to the queue, to resume
from its last stored checkpoint, as when its worker dies."""
UNAVAILABLE_PREFIX = "the storage failed: "
"""How such a worker's last status message starts: the scheduler gives it as the reason of the requeue."""


@lru_cache(maxsize=8)
def _filesystem(url: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    try:
        fs, base = url_to_fs(url)
    except ImportError as error:
        protocol = url.split("://", 1)[0]
        package = BACKENDS.get(protocol, f"the fsspec backend for {protocol}://")
        raise StorageError(f"storage {url} needs {package}: pip install {package} ({error})") from None
    except ValueError as error:
        raise StorageError(f"storage {url}: {error}") from None
    return fs, base.rstrip("/")


@dataclass(frozen=True)
class Storage:
    url: str | None = None
    """None: the state dir is the storage."""
    root: Path = Path()
    """The local folder whose files have their keys under `url`: the server's state dir, or a node's cache."""

    @property
    def remote(self) -> bool:
        return self.url is not None

    def on(self, root: Path) -> Storage:
        """The same storage, seen from another local copy."""
        return replace(self, root=root.resolve())

    def key(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            raise ValueError(
                f"{path} is not under {self.root}, the local copy of storage {self.url}"
            ) from None

    def location(self, path: Path) -> str:
        """Where `path` lives durably: its URL, or with no storage URL the path itself."""
        if not self.remote:
            return str(path.resolve())
        return f"{self.url.rstrip('/')}/{self.key(path)}"

    def _target(self, path: Path) -> tuple[Any, str]:
        assert self.url is not None
        fs, base = _filesystem(self.url)
        return fs, f"{base}/{self.key(path)}"

    def missing(self, path: Path, detail: str = "") -> StorageMissing:
        return StorageMissing(f"{self.key(path)} is not in storage {self.url}{detail}")

    def put_file(self, path: Path) -> None:
        """Store the local file `path` at its key."""
        if not self.remote:
            return
        fs, target = self._target(path)
        _write_renamed(fs, target, lambda partial: fs.put_file(str(path), partial))

    def fetch_file(self, path: Path, missing_ok: bool = False) -> bool:
        """Make the local `path` what storage holds at its key. Absent there: StorageMissing naming the key and
        URL, or with `missing_ok` the local copy is removed and the answer is False."""
        if not self.remote:
            return path.exists()
        fs, source = self._target(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        incoming = path.with_name(f".{path.name}.fetching-{uuid.uuid4().hex[:8]}")
        try:
            fs.get_file(source, str(incoming))
        except FileNotFoundError:
            incoming.unlink(missing_ok=True)
            if not missing_ok:
                raise self.missing(path) from None
            path.unlink(missing_ok=True)
            return False
        os.replace(incoming, path)
        return True

    def put_dir(self, path: Path) -> None:
        """Store the local folder `path` (all its files) at its key, replacing what was there."""
        if not self.remote:
            return
        fs, target = self._target(path)
        files = {
            file.relative_to(path).as_posix(): file.stat().st_size
            for file in sorted(path.rglob("*"))
            if file.is_file() and file.name != FOLDER_MANIFEST
        }
        if fs.exists(target):
            fs.rm(target, recursive=True)
        for name in files:
            fs.makedirs(f"{target}/{name}".rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(path / name), f"{target}/{name}")
        version = uuid.uuid4().hex
        manifest = json.dumps({"version": version, "files": files}).encode()
        _write_renamed(fs, f"{target}/{FOLDER_MANIFEST}", lambda partial: fs.pipe_file(partial, manifest))
        _fetched_marker(path).write_text(version)

    def fetch_dir(self, path: Path, missing_ok: bool = False) -> bool:
        """Make the local folder `path` what storage holds at its key (nothing is copied when it already is).
        Absent or incomplete there: StorageMissing naming the key and URL, or with `missing_ok` False."""
        if not self.remote:
            return path.is_dir()
        fs, source = self._target(path)
        manifest = self._manifest(fs, source)
        if manifest is None:
            if missing_ok:
                return False
            raise self.missing(path, " (or not completely written: it has no manifest)")
        marker = _fetched_marker(path)
        if marker.is_file() and marker.read_text() == manifest["version"] and _holds(path, manifest["files"]):
            return True
        path.parent.mkdir(parents=True, exist_ok=True)
        incoming = path.with_name(f".{path.name}.fetching-{uuid.uuid4().hex[:8]}")
        outgoing = path.with_name(f".{path.name}.replaced-{uuid.uuid4().hex[:8]}")
        try:
            incoming.mkdir()
            for name, size in manifest["files"].items():
                local = incoming / _relative(name, self.key(path))
                local.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fs.get_file(f"{source}/{name}", str(local))
                except FileNotFoundError:
                    raise self.missing(path / name, ", though its folder's manifest lists it") from None
                if local.stat().st_size != size:
                    raise StorageError(
                        f"{self.key(path)}/{name} in storage {self.url} has {local.stat().st_size} bytes, its "
                        f"folder's manifest says {size}: it was changed outside rftlab; store it again"
                    )
            if path.exists():
                path.rename(outgoing)
            incoming.rename(path)
            marker.write_text(manifest["version"])
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
            shutil.rmtree(outgoing, ignore_errors=True)
        return True

    def _manifest(self, fs: Any, folder: str) -> dict[str, Any] | None:
        try:
            return json.loads(fs.cat_file(f"{folder}/{FOLDER_MANIFEST}"))
        except FileNotFoundError:
            return None

    def folders(self, path: Path, complete: bool = True) -> list[str]:
        """The names of the complete folders (or with `complete` False, of all entries) directly under `path` in
        storage, sorted."""
        if not self.remote:
            return sorted(child.name for child in path.iterdir() if child.is_dir()) if path.is_dir() else []
        fs, target = self._target(path)
        if not complete:
            return (
                sorted(PurePosixPath(found).name for found in fs.ls(target, detail=False))
                if fs.exists(target)
                else []
            )
        return sorted(PurePosixPath(found).parent.name for found in fs.glob(f"{target}/*/{FOLDER_MANIFEST}"))

    def delete(self, path: Path) -> None:
        """Remove the file or folder at `path`'s key from storage (the local copy is the caller's)."""
        if not self.remote:
            return
        fs, target = self._target(path)
        if fs.exists(target):
            fs.rm(target, recursive=True)


def _write_renamed(fs: Any, target: str, write: Any) -> None:
    """`write(name)` a temporary object beside `target`, then rename it to `target`."""
    parent = target.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    partial = f"{target}.partial-{uuid.uuid4().hex[:8]}"
    try:
        write(partial)
        fs.mv(partial, target)
    finally:
        if fs.exists(partial):
            fs.rm(partial)


def _holds(folder: Path, files: dict[str, int]) -> bool:
    """Whether the local `folder` has each of `files` at its size."""
    try:
        return all((folder / name).stat().st_size == size for name, size in files.items())
    except OSError:
        return False


def _fetched_marker(folder: Path) -> Path:
    """Beside a local folder: the version of the stored folder it is a copy of."""
    return folder.with_name(f".{folder.name}{FETCHED_VERSION_SUFFIX}")


def _relative(name: str, key: str) -> str:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise StorageError(f"the manifest of {key} lists {name!r}, a path outside the folder")
    return str(pure)


def node_cache_root(url: str, node_id: str) -> Path:
    """A node's local copy of storage `url`: under `$RFTLAB_CACHE_DIR`, else a temp folder of this node's own."""
    base = os.environ.get(CACHE_DIR_ENV)
    folder = Path(base) if base else Path(tempfile.gettempdir()) / f"rftlab-cache-{node_id[:16]}"
    return folder / hashlib.sha256(url.encode()).hexdigest()[:12]


def storage_credentials(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    """The object-store credentials and settings in `environ` (what a job worker needs to reach the storage)."""
    return {name: value for name, value in environ.items() if name.startswith(CREDENTIAL_PREFIXES)}


def add_storage_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage-url",
        default=os.environ.get(STORAGE_URL_ENV) or None,
        metavar="URL",
        help="keep datasets, evaluator code, checkpoints, worker logs and output adapters at this fsspec URL "
        "(s3://bucket/prefix with s3fs, gs://... with gcsfs, file:///path) instead of only in the state dir, "
        f"so job workers on any node reach them (default: ${STORAGE_URL_ENV}, else none)",
    )


def checked_storage_url(url: str | None) -> str | None:
    """`url` once a file can be written, read and removed there; ValueError naming the flag and why not."""
    if not url:
        return None
    if "://" not in url:
        raise ValueError(f"--storage-url {url}: give a URL (file:///path, s3://bucket/prefix, gs://...)")
    if url.startswith("memory://"):
        raise ValueError(
            f"--storage-url {url}: memory:// lives inside one process, where job workers cannot reach it; "
            "on one machine use file:///path"
        )
    try:
        fs, base = _filesystem(url)
        probe = f"{base}/.rftlab-probe-{uuid.uuid4().hex[:8]}"
        fs.makedirs(base, exist_ok=True)
        fs.pipe_file(probe, b"rftlab")
        fs.cat_file(probe)
        fs.rm(probe)
    except StorageError as error:
        raise ValueError(f"--storage-url: {error}") from None
    except Exception as error:  # whatever the backend raises: a bucket that is absent, no credentials...
        raise ValueError(
            f"--storage-url {url}: cannot write there ({type(error).__name__}: {error})"
        ) from None
    return url.rstrip("/")


def save_storage_setting(store: Store, url: str | None) -> None:
    with store.session() as session:
        session.merge(ServerSetting(name=STORAGE_SETTING, value={"url": url}))


def load_storage(session: Session, root: Path) -> Storage:
    """The storage `rftlab serve` was started with (the state dir when none), seen from the local folder `root`."""
    stored = session.get(ServerSetting, STORAGE_SETTING)
    url = stored.value.get("url") if stored is not None else None
    return Storage(url).on(root) if url else Storage(root=root.resolve())


def configured_storage(store: Store, root: Path) -> Storage:
    with store.reading() as session:
        return load_storage(session, root)


def state_dir_storage(root: Path) -> Storage:
    """The storage of the server on state dir `root`, for a command without its database URL (`rftlab chat`):
    `$RFTLAB_STORAGE_URL`, else the setting in the state dir's SQLite database, else the state dir itself."""
    if os.environ.get(STORAGE_URL_ENV):
        return Storage(os.environ[STORAGE_URL_ENV].rstrip("/")).on(root)
    database = StateLayout(root).database_path
    if not database.is_file():
        return Storage(root=root.resolve())
    store = Store(sqlite_url(str(database)))
    try:
        return configured_storage(store, root)
    finally:
        store.dispose()
