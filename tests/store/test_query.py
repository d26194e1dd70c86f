"""The NGSI-LD query languages: q (§4.9), scopeQ (§4.19) and type expressions (§4.17)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.store.query import (
    MAX_Q_LENGTH,
    MAX_TERMS,
    QuerySyntaxError,
    TooComplex,
    parse_q,
    parse_scope_q,
    parse_type_expression,
)

V = "https://example.org/v/"


def expand(term: str) -> str:
    """A tiny @context: every bare term lives under V; IRIs stay as they are."""
    return term if ":" in term else V + term


def prop(value: Any, **extra: Any) -> list[dict[str, Any]]:
    return [{"type": "Property", "value": value, **extra}]


ENTITY: dict[str, Any] = {
    "id": "urn:ngsi-ld:Device:1",
    "type": [V + "Device"],
    V + "temperature": prop(21.5, observedAt="2024-05-01T10:00:00Z", unitCode="CEL",
                             **{V + "accuracy": {"type": "Property", "value": 0.2}}),
    V + "count": prop(7),
    V + "name": prop("Lampadaire Nord"),
    V + "status": prop("on"),
    V + "enabled": prop(True),
    V + "installedOn": prop({"@type": "DateTime", "@value": "2020-03-15T08:00:00Z"}),
    V + "lastSeen": prop("2024-05-01T09:59:00Z"),
    V + "day": prop("2024-05-01"),
    V + "opening": prop("08:30:00"),
    V + "tags": prop(["red", "green"]),
    V + "levels": prop([3, 9, 12]),
    V + "address": prop({"city": "Lyon", "postalCode": "69001", "geo": {"zone": "A"}}),
    V + "refBuilding": [{"type": "Relationship", "object": "urn:ngsi-ld:Building:B1"}],
    V + "label": [{"type": "LanguageProperty", "languageMap": {"fr": "Rue", "en": "Street"}}],
    V + "power": [
        {"type": "Property", "value": 100, "datasetId": "urn:ngsi-ld:Dataset:a"},
        {"type": "Property", "value": 250, "datasetId": "urn:ngsi-ld:Dataset:b"},
    ],
    V + "config": [{"type": "JsonProperty", "json": {"mode": "eco", "steps": [1, 2]}}],
    V + "category": [{"type": "VocabProperty", "vocab": V + "street"}],
}


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("temperature", True),
        ("missing", False),
        ("!missing", True),
        ("!temperature", False),
        ("temperature==21.5", True),
        ("temperature==21", False),
        ("temperature!=21", True),
        ("temperature>21", True),
        ("temperature>=21.5", True),
        ("temperature<21.5", False),
        ("temperature<=21.5", True),
        ("count==7", True),
        ("count==7.0", True),
        ('count=="7"', False),
        ("temperature==20..22", True),
        ("temperature==22..30", False),
        ("temperature!=22..30", True),
        ("temperature!=20..22", False),
        ("count==1,7,9", True),
        ("count==1,2,3", False),
        ("count!=1,2,3", True),
        ("count!=1,7", False),
        ('name=="Lampadaire Nord"', True),
        ('name=="lampadaire nord"', False),
        ("name==1", False),
        ('status=="on","off"', True),
        ('status=="a".."z"', True),
        ('status>"n"', True),
        ("name~=Lamp.*", True),
        ("name~=(?i)lampadaire", True),
        ("name~=^Nord", False),
        ("name!~=^Nord", True),
        ('name~="Nord$"', True),
        ("enabled==true", True),
        ("enabled==false", False),
        ("enabled!=false", True),
        ("installedOn>2020-01-01T00:00:00Z", True),
        ("installedOn==2020-03-15T09:00:00+01:00", True),
        ("installedOn==2020-03-15T09:00:00 01:00", True),  # "+" decoded to a space in a URL
        ("installedOn<2020-01-01T00:00:00Z", False),
        ("lastSeen==2024-05-01T00:00:00Z..2024-05-02T00:00:00Z", True),
        ("lastSeen>2024-05-01", False),
        ("lastSeen==2024-05-01", True),
        ("day==2024-05-01", True),
        ("day<2024-06-01", True),
        ("opening<09:00:00", True),
        ("opening>09:00", False),
        ('tags=="green"', True),
        ('tags=="blue"', False),
        ('tags!="blue"', True),
        ('tags!="red"', False),
        ("levels>10", True),
        ("levels>20", False),
        ('address[city]=="Lyon"', True),
        ('address[city]=="Paris"', False),
        ('address[geo.zone]=="A"', True),
        ('address[geo][zone]=="A"', True),
        ("address[country]", False),
        ("address[geo.zone]", True),
        ("temperature.accuracy<0.5", True),
        ("temperature.accuracy>0.5", False),
        ("temperature.missing", False),
        ('temperature.unitCode=="CEL"', True),
        ("temperature.observedAt>2024-04-30T00:00:00Z", True),
        ("temperature.observedAt<2024-04-30T00:00:00Z", False),
        ("temperature.observedAt", True),
        ("count.observedAt", False),
        ("refBuilding==urn:ngsi-ld:Building:B1", True),
        ('refBuilding=="urn:ngsi-ld:Building:B1"', True),
        ("refBuilding==urn:ngsi-ld:Building:B2", False),
        ("refBuilding==urn:ngsi-ld:Building:B2,urn:ngsi-ld:Building:B1", True),
        ('label=="Rue"', True),
        ('label[fr]=="Rue"', True),
        ('label[en]=="Rue"', False),
        ("power==250", True),
        ("power>300", False),
        ("power.datasetId==urn:ngsi-ld:Dataset:b", True),
        ('config[mode]=="eco"', True),
        ("config[steps]==2", True),
        ('category=="street"', True),
        ('category=="avenue"', False),
        ("category==https://example.org/v/street", True),
        ("temperature>20;count==7", True),
        ("temperature>30;count==7", False),
        ("temperature>30|count==7", True),
        ("temperature>30|count==8", False),
        ("(temperature>30|count==7);enabled==true", True),
        ("(temperature>30|count==7);enabled==false", False),
        ("temperature>30|count==7;enabled==false", False),
        ("count==7;enabled==false|temperature>20", True),
        ("((count==7))", True),
        (f"{V}count==7", True),
        ("temperature == 21.5", True),
        ("count==-1..10", True),
        ("count==1e0..1e1", True),
    ],
)
def test_q_evaluates(q: str, expected: bool) -> None:
    assert parse_q(q).evaluate(ENTITY, expand) is expected


@pytest.mark.parametrize(
    ("q", "fragment"),
    [
        ("", "empty query"),
        ("a==", "missing value"),
        ("a==foo", "unquoted value"),
        ('a=="open', "unterminated string"),
        ("(a==1", "missing ')'"),
        ("a==1)", "unexpected ')'"),
        ("a[b==1", "missing ']'"),
        ("a=1", "expected an operator"),
        ("==1", "expected an attribute name"),
        ("a==1;", "expected an attribute name"),
        ("a~=(", "invalid pattern"),
        ("a~=", "missing pattern"),
        ("a>true", "needs a number"),
        ("a==1..\"z\"", "range bounds of different kinds"),
        ("a==true..false", "a range needs"),
        ("a==2024-13-45", "invalid date"),
        ("a==2024-02-30T00:00:00Z", "invalid date-time"),
        ("a==1|", "expected an attribute name"),
        ("a..b==1", "expected an attribute name"),
    ],
)
def test_q_syntax_errors_name_the_problem_and_position(q: str, fragment: str) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_q(q)
    assert fragment in str(caught.value)
    assert "position" in str(caught.value)
    assert caught.value.status == 400 and caught.value.type == "BadRequestData"


def test_q_position_points_at_the_fault() -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_q("temperature>20;status==on")
    assert caught.value.position == len("temperature>20;status==")


def test_q_limits_raise_too_complex() -> None:
    with pytest.raises(TooComplex) as long_q:
        parse_q("a==" + "1" * MAX_Q_LENGTH)
    assert long_q.value.status == 403 and long_q.value.type == "TooComplexQuery"
    with pytest.raises(TooComplex):
        parse_q(";".join(f"a{i}==1" for i in range(MAX_TERMS + 1)))
    with pytest.raises(TooComplex):
        parse_q("(" * 40 + "a==1" + ")" * 40)
    with pytest.raises(TooComplex):
        parse_q("a~=" + "x" * 300)


def test_q_attributes_lists_the_terms() -> None:
    expr = parse_q('(temperature.accuracy>1|address[city]=="Lyon");!missing;refBuilding==urn:x:1')
    assert expr.attributes() == {"temperature", "address", "missing", "refBuilding"}
    assert [str(t.path) for t in expr.terms()] == [
        "temperature.accuracy", "address[city]", "missing", "refBuilding"
    ]


def test_q_numbers_and_strings_never_compare_equal() -> None:
    item = {V + "code": prop("42")}
    assert parse_q('code=="42"').evaluate(item, expand)
    assert not parse_q("code==42").evaluate(item, expand)
    assert not parse_q("code>1").evaluate(item, expand)


def test_q_comparison_on_missing_attribute_is_false_even_for_unequal() -> None:
    assert not parse_q("nothing!=5").evaluate(ENTITY, expand)
    assert not parse_q("nothing!~=x").evaluate(ENTITY, expand)


def test_q_booleans_are_not_numbers() -> None:
    assert not parse_q("enabled==1").evaluate(ENTITY, expand)


def test_q_core_members_addressed_by_full_iri_too() -> None:
    instance = {"type": "Property", "value": 1, "https://uri.etsi.org/ngsi-ld/observedAt": "2024-01-01T00:00:00Z"}
    item = {V + "t": [instance]}
    assert parse_q("t.observedAt==2024-01-01T00:00:00Z").evaluate(item, expand)


@pytest.mark.parametrize(
    ("scope_q", "scopes", "expected"),
    [
        ("/Madrid", ["/Madrid"], True),
        ("/Madrid", ["/Madrid/Gardens"], False),
        ("/Madrid/#", ["/Madrid"], True),
        ("/Madrid/#", ["/Madrid/Gardens/ParkNorte"], True),
        ("/Madrid/#", ["/Madridx"], False),
        ("/Madrid/+", ["/Madrid/Gardens"], True),
        ("/Madrid/+", ["/Madrid/Gardens/ParkNorte"], False),
        ("/Madrid/+", ["/Madrid"], False),
        ("/#", ["/Anything"], True),
        ("/#", [], False),
        ("/A;/B", ["/A", "/B"], True),
        ("/A;/B", ["/A"], False),
        ("/A,/B", ["/B"], True),
        ("/A|/B", ["/C"], False),
        ("(/A,/B);/C/#", ["/B", "/C/D"], True),
        ("(/A,/B);/C/#", ["/B", "/D"], False),
        ("/Lyon/Voirie/Eclairage", ["/Lyon/Voirie/Eclairage"], True),
    ],
)
def test_scope_q(scope_q: str, scopes: list[str], expected: bool) -> None:
    assert parse_scope_q(scope_q).matches(scopes) is expected


def test_scope_q_entity_without_scope_never_matches() -> None:
    assert not parse_scope_q("/#").matches(None)
    assert parse_scope_q("/A").matches("/A")


@pytest.mark.parametrize("bad", ["", "Madrid", "/A//B", "/A;", "(/A", "/A)", "/A/#/B", "/"])
def test_scope_q_syntax_errors(bad: str) -> None:
    with pytest.raises(QuerySyntaxError):
        parse_scope_q(bad)


@pytest.mark.parametrize(
    ("expression", "types", "expected"),
    [
        ("Device", [V + "Device"], True),
        ("Device", [V + "Building"], False),
        ("Device,Building", [V + "Building"], True),
        ("Device|Building", [V + "Building"], True),
        ("Device;Building", [V + "Building"], False),
        ("Device;Building", [V + "Building", V + "Device"], True),
        ("(Device;Building)|Streetlight", [V + "Streetlight"], True),
        ("(Device;Building)|Streetlight", [V + "Device"], False),
        ("Device;(Building,Streetlight)", [V + "Device", V + "Streetlight"], True),
        ("https://example.org/other/T", ["https://example.org/other/T"], True),
    ],
)
def test_type_expression(expression: str, types: list[str], expected: bool) -> None:
    assert parse_type_expression(expression).matches(types, expand) is expected


def test_type_expression_types_and_simplicity() -> None:
    expr = parse_type_expression("(A;B)|C")
    assert expr.types() == {"A", "B", "C"}
    assert not expr.is_simple()
    assert parse_type_expression("A,B,C").is_simple()
    assert parse_type_expression("A").is_simple()


@pytest.mark.parametrize("bad", ["", "A,", ";A", "(A", "A)", "A;;B"])
def test_type_expression_syntax_errors(bad: str) -> None:
    with pytest.raises(QuerySyntaxError):
        parse_type_expression(bad)
