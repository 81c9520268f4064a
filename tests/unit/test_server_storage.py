"""Job files on a storage URL (rftlab.server.storage), on fsspec's memory and local filesystems: files and folders
go there at their state-dir keys and come back into another local copy; what is absent or only partly written
reads as missing, with an error naming its key and the URL; without a URL nothing moves."""

from __future__ import annotations

import importlib.util
import re
import tempfile
import uuid
from pathlib import Path

import fsspec
import pytest
from storage_fixtures import Recorded, save_checkpoint_like_the_engine

from rftlab.server.job_storage import LogCopy, StoringReporter, fetch_checkpoint
from rftlab.server.layout import StateLayout
from rftlab.server.storage import (
    CACHE_DIR_ENV,
    Storage,
    StorageError,
    StorageMissing,
    checked_storage_url,
    configured_storage,
    save_storage_setting,
)
from rftlab.server.store import Store


@pytest.fixture(params=["memory", "file"])
def url(request, tmp_path) -> str:
    if request.param == "memory":
        return f"memory://bucket-{uuid.uuid4().hex[:8]}/prefix"
    return f"file://{tmp_path / 'bucket'}/prefix"


def on(url: str, root: Path) -> Storage:
    return Storage(url).on(root)


def stored_bytes(url: str, key: str) -> bytes:
    fs, base = fsspec.core.url_to_fs(url)
    return fs.cat_file(f"{base}/{key}")


def test_a_file_goes_to_its_state_dir_key_and_comes_back_into_another_copy(url, tmp_path):
    server = on(url, tmp_path / "state")
    dataset = StateLayout(server.root).dataset_file("acct", "ds")
    dataset.parent.mkdir(parents=True)
    dataset.write_text('{"messages": []}\n')
    server.put_file(dataset)
    assert stored_bytes(url, "accounts/acct/datasets/ds/data.jsonl") == b'{"messages": []}\n'
    assert server.location(dataset) == f"{url}/accounts/acct/datasets/ds/data.jsonl"

    node = on(url, tmp_path / "node-cache")
    copy = StateLayout(node.root).dataset_file("acct", "ds")
    assert node.fetch_file(copy) and copy.read_text() == '{"messages": []}\n'
    assert [p.name for p in copy.parent.iterdir()] == ["data.jsonl"]  # no temporary file left


def test_a_folder_comes_back_whole_and_is_fetched_again_only_once_it_changed(url, tmp_path):
    server = on(url, tmp_path / "state")
    code = StateLayout(server.root).evaluator_code("acct", "ev")
    (code / "pkg").mkdir(parents=True)
    (code / "main.py").write_text("def evaluate(): ...\n")
    (code / "pkg" / "util.py").write_text("X = 1\n")
    server.put_dir(code)

    node = on(url, tmp_path / "node-cache")
    copy = StateLayout(node.root).evaluator_code("acct", "ev")
    assert node.fetch_dir(copy)
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == [
        "main.py",
        "pkg/util.py",
    ]
    (copy / "main.py").write_text("# the same size....\n")  # the stored version it has: left as it is
    node.fetch_dir(copy)
    assert (copy / "main.py").read_text() == "# the same size....\n"
    (copy / "pkg" / "util.py").unlink()  # a copy missing a file is fetched again
    node.fetch_dir(copy)
    assert (copy / "pkg" / "util.py").read_text() == "X = 1\n"

    (code / "pkg" / "util.py").unlink()
    (code / "main.py").write_text("def evaluate(): return 1\n")
    server.put_dir(code)  # a new version replaces the folder, files it no longer has included
    node.fetch_dir(copy)
    assert (copy / "main.py").read_text() == "def evaluate(): return 1\n"
    assert not (copy / "pkg").exists()


def test_a_missing_key_is_named_with_the_url(url, tmp_path):
    node = on(url, tmp_path / "node-cache")
    dataset = StateLayout(node.root).dataset_file("acct", "gone")
    with pytest.raises(StorageMissing) as missing:
        node.fetch_file(dataset)
    assert "accounts/acct/datasets/gone/data.jsonl" in str(missing.value) and url in str(missing.value)
    folder = StateLayout(node.root).model_dir("acct", "gone")
    with pytest.raises(StorageMissing, match=r"accounts/acct/models/gone .*" + re.escape(url)):
        node.fetch_dir(folder)
    assert node.fetch_dir(folder, missing_ok=True) is False


def test_missing_ok_removes_a_stale_local_copy(url, tmp_path):
    node = on(url, tmp_path / "node-cache")
    log = StateLayout(node.root).job_dir("acct", "job") / "worker.log"
    log.parent.mkdir(parents=True)
    log.write_text("a job of the same name, deleted since\n")
    assert node.fetch_file(log, missing_ok=True) is False
    assert not log.exists()


def test_a_folder_whose_upload_stopped_half_way_reads_as_missing(url, tmp_path, monkeypatch):
    server = on(url, tmp_path / "state")
    model = StateLayout(server.root).model_dir("acct", "m")
    model.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (model / name).write_text(name)
    fs, _ = fsspec.core.url_to_fs(url)
    real_put = fs.put_file
    calls = []

    def failing_put(source, target, *args, **kwargs):
        calls.append(target)
        if len(calls) == 2:
            raise OSError("connection reset")
        return real_put(source, target, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", failing_put)
    with pytest.raises(OSError, match="connection reset"):
        server.put_dir(model)
    monkeypatch.undo()
    assert stored_bytes(url, "accounts/acct/models/m/adapter_config.json")  # one file made it, no manifest
    node = on(url, tmp_path / "node-cache")
    with pytest.raises(StorageMissing, match="not completely written"):
        node.fetch_dir(StateLayout(node.root).model_dir("acct", "m"))
    assert node.folders(StateLayout(node.root).root / "accounts" / "acct" / "models") == []


def test_a_file_whose_upload_stopped_half_way_leaves_the_stored_one_whole(url, tmp_path, monkeypatch):
    server = on(url, tmp_path / "state")
    log = StateLayout(server.root).job_dir("acct", "job") / "worker.log"
    log.parent.mkdir(parents=True)
    log.write_text("first version\n")
    server.put_file(log)
    fs, base = fsspec.core.url_to_fs(url)

    def half_written(source, target, *args, **kwargs):
        fs.pipe_file(target, b"second ver")
        raise OSError("connection reset")

    monkeypatch.setattr(fs, "put_file", half_written)
    log.write_text("second version\n")
    with pytest.raises(OSError):
        server.put_file(log)
    monkeypatch.undo()
    assert stored_bytes(url, "accounts/acct/jobs/job/worker.log") == b"first version\n"
    assert fs.ls(f"{base}/accounts/acct/jobs/job", detail=False) == [
        f"{base}/accounts/acct/jobs/job/worker.log"
    ]


def test_a_stored_file_that_differs_from_its_manifest_is_refused(url, tmp_path):
    server = on(url, tmp_path / "state")
    code = StateLayout(server.root).evaluator_code("acct", "ev")
    code.mkdir(parents=True)
    (code / "main.py").write_text("def evaluate(): ...\n")
    server.put_dir(code)
    fs, base = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{base}/accounts/acct/evaluators/ev/code/main.py", b"tampered")
    node = on(url, tmp_path / "node-cache")
    with pytest.raises(StorageError, match=r"main.py .* 8 bytes, its folder's manifest says 20"):
        node.fetch_dir(StateLayout(node.root).evaluator_code("acct", "ev"))


def test_without_a_url_the_state_dir_is_the_storage(tmp_path):
    storage = Storage(root=tmp_path)
    dataset = StateLayout(tmp_path).dataset_file("acct", "ds")
    dataset.parent.mkdir(parents=True)
    dataset.write_text("rows\n")
    storage.put_file(dataset)
    storage.delete(dataset)
    assert storage.fetch_file(dataset) and dataset.read_text() == "rows\n"
    assert storage.location(dataset) == str(dataset.resolve())


def test_a_path_outside_the_local_copy_has_no_key(tmp_path):
    with pytest.raises(ValueError, match="is not under"):
        Storage("memory://b").on(tmp_path / "state").key(tmp_path / "elsewhere" / "x")


def test_the_url_is_a_server_setting_checked_at_start(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert configured_storage(store, tmp_path) == Storage(root=tmp_path.resolve())
        url = checked_storage_url(f"file://{tmp_path / 'bucket'}/")
        save_storage_setting(store, url)
        assert configured_storage(store, tmp_path / "cache") == Storage(url, (tmp_path / "cache").resolve())
    finally:
        store.dispose()
    assert url == f"file://{tmp_path / 'bucket'}"
    with pytest.raises(ValueError, match="Protocol not known: nope"):
        checked_storage_url("nope://bucket")
    if importlib.util.find_spec("s3fs") is None:
        with pytest.raises(ValueError, match="pip install s3fs"):
            checked_storage_url("s3://rftlab-no-such-bucket/prefix")
    with pytest.raises(ValueError, match="give a URL"):
        checked_storage_url("/plain/path")
    with pytest.raises(ValueError, match="job workers cannot reach it"):
        checked_storage_url("memory://bucket")


def test_each_completed_checkpoint_is_stored_before_its_steps_are_reported_and_resumes_elsewhere(
    url, tmp_path
):
    first = on(url, tmp_path / "node-a")
    checkpoints = StateLayout(first.root).job_dir("acct", "job") / "checkpoints"
    recorded = Recorded()
    reporter = StoringReporter(recorded, first, checkpoints, fetch_checkpoint(first, checkpoints))
    save_checkpoint_like_the_engine(checkpoints, 1)
    reporter.rollouts("train", 1, [])
    assert first.folders(checkpoints) == ["step-000001"]
    save_checkpoint_like_the_engine(checkpoints, 2)
    reporter.step({"step": 2})
    save_checkpoint_like_the_engine(checkpoints, 3, complete=False)  # the node dies while saving it
    reporter.progress(50, 0, 2, 4, 10)
    assert first.folders(checkpoints) == ["step-000002"]
    fs, base = fsspec.core.url_to_fs(url)
    half_stored = f"{base}/accounts/acct/jobs/job/checkpoints/step-000003"
    fs.makedirs(half_stored, exist_ok=True)
    fs.pipe_file(f"{half_stored}/state.pt", b"3")  # a store that stopped half-way
    save_checkpoint_like_the_engine(checkpoints, 4)
    reporter.step({"step": 4})
    assert first.folders(checkpoints, complete=False) == ["step-000004"]
    assert recorded.calls[:3] == ["rollouts", "step 2", "progress"]

    second = on(url, tmp_path / "node-b")
    copy = StateLayout(second.root).job_dir("acct", "job") / "checkpoints"
    save_checkpoint_like_the_engine(copy, 9)  # left on this node by a deleted job of the same name
    assert fetch_checkpoint(second, copy) == "step-000004"
    assert sorted(p.name for p in copy.iterdir() if not p.name.startswith(".")) == ["step-000004"]
    assert (copy / "step-000004" / "adapter" / "adapter_model.safetensors").read_bytes() == bytes(4)
    assert (copy / "step-000004" / "COMPLETE").exists()


def test_a_nodes_log_continues_the_stored_one_and_is_copied_back(url, tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # each node's cache: a temp folder of its own
    key = "accounts/acct/jobs/job/worker.log"
    first = LogCopy(url, key, "node-a")
    first.path.parent.mkdir(parents=True, exist_ok=True)
    first.path.write_text("started on node a\n")
    first.copy(final=True)
    second = LogCopy(url, key, "node-b")
    with second.path.open("a") as log:
        log.write("started on node b\n")
    second.copy()  # the first copy goes at once, the next ones at most every few seconds
    assert stored_bytes(url, key) == b"started on node a\nstarted on node b\n"
    assert second.path.is_relative_to(tmp_path / "rftlab-cache-node-b")
    assert first.path.is_relative_to(tmp_path / "rftlab-cache-node-a")
