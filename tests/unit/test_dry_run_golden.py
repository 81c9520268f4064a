"""Dry runs render the same request bodies, byte for byte, as recorded in tests/golden/dry_run/: the default, every
`experiment=` and every point of every sweep file. A change to what rftlab sends shows up here first."""

from pathlib import Path

import pytest

from rftlab import cli

GOLDEN = Path(__file__).parents[1] / "golden" / "dry_run"
LAUNCHES = {
    "default": [],
    **{
        f"experiment-{path.stem}": [f"experiment={path.stem}"]
        for path in GOLDEN.parents[2].glob("conf/experiment/*.yaml")
    },
    **{f"sweep-{path.stem}": [f"sweeps={path.stem}"] for path in GOLDEN.parents[2].glob("sweeps/*.yaml")},
}


@pytest.mark.parametrize("name", sorted(LAUNCHES))
def test_the_dry_run_request_is_byte_identical_to_the_recorded_one(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["launch", *LAUNCHES[name], "dry_run=true", "output=json"]) == 0
    assert capsys.readouterr().out == (GOLDEN / f"{name}.json").read_text()
