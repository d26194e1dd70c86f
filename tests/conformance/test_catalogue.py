"""The catalogue of checks and the clause map: stable ids, complete descriptions, every check mapped."""

from __future__ import annotations

import re
from collections import Counter

import schemas
from conformance.checks.l1_data import MODEL_CHECKS
from conformance.clausemap import clause_map
from conformance.registry import LEVELS, RETIRED, catalogue


def test_at_least_150_checks_across_l1_to_l6() -> None:
    counts = Counter(c.level for c in catalogue().values())
    assert sum(n for lv, n in counts.items() if lv != "Q") >= 150, counts
    assert all(counts[lv] > 0 for lv in LEVELS), counts


def test_ids_are_stable_in_form_and_never_reused() -> None:
    cat = catalogue()
    assert all(re.fullmatch(r"(L[1-6]|Q)-[A-Z]{3}-\d{3}", cid) for cid in cat)
    assert all(cid.split("-")[0] == c.level for cid, c in cat.items())
    assert not set(RETIRED) & set(cat)


def test_every_check_is_described_for_a_non_specialist() -> None:
    for cid, chk in catalogue().items():
        for field in ("title", "sends", "expects", "explain"):
            text = getattr(chk, field)
            assert isinstance(text, str) and len(text) >= 3, (cid, field)
        assert chk.explain[0].isupper() and chk.explain.endswith("."), cid


def test_clause_map_covers_exactly_the_catalogue() -> None:
    cmap = clause_map()
    assert set(cmap.checks) == set(catalogue())
    for cid, refs in cmap.checks.items():
        assert refs, cid
        for ref in refs:
            doc, _, section = ref.partition(" ")
            assert doc in cmap.documents, ref
            if doc == "CIM009":
                assert section in cmap.clauses["CIM009"], ref
    assert cmap.documents["CIM009"]["version"] == "V1.9.1"


def test_every_bundled_model_has_its_own_check() -> None:
    missing = sorted(set(schemas.MODELS) - set(MODEL_CHECKS))
    assert not missing, f"give {missing} the next L1-SDM ids in conformance/checks/l1_data.py and clauses.yaml"
    assert set(MODEL_CHECKS) <= set(schemas.MODELS)
    assert len(set(MODEL_CHECKS.values())) == len(MODEL_CHECKS)
    for model, cid in MODEL_CHECKS.items():
        chk = catalogue()[cid]
        assert chk.model == model
        assert schemas.model(model).upstream_version in chk.expects
        assert clause_map().references(cid) == [f"SDM {model}"]


def test_conformance_facts_are_each_covered() -> None:
    """The facts of the design note each have at least one check (error types, media types, tenancy...)."""
    text = {cid: f"{c.title} {c.expects}" for cid, c in catalogue().items()}
    wanted = ["BadRequestData", "InvalidRequest", "AlreadyExists", "ResourceNotFound", "NonexistentTenant",
              "LdContextNotAvailable", "415", "411", "406", "Link", "@context", "keyValues", "concise",
              "sysAttrs", "NGSILD-Results-Count", 'rel="next"', "NGSILD-Tenant", "207", "201", "204", "401",
              "application/geo+json", "merge-patch+json", "limit=0"]
    for fact in wanted:
        assert any(fact in t for t in text.values()), fact


def test_every_check_has_a_french_title() -> None:
    """The French clause annex and report never fall back to English titles."""
    from conformance.i18n import _french, title

    cat = catalogue()
    assert set(_french()) == {cid for cid, c in cat.items() if c.model is None}
    for cid in cat:
        assert title(cid, "fr") != title(cid, "en"), cid
    expected = "Les entités de type WasteContainer respectent le Smart Data Model WasteContainer"
    assert title("L1-SDM-020", "fr") == expected


def test_every_check_explains_itself_in_french() -> None:
    from conformance.i18n import _load, explain

    cat = catalogue()
    assert set(_load("explain.fr.yaml")) == {cid for cid, c in cat.items() if c.model is None}
    assert all(explain(cid, "fr") != explain(cid, "en") for cid in cat)
