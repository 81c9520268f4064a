"""The layers of docs/architecture.md, checked on every import (lazy ones included): the engine imports neither the
server nor the launcher, the server imports no launcher module, the wire layer imports only itself."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "src" / "rftlab"
ALLOWED = {
    "fireworks": ("rftlab.fireworks", "rftlab.paths"),
    "sandbox": ("rftlab.sandbox",),
    "engine": ("rftlab.engine", "rftlab.fireworks.contract", "rftlab.sandbox", "rftlab.paths"),
    "server": ("rftlab.server", "rftlab.engine", "rftlab.fireworks", "rftlab.sandbox", "rftlab.paths"),
}


def rftlab_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "rftlab":
            found.update(f"rftlab.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rftlab"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rftlab"))
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(layer):
    broken = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for module in rftlab_imports(path)
        if not module.startswith(ALLOWED[layer])
    ]
    assert not broken, "\n".join(broken)


def test_the_engine_reads_no_camel_case_wire_field():
    camel = (
        "trainingConfig",
        "inferenceParameters",
        "lossConfig",
        "maxOutputTokens",
        "responseCandidatesCount",
    )
    hits = [
        f"{path.name}: {word}"
        for path in (PACKAGE / "engine").glob("*.py")
        for word in camel
        if re.search(rf"[\"']{word}[\"']", path.read_text())  # a key read, not a name in a message
    ]
    assert not hits, hits


def test_job_states_and_loss_method_names_are_spelled_in_the_contract_only():
    spelled = [
        path.relative_to(PACKAGE)
        for path in PACKAGE.rglob("*.py")
        if path.name != "contract.py" and re.search(r'"(JOB_STATE_[A-Z]|GSPO_TOKEN")', path.read_text())
    ]
    assert not spelled, spelled
