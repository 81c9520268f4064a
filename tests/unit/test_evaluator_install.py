"""Installing an evaluator's requirements, for real (uv, offline, from a local wheel folder), inside the sandbox:
a wheel installs; a source distribution is refused by default, and when allowed its setup code runs confined
(it cannot write outside its build or read the server's files), within the install's time and disk bounds."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from package_files import make_sdist, make_wheel
from rftlab import sandbox
from rftlab.server.evaluator_build import BuildError
from rftlab.server.evaluator_env import ENVS_DIRNAME, READY_MARKER, InstallSettings, ensure_environment

MISSING = sandbox.capabilities().missing()
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"this host lacks {'; '.join(MISSING)}")


def install(state, requirements: list[str], **settings) -> tuple[str, list[str]]:
    lines: list[str] = []
    python = ensure_environment(state, requirements, lines.append, InstallSettings(**settings))
    return str(python), lines


def test_a_wheel_installs_into_a_ready_environment_that_its_python_imports(tmp_path, packages):
    make_wheel(packages, "tiny_dep", "1.0", {"tiny_dep.py": "VALUE = 42\n"})
    python, log = install(tmp_path / "state", ["tiny-dep==1.0"])
    imported = subprocess.run([python, "-c", "import tiny_dep; print(tiny_dep.VALUE)"], capture_output=True)
    assert imported.stdout.decode().strip() == "42", imported.stderr.decode()
    envs = list((tmp_path / "state" / ENVS_DIRNAME).iterdir())
    assert [env.name for env in envs] == [os.path.basename(os.path.dirname(os.path.dirname(python)))]
    assert (envs[0] / READY_MARKER).is_file()
    assert any("creating environment" in line for line in log)


def test_an_sdist_is_refused_by_default_naming_it_and_the_fix(tmp_path, packages, isolated_env):
    planted = isolated_env / "planted-by-setup"
    make_sdist(packages, "probe_pkg", "1.0", f"open({str(planted)!r}, 'w').write('x')")
    with pytest.raises(BuildError) as refused:
        install(tmp_path / "state", ["probe-pkg"])
    message = str(refused.value)
    assert "probe-pkg: no wheel for Python" in message
    assert "rftlab serve --evaluator-sdists" in message
    assert not planted.exists()
    assert not list((tmp_path / "state" / ENVS_DIRNAME).iterdir())


def test_an_allowed_sdists_setup_code_cannot_write_outside_its_build_or_read_the_servers_files(
    tmp_path, packages, isolated_env
):
    state = tmp_path / "state"
    database = state / "rftlab.db"
    other_env = state / ENVS_DIRNAME / "0123456789abcdef"
    other_env.mkdir(parents=True)
    (other_env / "module.py").write_text("SAFE = True\n")
    database.write_text("api key hashes")
    targets = {
        "home": isolated_env / "planted-by-setup",
        "other environment": other_env / "module.py",
        "state dir": state / "planted-by-setup",
    }
    setup_code = f"""
results = []
for label, path in { ({label: str(path) for label, path in targets.items()})!r}.items():
    try:
        with open(path, "a") as file:
            file.write("planted")
        results.append(label + ": written")
    except OSError as error:
        results.append(label + ": denied " + str(error.errno))
try:
    open({str(database)!r}).read()
    results.append("database: read")
except OSError as error:
    results.append("database: denied " + str(error.errno))
RESULT = "; ".join(results)
"""
    make_sdist(packages, "probe_pkg", "1.0", setup_code)
    python, _ = install(state, ["probe-pkg"], allow_sdists=True)
    ran = subprocess.run([python, "-c", "import probe_pkg; print(probe_pkg.RESULT)"], capture_output=True)
    assert ran.stdout.decode().strip() == (
        "home: denied 13; other environment: denied 13; state dir: denied 13; database: denied 13"
    ), ran.stderr.decode()
    assert not targets["home"].exists() and not targets["state dir"].exists()
    assert (other_env / "module.py").read_text() == "SAFE = True\n"


@pytest.mark.slow
def test_an_install_past_its_disk_bound_is_stopped_and_leaves_nothing(tmp_path, packages):
    fill = "import os\nfor i in range(8):\n    open(f'fill-{i}', 'wb').write(os.urandom(4 << 20))\n"
    make_sdist(packages, "disk_hog", "1.0", fill + "import time\ntime.sleep(60)\n")
    started = time.monotonic()
    with pytest.raises(BuildError, match=r"took more than 16 MB of disk .*--evaluator-env-mb"):
        install(tmp_path / "state", ["disk-hog"], allow_sdists=True, max_bytes=16 << 20)
    assert time.monotonic() - started < 30
    assert not list((tmp_path / "state" / ENVS_DIRNAME).iterdir())


@pytest.mark.slow
def test_an_install_past_its_time_is_stopped(tmp_path, packages):
    make_sdist(packages, "slow_pkg", "1.0", "import time\ntime.sleep(120)\n")
    started = time.monotonic()
    with pytest.raises(BuildError, match=r"took longer than 3 s.*--evaluator-install-minutes"):
        install(tmp_path / "state", ["slow-pkg"], allow_sdists=True, timeout_s=3)
    assert time.monotonic() - started < 30
