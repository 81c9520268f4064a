"""Evaluator sources become a code folder whose entry point is checked in a separate interpreter."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from rftlab.server.evaluator_build import (
    BuildError,
    Entry,
    check_entry,
    install_upload,
    resolve_entry,
    write_inline_files,
)


def test_inline_files_resolve_and_import(tmp_path):
    code = tmp_path / "code"
    write_inline_files(
        code,
        {"pkg/util.py": "X = 1\n", "main.py": "from pkg.util import X\ndef evaluate(m):\n    return X\n"},
    )
    entry = resolve_entry(code, None, None, None)
    assert entry == Entry("main.py", "evaluate")
    check_entry(code, entry)


def test_entry_point_string_is_understood(tmp_path):
    code = tmp_path / "code"
    write_inline_files(code, {"a.py": "def f(m):\n    return 1\n", "b.py": ""})
    assert resolve_entry(code, None, None, "a.py::f") == Entry("a.py", "f")
    with pytest.raises(BuildError, match="cannot tell which file"):
        resolve_entry(code, None, None, None)
    with pytest.raises(BuildError, match="not among the evaluator's files"):
        resolve_entry(code, "c.py", None, None)


def test_paths_may_not_leave_the_folder(tmp_path):
    with pytest.raises(BuildError, match="must be relative"):
        write_inline_files(tmp_path / "code", {"../escape.py": "x = 1"})


def test_import_errors_say_where_and_what(tmp_path):
    code = tmp_path / "code"
    write_inline_files(code, {"main.py": "import os\n\nraise ValueError('bad config')\n"})
    with pytest.raises(BuildError, match=r"main.py, line 3: ValueError: bad config"):
        check_entry(code, Entry("main.py", "evaluate"))


def test_the_check_runs_without_the_servers_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("FIREWORKS_API_KEY", "server-secret")
    code = tmp_path / "code"
    write_inline_files(
        code,
        {
            "main.py": "import os\nassert 'FIREWORKS_API_KEY' not in os.environ\ndef evaluate(m):\n    return 1\n"
        },
    )
    check_entry(code, Entry("main.py", "evaluate"))
    assert os.environ["FIREWORKS_API_KEY"] == "server-secret"


def test_a_tarball_with_one_top_folder_is_unwrapped(tmp_path):
    archive = tmp_path / "e.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"def evaluate(m):\n    return 1\n"
        info = tarfile.TarInfo("proj/main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    code = tmp_path / "code"
    install_upload(code, archive, "e.tar.gz")
    assert (code / "main.py").is_file()
    with pytest.raises(BuildError, match=r"upload a \.py file or a \.tar\.gz"):
        install_upload(code, archive, "e.zip")


def test_a_top_folder_holding_a_folder_of_its_own_name_is_unwrapped(tmp_path):
    archive = tmp_path / "e.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("pkg/main.py", b"from pkg.util import X\n"), ("pkg/pkg/util.py", b"X = 1\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    code = tmp_path / "code"
    install_upload(code, archive, "e.tar.gz")
    assert sorted(str(p.relative_to(code)) for p in code.rglob("*.py")) == ["main.py", "pkg/util.py"]
    assert [p.name for p in code.iterdir() if p.name.startswith(".")] == []
