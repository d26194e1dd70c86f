"""jonction's own configuration in an export: sources, sinks and the files it names, secrets left out."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.reversibility.records import SECRET_MARKER
from tests.reversibility.territory import feed, jonction, lines, manifest
from tests.store.conftest import StoreServer

CONFIG = """
data_dir: ./data
admin:
  token: plain-admin-token-1234
  token_file: /etc/jonction/secrets/admin
sinks:
  - name: broker
    type: ngsi-ld
    url: https://ops:db-password-5678@broker.example/ngsi-ld/v1
sources:
  - name: lighting
    adapter: rest_mapping
    mapping: mappings/lighting.yaml
    config:
      api_key: vendor-api-key-9999
      credentials: {client_id: jonction, client_secret: oauth-secret-4321}
policies: policies.yaml
"""
POLICIES = """
policies:
  - name: open-data
    share: [Streetlight]
    with: https://opendata.example
    password: policy-password-2468
"""
MAPPING = """
id_template: "urn:ngsi-ld:Streetlight:{id}"
authorization: Bearer mapping-token-1357
"""
SECRETS = ("plain-admin-token-1234", "db-password-5678", "vendor-api-key-9999", "oauth-secret-4321",
           "policy-password-2468", "mapping-token-1357")


async def test_config_and_the_files_it_names_are_exported_without_secrets(server: StoreServer, tmp_path: Path) -> None:
    await feed(server)
    await server.stop()
    folder = tmp_path / "etc"
    (folder / "mappings").mkdir(parents=True)
    (folder / "gateway.yaml").write_text(CONFIG, encoding="utf-8")
    (folder / "policies.yaml").write_text(POLICIES, encoding="utf-8")
    (folder / "mappings" / "lighting.yaml").write_text(MAPPING, encoding="utf-8")
    out = tmp_path / "export.tar.gz"
    done = jonction("export", "--data", server.settings.data_dir, "--out", out, "--config", folder / "gateway.yaml")
    assert "3 config files" in done.stdout
    unpacked = tmp_path / "unpacked"
    import tarfile

    with tarfile.open(out) as tar:
        tar.extractall(unpacked, filter="data")
        raw = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
    for secret in SECRETS:
        assert secret.encode() not in raw, secret
    records = {r["path"]: r["document"] for r in lines(unpacked / "config.ndjson")}
    assert set(records) == {"gateway.yaml", "policies.yaml", "mappings/lighting.yaml"}
    config = records["gateway.yaml"]
    assert config["admin"] == {"token": SECRET_MARKER, "token_file": "/etc/jonction/secrets/admin"}
    assert config["sinks"][0]["url"].startswith("https://ops:") and "broker.example" in config["sinks"][0]["url"]
    assert config["sources"][0]["config"]["credentials"] == SECRET_MARKER
    assert records["policies.yaml"]["policies"][0]["share"] == ["Streetlight"]
    removed = manifest(unpacked)["secrets_removed"]
    assert "config gateway.yaml#/admin/token" in removed
    assert "config policies.yaml#/policies/0/password" in removed
    assert "config mappings/lighting.yaml#/authorization" in removed
    assert len([r for r in removed if r.startswith("config ")]) == 6
    assert json.dumps(manifest(unpacked)["totals"]["config_files"]) == "3"
