"""Turning evaluator sources (inline files, an uploaded .py, or a tar.gz) into a code folder, and checking in a
separate Python process that its entry file imports and exposes its entry function."""

from __future__ import annotations

import shutil
import sys
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rftlab import sandbox

BUILD_TIMEOUT_S = 120
MAX_UNPACKED_BYTES = 512 << 20
MAX_UNPACKED_FILES = 20_000
DEFAULT_ENTRY_FUNC = "evaluate"

_CHECK_SCRIPT = """
import importlib.util, sys, traceback
root, entry_file, entry_func = sys.argv[1:4]
sys.path.insert(0, root)
try:
    spec = importlib.util.spec_from_file_location("rftlab_user_evaluator", f"{root}/{entry_file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
except BaseException as error:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(root)]
    where = f"{frames[-1].filename[len(root) + 1:]}, line {frames[-1].lineno}: " if frames else ""
    print(f"importing {entry_file} failed: {where}{type(error).__name__}: {error}", file=sys.stderr)
    sys.exit(2)
if not callable(getattr(module, entry_func, None)):
    print(f"{entry_file} imports but defines no function {entry_func!r}", file=sys.stderr)
    sys.exit(3)
"""


@dataclass(frozen=True)
class Entry:
    entry_file: str
    entry_func: str


class BuildError(Exception):
    pass


def safe_relative(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise BuildError(f"file path {path!r} must be relative and stay inside the evaluator folder")
    return str(pure)


def write_inline_files(code_dir: Path, files: dict[str, str]) -> None:
    reset_dir(code_dir)
    for name, text in files.items():
        target = code_dir / safe_relative(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def install_upload(code_dir: Path, upload: Path, filename: str) -> None:
    """An uploaded `.py` file becomes the folder's only file; a `.tar.gz`/`.tgz` is unpacked (a single top-level
    folder is unwrapped)."""
    reset_dir(code_dir)
    if filename.endswith(".py"):
        shutil.copyfile(upload, code_dir / filename)
        return
    if not filename.endswith((".tar.gz", ".tgz")):
        raise BuildError(f"{filename}: upload a .py file or a .tar.gz of the evaluator folder")
    try:
        with tarfile.open(upload, "r:gz") as archive:
            _refuse_oversized(archive, filename)
            archive.extractall(code_dir, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise BuildError(f"{filename}: not a readable tar.gz archive ({error})") from None
    children = list(code_dir.iterdir())
    if len(children) == 1 and children[0].is_dir():
        # moved aside first: the folder may hold an entry of its own name (`pkg/pkg/`)
        top = children[0].rename(code_dir / f".unwrap-{uuid.uuid4().hex}")
        for child in top.iterdir():
            child.rename(code_dir / child.name)
        top.rmdir()


def _refuse_oversized(archive: tarfile.TarFile, filename: str) -> None:
    """Count members and unpacked bytes before writing anything, so a small archive cannot fill the disk."""
    unpacked = 0
    for members, member in enumerate(archive, start=1):
        unpacked += member.size
        if members > MAX_UNPACKED_FILES or unpacked > MAX_UNPACKED_BYTES:
            raise BuildError(
                f"{filename}: unpacks to more than {MAX_UNPACKED_FILES} files or {MAX_UNPACKED_BYTES >> 20} MiB; "
                "leave data sets, virtual environments and checkpoints out of the evaluator folder"
            )


def reset_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def resolve_entry(
    code_dir: Path, entry_file: str | None, entry_func: str | None, entry_point: str | None
) -> Entry:
    """The entry from `entryFile`/`entryFunc`, else `entryPoint` (`path.py::function`), else `main.py` or the
    folder's only top-level .py file, with function `evaluate`."""
    if not entry_file and entry_point:
        file_part, _, func_part = entry_point.partition("::")
        entry_file, entry_func = file_part, entry_func or func_part or None
    if not entry_file:
        top_level = sorted(p.name for p in code_dir.glob("*.py"))
        if "main.py" in top_level:
            entry_file = "main.py"
        elif len(top_level) == 1:
            entry_file = top_level[0]
        else:
            raise BuildError(
                "cannot tell which file is the entry point: set criteria[0].codeSnippets.entryFile "
                "(or evaluator.entryPoint 'file.py::function')"
            )
    entry_file = safe_relative(entry_file)
    if not (code_dir / entry_file).is_file():
        raise BuildError(f"entry file {entry_file!r} is not among the evaluator's files")
    return Entry(entry_file=entry_file, entry_func=entry_func or DEFAULT_ENTRY_FUNC)


def check_entry(code_dir: Path, entry: Entry, python: Path = Path(sys.executable)) -> None:
    """Import the entry file in a fresh, sandboxed interpreter (rftlab.sandbox: it reads only the system, Python
    (`python`: the evaluator's environment, when it has one) and this code folder, without the server's secrets or
    network); BuildError says why it failed."""
    root = code_dir.resolve()
    readable = (root,) if python == Path(sys.executable) else (root, python.parent.parent)
    try:
        finished = sandbox.run(
            [
                str(python),
                "-I",
                "-B",
                "-u",
                "-c",
                _CHECK_SCRIPT,
                str(root),
                entry.entry_file,
                entry.entry_func,
            ],
            sandbox.SandboxPolicy(read_only=readable, limits=sandbox.Limits(cpu_seconds=BUILD_TIMEOUT_S)),
            cwd=root,
            timeout_s=BUILD_TIMEOUT_S,
        )
    except sandbox.SandboxUnavailable as error:
        raise BuildError(str(error)) from None
    if finished.returncode is None:
        raise BuildError(f"importing {entry.entry_file} took longer than {BUILD_TIMEOUT_S} s")
    if finished.returncode != 0:
        lines = [line for line in finished.output.strip().splitlines() if line.strip()]
        raise BuildError(lines[-1] if lines else f"the import check exited with code {finished.returncode}")
