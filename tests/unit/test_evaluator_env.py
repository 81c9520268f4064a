"""Which requirements an evaluator's environment installs, and how environments are named and shared."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rftlab.server.evaluator_build import BuildError
from rftlab.server.evaluator_env import environment_key, evaluator_python, read_requirements


def test_requirement_lines_are_read_without_comments_and_named_by_their_set(tmp_path):
    (tmp_path / "requirements.txt").write_text("# judge\nnumpy>=1.26  # arrays\n\neval-protocol==0.3.33\n")
    requirements = read_requirements(tmp_path)
    assert requirements == ["numpy>=1.26", "eval-protocol==0.3.33"]
    assert environment_key(requirements) == environment_key(list(reversed(requirements)))
    assert environment_key(requirements) != environment_key(["numpy>=1.26"])


def test_an_evaluator_without_requirements_runs_on_the_servers_interpreter(tmp_path):
    assert read_requirements(tmp_path) == []
    (tmp_path / "requirements.txt").write_text("# nothing needed\n")
    assert evaluator_python(tmp_path / "state", tmp_path) == Path(sys.executable)


def test_a_missing_environment_says_to_upload_again(tmp_path):
    (tmp_path / "requirements.txt").write_text("numpy\n")
    with pytest.raises(BuildError, match="is missing; upload the evaluator again"):
        evaluator_python(tmp_path / "state", tmp_path)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("-e /srv/mypkg", "editable installs (-e) point at a local folder"),
        ("--editable=.", "editable installs (-e) point at a local folder"),
        ("/srv/mypkg", "local paths cannot be installed"),
        ("./vendor/pkg", "local paths cannot be installed"),
        ("vendor/pkg", "local paths cannot be installed"),
        ("pkg-1.0-py3-none-any.whl", "local paths cannot be installed"),
        ("file:///srv/pkg.whl", "local paths cannot be installed"),
        ("pkg @ file:///srv/pkg.whl", "local paths cannot be installed"),
        ("pkg @ git+https://example.com/pkg.git", "only https:// URLs (to a wheel) can be installed"),
        ("--index-url https://example.com/simple", "pip options are not supported"),
    ],
)
def test_lines_that_are_not_index_packages_are_refused_naming_the_line(tmp_path, line, complaint):
    (tmp_path / "requirements.txt").write_text(f"numpy\n{line}\n")
    with pytest.raises(BuildError) as refused:
        read_requirements(tmp_path)
    assert str(refused.value).startswith(f"requirements.txt line 2: {line!r}: {complaint}")


def test_plain_requirements_and_https_wheels_are_accepted(tmp_path):
    lines = [
        "numpy>=1.26",
        "requests[socks]==2.32.3 ; python_version >= '3.9'",
        "pkg @ https://example.com/p.whl",
    ]
    (tmp_path / "requirements.txt").write_text("\n".join(lines) + "\n")
    assert len(read_requirements(tmp_path)) == 3
