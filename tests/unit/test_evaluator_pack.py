"""Packing an evaluator as Fireworks takes it: its folder (eval-protocol's ignores), a requirements.txt naming
eval-protocol, and a generated @evaluation_test for a plain rftlab evaluator; deterministic, so its hash names it."""

from __future__ import annotations

import io
import tarfile

import pytest

from rftlab.launch.evaluator_pack import WRAPPER_FILE, is_evaluation_test, pack
from rftlab.paths import ASSETS_DIR

EXACT_MATCH = ASSETS_DIR / "arithmetic" / "exact_match.py"
EP_TEST = """
from eval_protocol.pytest import evaluation_test

@evaluation_test(input_rows=[[]])
async def test_score(row):
    return row
"""


def folder_with(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_a_plain_evaluator_gets_a_generated_evaluation_test_and_eval_protocol_in_its_requirements(tmp_path):
    folder = folder_with(
        tmp_path / "judge",
        {
            "score.py": "def evaluate(messages, ground_truth=None, **kw):\n    return 1.0\n",
            "helpers/util.py": "X = 1\n",
            "requirements.txt": "numpy>=1.26\n",
            "outputs/2026-01-01/run/job.json": "{}",
            "__pycache__/score.cpython-311.pyc": "",
            ".env": "SECRET=1",
        },
    )
    package = pack(folder / "score.py", "evaluate")
    assert package.entry_point == f"{WRAPPER_FILE}::test_rftlab_entry"
    assert sorted(package.files) == ["helpers/util.py", "requirements.txt", "score.py", WRAPPER_FILE]
    assert package.files["requirements.txt"] == b"numpy>=1.26\neval-protocol\n"
    wrapper = package.files[WRAPPER_FILE].decode()
    assert "with_name('score.py')" in wrapper and "getattr(_module, 'evaluate')" in wrapper
    compile(wrapper, WRAPPER_FILE, "exec")
    assert is_evaluation_test(wrapper, "test_rftlab_entry")

    with tarfile.open(fileobj=io.BytesIO(package.tar_gz()), mode="r:gz") as archive:
        assert sorted(archive.getnames()) == sorted(f"judge/{name}" for name in package.files)
    assert package.archive_name == "judge.tar.gz"


def test_packing_is_deterministic_and_the_hash_follows_the_content(tmp_path):
    first = pack(EXACT_MATCH, "evaluate")
    assert first.tar_gz() == pack(EXACT_MATCH, "evaluate").tar_gz()
    assert first.sha256 == pack(EXACT_MATCH, "evaluate").sha256
    folder = folder_with(tmp_path / "e", {"e.py": "def evaluate(m, **k):\n    return 0\n"})
    before = pack(folder / "e.py", "evaluate").sha256
    (folder / "outputs").mkdir()
    (folder / "outputs" / "record.json").write_text("{}")
    assert pack(folder / "e.py", "evaluate").sha256 == before  # run records do not change the evaluator
    (folder / "data.json").write_text("[]")
    assert pack(folder / "e.py", "evaluate").sha256 != before


def test_an_evaluation_test_is_uploaded_as_it_is(tmp_path):
    folder = folder_with(
        tmp_path / "ep", {"test_score.py": EP_TEST, "requirements.txt": "eval_protocol==0.3.33\n"}
    )
    package = pack(folder / "test_score.py", "test_score")
    assert package.entry_point == "test_score.py::test_score"
    assert WRAPPER_FILE not in package.files
    assert package.files["requirements.txt"] == b"eval_protocol==0.3.33\n"


def test_a_file_named_like_the_generated_wrapper_is_refused(tmp_path):
    folder = folder_with(tmp_path / "x", {"score.py": "def evaluate(m):\n    return 1\n", WRAPPER_FILE: ""})
    with pytest.raises(ValueError, match="rftlab generates a file of that name"):
        pack(folder / "score.py", "evaluate")
