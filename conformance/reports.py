"""Write a run's report as JSON (source of truth), JUnit XML (CI) and self-contained HTML (people)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path
from typing import Any, Final

from conformance.clausemap import clause_map
from conformance.i18n import explain, title
from conformance.registry import LEVEL_TITLES, LEVELS
from conformance.schemadoc import check_against

COLOURS: Final = {"pass": "#1b7f3b", "fail": "#b3261e", "error": "#8a4b00", "skip": "#7a7a7a",
                  "not_applicable": "#b8c4cc"}
BARS: Final = ("pass", "fail", "error", "skip", "not_applicable")
"""Verdicts in chart order."""

LABELS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "title": "Conformance report", "accepted": "ACCEPTED", "refused": "NOT ACCEPTED",
        "accepted_text": "Every mandatory check passed.",
        "refused_text": "At least one mandatory check did not pass (a skipped or failed mandatory check "
                        "counts as not passed).",
        "profile": "Profile", "target": "Target", "tool": "Test tool", "period": "Run",
        "mandatory": "Mandatory checks passed", "pass": "passed", "fail": "failed", "skip": "skipped",
        "error": "errors", "by_level": "Results per level", "failures": "Failures and errors",
        "requires": "What the standard requires", "sent": "What the checker sent", "got": "What the target answered",
        "why": "Why it matters", "found": "Finding", "all": "All checks", "not_tested": "Not tested",
        "clauses": "Clauses of the standards", "state": "State", "checks": "Checks", "level": "Level",
        "status": "Status", "verdict": "Verdict", "reason": "Reason / note", "id": "Id", "check": "Check",
        "none": "None.", "sha": "SHA-256 of the profile", "writes": "Writes by the checker",
        "cleanup_left": "Not cleaned up", "waivers": "Waived checks", "measurements": "Measurements",
        "refs": "References", "yes": "yes", "no": "no", "tested": "tested", "partly": "partly tested",
        "mandatory_status": "mandatory", "optional_status": "optional", "waived_status": "waived",
        "v_pass": "pass", "v_fail": "fail", "v_error": "error", "v_skip": "skipped",
        "not_applicable": "not applicable", "v_not_applicable": "not applicable",
        "na_title": "Not applicable to this target",
        "na_text": "These checks do not apply to this kind of target or to what the vendor supplies and "
                   "promises; they do not block acceptance.",
    },
    "fr": {
        "title": "Rapport de conformité", "accepted": "CONFORME", "refused": "NON CONFORME",
        "accepted_text": "Toutes les vérifications obligatoires sont réussies.",
        "refused_text": "Au moins une vérification obligatoire n'est pas réussie (une vérification obligatoire "
                        "non exécutée compte comme non réussie).",
        "profile": "Profil", "target": "Cible", "tool": "Outil de test", "period": "Exécution",
        "mandatory": "Vérifications obligatoires réussies", "pass": "réussies", "fail": "échouées",
        "skip": "non exécutées", "error": "erreurs", "by_level": "Résultats par niveau",
        "failures": "Échecs et erreurs", "requires": "Ce qu'exige la norme", "sent": "Requête envoyée",
        "got": "Réponse de la cible", "why": "Pourquoi c'est important", "found": "Constat",
        "all": "Toutes les vérifications", "not_tested": "Non testé", "clauses": "Clauses des normes",
        "state": "État", "checks": "Vérifications", "level": "Niveau", "status": "Statut", "verdict": "Verdict",
        "reason": "Motif / note", "id": "Identifiant", "check": "Vérification", "none": "Aucun.",
        "sha": "Empreinte SHA-256 du profil", "writes": "Écritures par l'outil", "cleanup_left": "Non nettoyé",
        "waivers": "Dérogations", "measurements": "Mesures", "refs": "Références", "yes": "oui", "no": "non",
        "tested": "testée", "partly": "testée en partie",
        "mandatory_status": "obligatoire", "optional_status": "facultative", "waived_status": "dérogation",
        "v_pass": "réussie", "v_fail": "échec", "v_error": "erreur", "v_skip": "non exécutée",
        "not_applicable": "sans objet", "v_not_applicable": "sans objet",
        "na_title": "Sans objet pour cette cible",
        "na_text": "Ces vérifications ne s'appliquent pas à ce type de cible ni à ce que le fournisseur livre "
                   "et promet ; elles ne bloquent pas la conformité.",
    },
}

WHY_FR: Final = {
    "not selected by the profile": "non retenue par le profil",
    "not run: --only selected other checks": "non exécutée : --only a retenu d'autres vérifications",
}
"""French for the reasons the runner itself gives for a check that was not run."""

CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d1d1d;line-height:1.45;padding:0 1rem}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#f2f2f2}td:first-child{white-space:nowrap}.verdict{font-weight:700;text-transform:uppercase;font-size:.8rem}
.pass{color:#1b7f3b}.fail{color:#b3261e}.error{color:#8a4b00}.skip{color:#666}.not_applicable{color:#5f7380}
.banner{padding:1rem 1.2rem;border-radius:6px;margin:1rem 0;color:#fff;font-size:1.1rem}
.banner.ok{background:#1b7f3b}.banner.ko{background:#b3261e}.banner b{font-size:1.5rem;margin-right:.6rem}
.figures{display:flex;gap:1rem;flex-wrap:wrap}.figure{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;
min-width:8rem}.figure .n{font-size:1.6rem;font-weight:700}
pre{background:#f7f7f7;border:1px solid #e2e2e2;padding:.5rem;white-space:pre-wrap;word-break:break-word;
font-size:.8rem;max-height:30rem;overflow:auto}
.failure{border:1px solid #e0b4b0;border-left:6px solid #b3261e;padding:.6rem 1rem;margin:1rem 0;
page-break-inside:avoid;color:#1d1d1d}.failure.is-error{border-left-color:#8a4b00}
.failure h3{margin:.2rem 0 .4rem;font-size:1.05rem}
dl{margin:0}dt{font-weight:600;margin-top:.4rem}dd{margin:0 0 0 1rem}
.muted{color:#666;font-size:.85rem}
@media print{body{margin:0;max-width:none}pre{max-height:none}.banner{-webkit-print-color-adjust:exact;
print-color-adjust:exact}a{color:inherit}}
"""


def validate_report(report: dict[str, Any]) -> list[str]:
    """Problems of a report against ``report.schema.json`` (empty when valid)."""
    return check_against("report.schema.json", report)


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the JSON report."""
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def junit_xml(report: dict[str, Any]) -> str:
    """The report as JUnit XML: one test suite per level, one test case per check."""
    root = ET.Element("testsuites", name=f"jonction check — {report['profile']['id']}")
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for level in LEVELS:
        results = [r for r in report["results"] if r["level"] == level]
        if not results:
            continue
        counts = {"tests": len(results),
                  "failures": sum(r["verdict"] == "fail" for r in results),
                  "errors": sum(r["verdict"] == "error" for r in results),
                  "skipped": sum(r["verdict"] in ("skip", "not_applicable") for r in results)}
        for k, v in counts.items():
            total[k] += v
        attrs = {"name": f"{level} {LEVEL_TITLES[level]['en']}", **{k: str(v) for k, v in counts.items()},
                 "time": f"{sum(r['duration_s'] for r in results):.3f}"}
        suite = ET.SubElement(root, "testsuite", attrs)
        for r in results:
            case = ET.SubElement(suite, "testcase", classname=f"jonction.{level}", name=f"{r['id']} {r['title']}",
                                 time=f"{r['duration_s']:.3f}")
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="status", value=r["status"])
            ET.SubElement(props, "property", name="references", value="; ".join(r["references"]))
            ET.SubElement(props, "property", name="verdict", value=r["verdict"])
            tag = {"fail": "failure", "error": "error", "skip": "skipped",
                   "not_applicable": "skipped"}.get(r["verdict"])
            if tag:
                prefix = "" if r["status"] == "mandatory" else f"[{r['status']}] "
                if r["verdict"] == "not_applicable":  # JUnit has no such state: a skip that says so
                    prefix = "not applicable: " + prefix
                el = ET.SubElement(case, tag, message=prefix + r["reason"][:500])
                if tag != "skipped":
                    el.text = f"expected: {r['expects']}\n{r['reason']}"
    for k, v in total.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(report: dict[str, Any], path: Path) -> None:
    """Write the JUnit XML report."""
    path.write_text(junit_xml(report), encoding="utf-8")


def _chart(report: dict[str, Any], lang: str) -> str:
    """A horizontal stacked bar per level (pass / fail / error / skip), as inline SVG."""
    levels = [(lv, c) for lv, c in report["summary"]["by_level"].items()]
    row, left, width = 28, 330, 520
    height = row * len(levels) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{left + width + 60}" height="{height}" '
             f'viewBox="0 0 {left + width + 60} {height}" aria-label="{escape(LABELS[lang]["by_level"])}">']
    for i, (level, counts) in enumerate(levels):
        y = 10 + i * row
        total = sum(counts.get(v, 0) for v in BARS) or 1
        label = f"{level} {LEVEL_TITLES[level][lang]}"
        parts.append(f'<text x="0" y="{y + 15}" font-size="12" font-family="sans-serif">{escape(label)}</text>')
        x = float(left)
        for verdict in BARS:
            n = counts.get(verdict, 0)
            if not n:
                continue
            w = width * n / total
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="20" fill="{COLOURS[verdict]}">'
                         f'<title>{level}: {n} {escape(LABELS[lang][verdict])}</title></rect>')
            if w > 18:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 14}" font-size="11" fill="#fff" '
                             f'text-anchor="middle" font-family="sans-serif">{n}</text>')
            x += w
        parts.append(f'<text x="{left + width + 6}" y="{y + 15}" font-size="11" font-family="sans-serif">'
                     f'{counts["pass"]}/{total}</text>')
    y = 10 + len(levels) * row + 8
    x = float(left)
    for verdict in BARS:
        parts.append(f'<rect x="{x:.0f}" y="{y}" width="12" height="12" fill="{COLOURS[verdict]}"/>'
                     f'<text x="{x + 16:.0f}" y="{y + 11}" font-size="11" font-family="sans-serif">'
                     f'{escape(LABELS[lang][verdict])}</text>')
        x += 120
    parts.append("</svg>")
    return "".join(parts)


def _exchange(ex: dict[str, Any], lang: str) -> str:
    req = ex["request"]
    head = "\n".join(f"{k}: {v}" for k, v in req["headers"].items())
    sent = f"{req['method']} {req['url']}\n{head}\n\n{req['body']}".rstrip()
    resp = ex.get("response")
    if resp is None:
        got = ex.get("error", "no response")
    else:
        rhead = "\n".join(f"{k}: {v}" for k, v in resp["headers"].items())
        got = f"HTTP {resp['status']}\n{rhead}\n\n{resp['body']}".rstrip()
    return (f"<dt>{LABELS[lang]['sent']}</dt><dd><pre>{escape(sent)}</pre></dd>"
            f"<dt>{LABELS[lang]['got']}</dt><dd><pre>{escape(got)}</pre></dd>")


def _target(target: dict[str, Any]) -> str:
    parts = []
    for key, value in target.items():
        if value in (None, "", [], {}):
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"<code>{escape(key)}</code>: {escape(shown)}")
    return "<br>".join(parts)


def html_report(report: dict[str, Any], lang: str = "en") -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no external asset)."""
    lab = LABELS[lang]
    cmap = clause_map()
    s = report["summary"]
    p = report["profile"]
    ok = s["accepted"]
    out: list[str] = [
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">',
        f"<title>{escape(lab['title'])} — {escape(p['id'])}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(lab['title'])}</h1>",
        f'<p class="muted">{escape(p["title"][lang])}</p>',
        f'<div class="banner {"ok" if ok else "ko"}"><b>{lab["accepted"] if ok else lab["refused"]}</b>'
        f'{escape(lab["accepted_text"] if ok else lab["refused_text"])}</div>',
        "<table>",
        f"<tr><th>{lab['profile']}</th><td>{escape(p['id'])} {escape(p['version'])} "
        f"({escape(p['source'])})</td></tr>",
        f"<tr><th>{lab['sha']}</th><td><code>{p['sha256']}</code></td></tr>",
        f"<tr><th>{lab['target']}</th><td>{_target(report['target'])}</td></tr>",
        f"<tr><th>{lab['tool']}</th><td>{escape(report['tool']['name'])} {escape(report['tool']['version'])}</td></tr>",
        f"<tr><th>{lab['period']}</th><td>{escape(report['run']['started'])} → {escape(report['run']['ended'])} "
        f"({report['run']['duration_s']:.1f} s, run {escape(report['run']['id'])})</td></tr>",
        f"<tr><th>{lab['writes']}</th><td>{lab['yes'] if report['run']['writes'] else lab['no']} "
        f"{escape(report['run']['write_refusal'])}</td></tr>",
    ]
    if report["run"]["cleanup"]["left"]:
        out.append(f"<tr><th>{lab['cleanup_left']}</th><td>{escape('; '.join(report['run']['cleanup']['left']))}"
                   "</td></tr>")
    out.append("</table>")
    out.append('<div class="figures">')
    out.append(f'<div class="figure"><div class="n">{s["mandatory_passed"]}/{s["mandatory_total"]}</div>'
               f'{lab["mandatory"]} ({s["mandatory_rate"]:.0%})</div>')
    for v in BARS:
        out.append(f'<div class="figure"><div class="n {v}">{s.get(v, 0)}</div>{lab[v]}</div>')
    out.append("</div>")
    out.append(f"<h2>{lab['by_level']}</h2>{_chart(report, lang)}")
    if p["waivers"]:
        out.append(f"<h2>{lab['waivers']}</h2><table>")
        for w in p["waivers"]:
            out.append(f"<tr><td>{escape(w['check'])}</td><td>{escape(w['reason'])}</td></tr>")
        out.append("</table>")
    bad = [r for r in report["results"] if r["verdict"] in ("fail", "error")]
    out.append(f"<h2>{lab['failures']} ({len(bad)})</h2>")
    if not bad:
        out.append(f"<p>{lab['none']}</p>")
    for r in bad:
        refs = "; ".join(cmap.cite(x) for x in r["references"])
        out.append(f'<div class="failure is-{r["verdict"]}" id="{escape(r["id"])}">'
                   f'<h3>{escape(r["id"])} — {escape(title(r["id"], lang))} '
                   f'<span class="verdict {r["verdict"]}">{lab["v_" + r["verdict"]]}</span> '
                   f'<span class="muted">({lab[r["status"] + "_status"]})</span></h3><dl>'
                   f"<dt>{lab['found']}</dt><dd>{escape(r['reason'])}</dd>"
                   f"<dt>{lab['requires']}</dt><dd>{escape(r['expects'])}<br>"
                   f'<span class="muted">{escape(refs)}</span></dd>'
                   f"<dt>{lab['why']}</dt><dd>{escape(explain(r['id'], lang))}</dd>")
        for ex in r["evidence"]["exchanges"][-3:]:
            out.append(_exchange(ex, lang))
        for m in r["evidence"].get("measurements", []):
            out.append(f"<dt>{lab['measurements']}</dt><dd><pre>{escape(json.dumps(m, ensure_ascii=False))}</pre></dd>")
        out.append("</dl></div>")
    na = report.get("not_applicable", [])
    out.append(f'<h2 id="not-applicable">{lab["na_title"]} ({len(na)})</h2><p class="muted">{lab["na_text"]}</p>')
    if na:
        out.append(f"<table><tr><th>{lab['id']}</th><th>{lab['check']}</th><th>{lab['reason']}</th></tr>")
        for c in na:
            out.append(f"<tr><td>{escape(c['id'])}</td><td>{escape(title(c['id'], lang))}</td>"
                       f"<td>{escape(c['why'][:300])}</td></tr>")
        out.append("</table>")
    else:
        out.append(f"<p>{lab['none']}</p>")
    out.append(f"<h2>{lab['all']} ({len(report['results'])})</h2>")
    out.append(f"<table><tr><th>{lab['id']}</th><th>{lab['check']}</th><th>{lab['status']}</th>"
               f"<th>{lab['verdict']}</th><th>{lab['reason']}</th><th>{lab['refs']}</th></tr>")
    for r in report["results"]:
        out.append(f"<tr><td>{escape(r['id'])}</td><td>{escape(title(r['id'], lang))}</td>"
                   f"<td>{lab[r['status'] + '_status']}</td>"
                   f'<td class="verdict {r["verdict"]}">{lab["v_" + r["verdict"]]}</td>'
                   f'<td>{escape(r["reason"][:300])}</td>'
                   f"<td>{escape('; '.join(r['references']))}</td></tr>")
    out.append("</table>")
    nt = report["not_tested"]
    out.append(f"<h2>{lab['not_tested']} — {lab['clauses']}</h2>")
    out.append(f"<table><tr><th>Clause</th><th>{lab['state']}</th><th>{lab['checks']}</th></tr>")
    for c in nt["clauses"]:
        doc = cmap.documents.get(c["document"], {})
        name = f"{doc.get('title', c['document']).split(' — ')[0]} {doc.get('version', '')} {c['clause']} {c['title']}"
        state = {"not tested": lab["not_tested"].lower(), "tested": lab["tested"],
                 "partly tested": lab["partly"]}[c["state"]]
        cls = "skip" if c["state"] == "not tested" else "pass" if c["state"] == "tested" else "error"
        out.append(f"<tr><td>{escape(name)}</td><td class=\"{cls}\">{escape(state)}</td>"
                   f"<td>{escape(', '.join(c['checks_run']) or '—')}</td></tr>")
    out.append("</table>")
    out.append(f"<h2>{lab['not_tested']} — {lab['checks']} ({len(nt['checks'])})</h2>")
    out.append(f"<table><tr><th>{lab['id']}</th><th>{lab['check']}</th><th>{lab['reason']}</th></tr>")
    for c in nt["checks"]:
        why = WHY_FR.get(c["why"], c["why"]) if lang == "fr" else c["why"]
        out.append(f"<tr><td>{escape(c['id'])}</td><td>{escape(title(c['id'], lang))}</td>"
                   f"<td>{escape(why)}</td></tr>")
    out.append("</table>")
    out.append(f'<p class="muted">{escape(report["tool"]["name"])} {escape(report["tool"]["version"])} — '
               f"report {escape(report['report_version'])}</p></body></html>")
    return "\n".join(out)


def write_all(report: dict[str, Any], out_dir: Path, lang: str = "en") -> dict[str, Path]:
    """Write report.json, report.junit.xml and report.html into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "junit": out_dir / "report.junit.xml", "html": out_dir / "report.html"}
    write_json(report, paths["json"])
    write_junit(report, paths["junit"])
    paths["html"].write_text(html_report(report, lang), encoding="utf-8")
    return paths
