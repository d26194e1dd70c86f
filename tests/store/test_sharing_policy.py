"""Sharing policy files: checked before use, and the resolution rules a procurement officer reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigInvalid
from gateway.store import sharing

POLICY = """
version: 1
principals:
  syndicat:
    token_env: TEST_SYNDICAT_TOKEN
  voisin:
    token: voisin-token-0123456789
tenants:
  commune-a:
    label: Saint-Martin
    insee: "38421"
    share:
      - with: [syndicat]
        types: [AirQualityObserved, WasteContainer]
      - with: [public]
        types: [AirQualityObserved]
        attributes: [pm25, location]
        coarsen: {location_grid_m: 500}
  commune-b:
    share:
      - with: [voisin]
        types: [ParkingSpot]
        exclude_attributes: [occupancyModified]
  "-":
    share: []
views:
  syndicat-view:
    principal: syndicat
never_shared_attributes: [licencePlate]
"""


@pytest.fixture
def policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sharing.Policies:
    monkeypatch.setenv("TEST_SYNDICAT_TOKEN", "syndicat-token-abcdefghij")
    path = tmp_path / "sharing.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return sharing.load(path)


def test_tokens_name_their_principal_and_unknown_tokens_are_public(policies: sharing.Policies) -> None:
    assert policies.principal_of("syndicat-token-abcdefghij") == "syndicat"
    assert policies.principal_of("voisin-token-0123456789") == "voisin"
    assert policies.principal_of("syndicat-token-abcdefghiX") == sharing.PUBLIC
    assert policies.principal_of(None) == sharing.PUBLIC


def test_own_rule_first_then_public_then_invisible(policies: sharing.Policies) -> None:
    syndicat = policies.access("commune-a", "syndicat")
    rule = syndicat.rule_for(["AirQualityObserved"])
    assert rule is not None and rule.attributes is None  # its own rule, not the narrower public one
    assert syndicat.rule_for(["Open311ServiceRequest"]) is None
    public = policies.access("commune-a", sharing.PUBLIC)
    public_rule = public.rule_for(["AirQualityObserved"])
    assert public_rule is not None and public_rule.coarsen.location_grid_m == 500
    assert public.rule_for(["WasteContainer"]) is None
    assert policies.access("commune-b", "syndicat").sees_nothing
    assert policies.access("commune-b", "anything", owner=True).owner


def test_personal_data_is_never_shared_even_when_every_attribute_is(policies: sharing.Policies) -> None:
    rule = policies.access("commune-a", "syndicat").rule_for(["WasteContainer"])
    assert rule is not None
    assert rule.allows_attribute(["fillingLevel"], policies.personal)
    assert not rule.allows_attribute(["email"], policies.personal)
    assert not rule.allows_attribute(["licencePlate"], policies.personal)
    parking = policies.access("commune-b", "voisin").rule_for(["ParkingSpot"])
    assert parking is not None and not parking.allows_attribute(["occupancyModified"], policies.personal)


def test_labels_views_and_public_tenants(policies: sharing.Policies) -> None:
    assert policies.label("commune-a") == "Saint-Martin"
    assert policies.label("commune-b") == "commune-b"
    assert policies.insee["commune-a"] == "38421"
    assert "" in policies.rules  # "-" is the default tenant
    assert policies.view_tenants(policies.views["syndicat-view"]) == ("commune-a",)
    assert policies.public_tenants() == ("commune-a",)


def test_snapping_puts_neighbours_in_one_cell_and_moves_less_than_a_cell() -> None:
    a = sharing.snap(5.7245, 45.1885, 500)
    b = sharing.snap(5.7246, 45.1886, 500)
    assert a == b
    assert abs(a[1] - 45.1885) * 111_320 <= 500
    assert sharing.snap(5.7245, 45.1885, 500) != sharing.snap(5.80, 45.1885, 500)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("version: 1\ntenants: {a: {share: [{with: [nobody], types: [X]}]}}\n",
         "/tenants/a/share/0/with: unknown principal"),
        ("version: 1\ntenants: {a: {share: [{with: [public]}]}}\n", "/tenants/a/share/0"),
        ("version: 2\ntenants: {}\n", "/version"),
        ("version: 1\ntenants: {a: {}}\nviews: {v: {principal: ghost}}\n", "/views/v/principal"),
        ("version: 1\ntenants: {a: {}}\nprincipals: {public: {token: aaaaaaaaaaaaaaaaaaaa}}\n", "/principals"),
        ("version: 1\ntenants: [\n", "line"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        sharing.load(path)
    assert needle in str(caught.value) + " ".join(caught.value.problems)
