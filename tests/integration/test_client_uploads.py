"""The launcher's client uploads as Fireworks takes them, against a real `rftlab serve` behind a recording proxy:
a file over the direct-upload limit goes through :getUploadEndpoint, an unauthenticated PUT and :validateUpload,
with progress reported; one under it through a single multipart :upload."""

from __future__ import annotations

from server_harness import arithmetic_jsonl
from wire_recorder import WireRecorder

from rftlab.fireworks import client as client_module
from rftlab.fireworks.client import FireworksClient


def test_a_file_over_the_direct_limit_goes_through_the_signed_url_with_progress(server, monkeypatch):
    rows = arithmetic_jsonl(40)
    monkeypatch.setattr(client_module, "DIRECT_UPLOAD_LIMIT_BYTES", 1000)  # stands in for 150 MB
    monkeypatch.setattr(client_module, "UPLOAD_CHUNK_BYTES", 512)
    seen: list[tuple[int, int]] = []
    with (
        WireRecorder(server.base_url) as wire,
        FireworksClient(wire.base_url, server.local_key(), "local") as fw,
    ):
        fw.create_dataset("big", {"userUploaded": {}, "exampleCount": "40", "format": "FORMAT_UNSPECIFIED"})
        fw.upload_dataset("big", "big.jsonl", rows, lambda sent, total: seen.append((sent, total)))
        assert fw.get_dataset("big")["state"] == "READY"
        assert fw.get_dataset("big")["exampleCount"] == "40"

        fw.create_dataset("small", {"userUploaded": {}, "exampleCount": "2", "format": "FORMAT_UNSPECIFIED"})
        fw.upload_dataset("small", "small.jsonl", arithmetic_jsonl(2))
    paths = [(e.method, e.path.split("/datasets/")[-1].split("/uploads/")[0]) for e in wire.exchanges]
    assert paths == [
        ("POST", "/v1/accounts/local/datasets"),
        ("POST", "big:getUploadEndpoint"),
        ("PUT", "/v1"),
        ("POST", "big:validateUpload"),
        ("GET", "big"),
        ("GET", "big"),
        ("POST", "/v1/accounts/local/datasets"),
        ("POST", "small:upload"),
    ]
    assert wire.exchanges[1].body == {"filenameToSize": {"big.jsonl": str(len(rows))}}
    assert not wire.exchanges[2].authorized
    assert seen[-1] == (len(rows), len(rows)) and len(seen) == -(-len(rows) // 512)
