"""The contract clause: generated from each profile, in French and English, with every required element."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conformance import __version__
from conformance.clause import render
from conformance.profile import SHIPPED, load_profile, parse_profile
from gateway.cli import main

REQUIRED = {
    "fr": ["ETSI GS CIM 009 V1.9.1", "article R. 2111-9 du code de la commande publique",
           "article R. 2151-14 du code de la commande publique", "« ou équivalent »",
           "100 % des vérifications obligatoires réussies", "vérification d'aptitude", "décision d'admission",
           "**chaque mois**", "Réversibilité", "**et leur historique complet**", "la même suite de tests ouverte",
           "UN/CEFACT", "RFC 3339", "RFC 7946", "règlement (CE) n° 765/2008", "jonction check"],
    "en": ["ETSI GS CIM 009 V1.9.1", "Article R2111-9 of the French Public Procurement Code",
           "Article R2151-14 of the French Public Procurement Code", '"or equivalent" ("ou équivalent")',
           "100 % of the mandatory checks passed", "Acceptance testing (vérification d'aptitude)",
           "Acceptance (admission)", "**every month**", "Reversibility", "**and its complete history**",
           "the same open test suite", "UN/CEFACT", "RFC 3339", "RFC 7946", "Regulation (EC) No 765/2008",
           "jonction check"],
}


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("name", SHIPPED)
def test_clause_has_every_required_element(name: str, lang: str) -> None:
    profile = load_profile(name)
    text = render(profile, lang=lang)
    for element in REQUIRED[lang]:
        assert element in text, element
    assert profile.sha256 in text and __version__ in text
    for model in profile.models:
        assert re.search(rf"\| {model['name']} \| {re.escape(model['version'])} \|", text), model
    mandatory = [cid for cid, st in profile.selection().items() if st == "mandatory"]
    annex = text.split("## ")[-1]
    assert all(f"| {cid} |" in annex for cid in mandatory)
    assert f"({len(mandatory)})" in annex
    assert "$" not in text  # every placeholder was filled
    if "Q" in profile.levels:
        assert ("période d'observation" in text) if lang == "fr" else ("observation window" in text)


def test_clause_states_thresholds_and_waivers_with_their_reasons() -> None:
    profile = parse_profile(yaml.safe_dump({
        "id": "commune-test", "version": "2.1", "title": {"fr": "Commune test", "en": "Test town"},
        "ngsi_ld": {"standard": "ETSI GS CIM 009", "version": "V1.9.1"},
        "levels": {"mandatory": ["L2", "L4"]}, "thresholds": {"notification_timeout_seconds": 30},
        "waivers": [{"check": "L4-NTF-011", "reason": "le courtier historique ne publie pas timesSent"}],
    }).encode(), "test")
    fr = render(profile, lang="fr")
    assert "délai maximal de réception d'une notification : 30 s" in fr
    assert "**L4-NTF-011** (L'abonnement enregistre ses notifications) : le courtier historique" in fr
    assert "| L4-NTF-011 |" not in fr.split("## Annexe")[-1]  # a waived check is not mandatory
    en = render(profile, lang="en")
    assert "longest wait for a notification: 30 s" in en and "Waivers granted" in en


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_clause_html_is_a_complete_document(lang: str) -> None:
    page = render(load_profile("territoire-essentiel"), lang=lang, fmt="html")
    assert page.startswith("<!DOCTYPE html>") and f'<html lang="{lang}">' in page
    assert page.count("<table>") == 3  # models, levels, annex
    assert "<h2>Article 4" in page and "<strong>ETSI GS CIM 009 V1.9.1</strong>" in page
    assert '<ol start="3">' in page  # the list of references goes on after the table of models
    assert "<script" not in page and "src=" not in page


def test_clause_command_prints_or_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clause", "--profile", "fournisseur-donnees", "--lang", "fr"]) == 0
    assert "Clause « standards ouverts" in capsys.readouterr().out
    out = tmp_path / "clause.html"
    assert main(["clause", "--profile", "territoire-complet", "--lang", "en", "--format", "html",
                 "--out", str(out)]) == 0
    assert "Open standards and interoperability" in out.read_text(encoding="utf-8")
