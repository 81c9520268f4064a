"""An evaluator environment a job's worker rebuilds on its node (with a storage URL) is installed within the bounds
`rftlab serve` was started with, which the worker reads from the database: here source builds allowed and a
short time bound, for real (uv, offline, from a local package folder, in the sandbox)."""

from __future__ import annotations

import pytest

from package_files import make_sdist
from rftlab import sandbox
from rftlab.server.evaluator_build import BuildError
from rftlab.server.evaluator_env import (
    InstallSettings,
    configured_install_settings,
    save_install_settings,
)
from rftlab.server.job_storage import node_evaluator_python
from rftlab.server.layout import StateLayout
from rftlab.server.limits import limits_from
from rftlab.server.serve import build_parser
from rftlab.server.storage import Storage
from rftlab.server.store import Store

MISSING = sandbox.capabilities().missing()
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"this host lacks {'; '.join(MISSING)}")


@pytest.fixture
def store(tmp_path):
    opened = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield opened
    opened.dispose()


@pytest.fixture
def node_code(tmp_path, packages):
    """A node's copy of an evaluator whose requirement is a slow source distribution, with no environment yet."""
    make_sdist(packages, "slow_pkg", "1.0", "import time\ntime.sleep(120)\n")
    node = Storage(f"file://{tmp_path / 'bucket'}").on(tmp_path / "node-cache")
    code = StateLayout(node.root).evaluator_code("acct", "ev")
    code.mkdir(parents=True)
    (code / "requirements.txt").write_text("slow-pkg==1.0\n")
    return node, code


def test_a_node_rebuild_gets_the_servers_install_settings(store, node_code):
    flags = ["--evaluator-sdists", "--evaluator-install-minutes", "0.04", "--evaluator-env-mb", "512"]
    save_install_settings(store, InstallSettings.within(limits_from(build_parser().parse_args(flags))))
    settings = configured_install_settings(store)
    assert settings == InstallSettings(timeout_s=2.4, max_bytes=512 << 20, allow_sdists=True)
    with pytest.raises(BuildError, match=r"took longer than 2\.4 s.*--evaluator-install-minutes"):
        node_evaluator_python(*node_code, settings)  # its setup code ran: source builds were allowed


def test_a_server_that_saved_none_gives_the_defaults(store, node_code):
    assert configured_install_settings(store) == InstallSettings()
    with pytest.raises(BuildError, match="rftlab serve --evaluator-sdists"):
        node_evaluator_python(*node_code, configured_install_settings(store))
