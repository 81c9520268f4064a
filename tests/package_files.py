"""Tiny Python packages written by hand, so that installs can be tested offline: a wheel, and a source
distribution whose in-tree build backend runs whatever setup code a test gives it."""

from __future__ import annotations

import inspect
import io
import tarfile
import textwrap
from pathlib import Path


def write_wheel(folder: str, name: str, version: str, files: dict[str, str]) -> str:
    """A pure-Python wheel of `files` (paths inside site-packages) in `folder`; its file name. Self-contained: the
    sdist's build backend runs a copy of it."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        **files,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    filename = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(f"{folder}/{filename}", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
        wheel.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return filename


def make_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / write_wheel(str(folder), name, version, files)


def make_sdist(folder: Path, name: str, version: str, setup_code: str) -> Path:
    """A source distribution in `folder` whose build backend first runs `setup_code` (which may set RESULT, a
    string), then builds a wheel holding a module `name` with `RESULT = <that string>`."""
    backend = inspect.getsource(write_wheel) + textwrap.dedent(
        f"""

        def get_requires_for_build_wheel(config_settings=None):
            return []


        def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
            scope = {{"RESULT": ""}}
            exec({setup_code!r}, scope)
            module = f"RESULT = {{scope['RESULT']!r}}\\n"
            return write_wheel(wheel_directory, {name!r}, {version!r}, {{"{name}.py": module}})
        """
    )
    files = {
        "pyproject.toml": textwrap.dedent(
            f"""\
            [build-system]
            requires = []
            build-backend = "backend"
            backend-path = ["."]

            [project]
            name = "{name}"
            version = "{version}"
            """
        ),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        "backend.py": backend,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for relative, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{relative}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path
