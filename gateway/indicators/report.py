"""Write the indicators as JSON (schema'd), CSV and a self-contained HTML report (fr or en).

The HTML fetches nothing: inline CSS, charts drawn here as inline SVG with a text alternative,
tables with captions and header cells, so a screen reader reads every figure.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from gateway import __version__
from gateway.indicators import primitives as p
from gateway.indicators.compute import Outcome, Window, monthly, value
from gateway.store.history import from_micros

SCHEMA_ID: Final = "https://jonction.eu/schemas/indicators-1.json"
"""``$schema`` of indicators.json (shipped as ``indicators.schema.json`` next to this module)."""
SCHEMA_FILE: Final = Path(__file__).with_name("indicators.schema.json")

TEXT: Final[dict[str, dict[str, str]]] = {
    "fr": {
        "title": "Indicateurs d'évaluation", "baseline": "Référence", "period": "Période", "difference": "Écart",
        "change": "Évolution", "scope": "Périmètre", "territory": "Territoire", "default": "(commune par défaut)",
        "entities": "Objets mesurés", "method": "Méthode", "unit": "Unité", "no_data": "pas de données",
        "monthly": "Valeurs mensuelles du territoire", "month": "Mois", "chart": "Référence et période par commune",
        "generated": "Produit par jonction", "from": "du", "to": "au", "summary": "Synthèse", "indicator": "Indicateur",
        "theme.lighting": "Éclairage public", "theme.waste": "Déchets", "theme.water": "Eau",
        "theme.air": "Qualité de l'air", "theme.sensors": "Les capteurs eux-mêmes", "theme.other": "Autres",
        "better.lower": "plus bas est mieux", "better.higher": "plus haut est mieux", "better.none": "",
        "colon": " : ",
        "changes": "Objets dont la valeur a le plus changé", "entity": "Objet", "commune": "Commune",
    },
    "en": {
        "title": "Evaluation indicators", "baseline": "Baseline", "period": "Period", "difference": "Difference",
        "change": "Change", "scope": "Scope", "territory": "Territory", "default": "(default commune)",
        "entities": "Things measured", "method": "Method", "unit": "Unit", "no_data": "no data",
        "monthly": "Territory figures per month", "month": "Month", "chart": "Baseline and period per commune",
        "generated": "Produced by jonction", "from": "from", "to": "to", "summary": "Summary", "indicator": "Indicator",
        "theme.lighting": "Street lighting", "theme.waste": "Waste", "theme.water": "Water",
        "theme.air": "Air quality", "theme.sensors": "The sensors themselves", "theme.other": "Other",
        "better.lower": "lower is better", "better.higher": "higher is better", "better.none": "",
        "colon": ": ",
        "changes": "Things whose figure changed most", "entity": "Thing", "commune": "Commune",
    },
}


def _round(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def _figures(outcome: Outcome, part_of: Mapping[str, p.Partial], windows: Sequence[Window],
             calendars: Mapping[str, p.Calendar]) -> dict[str, Any]:
    d = outcome.definition
    out: dict[str, Any] = {}
    for w in windows:
        part = part_of.get(w.name, p.Partial())
        out[w.name] = {"value": _round(value(d, part, calendars[w.name])), "entities": part.entities,
                       "months": {k: _round(v) for k, v in monthly(d, part).items()}}
    base, now = out[windows[0].name]["value"], out[windows[-1].name]["value"]
    out["difference"] = _round(now - base) if base is not None and now is not None else None
    out["change_percent"] = _round((now - base) / abs(base) * 100) if base and now is not None else None
    return out


def document(outcomes: Sequence[Outcome], windows: Sequence[Window], tenants: Sequence[str],
             generated_at: int) -> dict[str, Any]:
    """The content of indicators.json."""
    indicators = []
    for o in outcomes:
        d = o.definition
        calendars = {w.name: p.Calendar(w.start, w.end, d.timezone) for w in windows}
        indicators.append({
            "id": d.id, "theme": d.theme, "title": dict(d.title), "method": dict(d.method), "unit": d.unit,
            "kind": d.kind, "params": dict(d.params), "types": list(d.types), "attributes": list(d.attributes),
            "timezone": d.timezone, "per_entity": d.per_entity, "per_month": d.per_month, "better": d.better,
            "territory": _figures(o, {w.name: o.territory(w.name) for w in windows}, windows, calendars),
            "tenants": [{"tenant": t, **_figures(o, o.tenants.get(t, {}), windows, calendars)} for t in tenants],
            "entities": [
                {"tenant": t, "id": e, **{w.name: _round(v.get(w.name)) for w in windows}}
                for (t, e), v in sorted(o.entities.items())
            ],
        })
    return {
        "$schema": SCHEMA_ID,
        "generator": f"jonction {__version__}",
        "generatedAt": from_micros(generated_at),
        "windows": {w.name: {"start": from_micros(w.start), "end": from_micros(w.end)} for w in windows},
        "tenants": list(tenants),
        "indicators": indicators,
    }


def write_json(doc: Mapping[str, Any], path: Path) -> None:
    """indicators.json, UTF-8, indented."""
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_csv(doc: Mapping[str, Any], path: Path) -> None:
    """indicators.csv: one row per indicator and scope (territory, each tenant, each entity)."""
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["indicator", "unit", "scope", "tenant", "entity", "baseline", "period", "difference",
                      "change_percent", "baseline_entities", "period_entities"])
        for ind in doc["indicators"]:
            rows = [("territory", "", ind["territory"])] + [("tenant", t["tenant"], t) for t in ind["tenants"]]
            for scope, tenant, fig in rows:
                out.writerow([ind["id"], ind["unit"], scope, tenant, "", _cell(fig["baseline"]["value"]),
                              _cell(fig["period"]["value"]), _cell(fig["difference"]), _cell(fig["change_percent"]),
                              fig["baseline"]["entities"], fig["period"]["entities"]])
            for e in ind["entities"]:
                base, now = e.get("baseline"), e.get("period")
                diff = now - base if base is not None and now is not None else None
                out.writerow([ind["id"], ind["unit"], "entity", e["tenant"], e["id"], _cell(base), _cell(now),
                              _cell(diff), "", "", ""])


def _cell(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


# --------------------------------------------------------------------------- HTML

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:60rem;
padding:0 1rem;color:#1b1b1b;line-height:1.5}
h1{font-size:1.7rem}h2{font-size:1.35rem;border-bottom:2px solid #000091;padding-bottom:.2rem;margin-top:2.5rem}
h3{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;width:100%}caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{border:1px solid #929292;padding:.3rem .5rem;text-align:right}th[scope=row],th.l,td.l{text-align:left}
thead th{background:#eee}.method{background:#f6f6f6;border-left:4px solid #000091;padding:.5rem .8rem}
.good{color:#18753c}.bad{color:#ce0500}svg{max-width:100%;height:auto}.legend span{margin-right:1rem}
.sw{display:inline-block;width:.9rem;height:.9rem;vertical-align:middle;margin-right:.3rem}
"""
_BASE_COLOUR: Final = "#7b7b7b"
_PERIOD_COLOUR: Final = "#000091"


def _num(x: float | None, lang: str) -> str:
    if x is None:
        return "—"
    text = f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    if lang == "fr":
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def _tenant(name: str, t: Mapping[str, str]) -> str:
    return name if name else t["default"]


def _bars(ind: Mapping[str, Any], lang: str, t: Mapping[str, str]) -> str:
    """A horizontal bar chart: baseline and period per commune and for the territory, with a text alternative."""
    rows = [(t["territory"], ind["territory"])] + [(_tenant(x["tenant"], t), x) for x in ind["tenants"]]
    values = [v for _, fig in rows for v in (fig["baseline"]["value"], fig["period"]["value"]) if v is not None]
    if not values:
        return ""
    top = max(max(values), 0.0) or 1.0
    low = min(min(values), 0.0)
    span = top - low or 1.0
    label_w, chart_w, bar_h = 190, 420, 14
    height = len(rows) * (2 * bar_h + 12) + 10
    zero = label_w + (0 - low) / span * chart_w
    parts = []
    summary = []
    for i, (name, fig) in enumerate(rows):
        y = 5 + i * (2 * bar_h + 12)
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h + 4}" text-anchor="end" font-size="12">'
                     f'{html.escape(name[:28])}</text>')
        for j, (key, colour) in enumerate((("baseline", _BASE_COLOUR), ("period", _PERIOD_COLOUR))):
            v = fig[key]["value"]
            if v is None:
                continue
            x0 = min(zero, label_w + (v - low) / span * chart_w)
            width = abs((v - low) / span * chart_w + label_w - zero)
            yy = y + j * bar_h
            parts.append(f'<rect x="{x0:.1f}" y="{yy}" width="{max(width, 1):.1f}" height="{bar_h - 2}" '
                         f'fill="{colour}"/>')
            parts.append(f'<text x="{x0 + max(width, 1) + 4:.1f}" y="{yy + bar_h - 4}" font-size="11">'
                         f'{_num(v, lang)}</text>')
        summary.append(f"{name}: {t['baseline']} {_num(fig['baseline']['value'], lang)}, "
                       f"{t['period']} {_num(fig['period']['value'], lang)}")
    alt = f"{ind['title'][lang]} ({ind['unit']}) — " + "; ".join(summary)
    return (f'<figure><svg role="img" viewBox="0 0 {label_w + chart_w + 80} {height}" '
            f'width="{label_w + chart_w + 80}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f'<title>{html.escape(alt)}</title>'
            f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="0" y2="{height}" stroke="#333"/>{"".join(parts)}</svg>'
            f'<figcaption class="legend"><span><i class="sw" style="background:{_BASE_COLOUR}"></i>{t["baseline"]}'
            f'</span><span><i class="sw" style="background:{_PERIOD_COLOUR}"></i>{t["period"]}</span>'
            f'{html.escape(t["chart"])}</figcaption></figure>')


def _columns(ind: Mapping[str, Any], lang: str, t: Mapping[str, str]) -> str:
    """A column chart of the territory's monthly figures, baseline months then period months."""
    points = [(k, v, "baseline") for k, v in ind["territory"]["baseline"]["months"].items() if v is not None]
    points += [(k, v, "period") for k, v in ind["territory"]["period"]["months"].items() if v is not None]
    if len(points) < 2:
        return ""
    top = max(max(v for _, v, _ in points), 0.0) or 1.0
    low = min(min(v for _, v, _ in points), 0.0)
    span = top - low or 1.0
    col_w, chart_h, base_y = 34, 160, 175
    width = 40 + len(points) * col_w
    parts = []
    for i, (key, v, which) in enumerate(points):
        h = (v - low) / span * chart_h
        x = 30 + i * col_w
        colour = _BASE_COLOUR if which == "baseline" else _PERIOD_COLOUR
        parts.append(f'<rect x="{x}" y="{base_y - h:.1f}" width="{col_w - 4}" height="{max(h, 1):.1f}" '
                     f'fill="{colour}"><title>{key}: {_num(v, lang)}</title></rect>')
        parts.append(f'<text x="{x + (col_w - 4) / 2}" y="{base_y + 14}" font-size="9" text-anchor="middle">'
                     f'{key[2:4]}/{key[5:]}</text>')
    alt = f"{t['monthly']}: {ind['title'][lang]} ({ind['unit']}) — " + "; ".join(
        f"{k} {_num(v, lang)}" for k, v, _ in points)
    return (f'<figure><svg role="img" viewBox="0 0 {width} 200" width="{width}" height="200" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(alt)}</title>'
            f'<line x1="26" x2="{width}" y1="{base_y}" y2="{base_y}" stroke="#333"/>{"".join(parts)}</svg>'
            f'<figcaption>{html.escape(t["monthly"])}</figcaption></figure>')


def _movers(ind: Mapping[str, Any], lang: str, t: Mapping[str, str], count: int = 10) -> str:
    """The entities whose own figure changed most between the windows (a district meter whose night rises)."""
    both = [e for e in ind["entities"] if e.get("baseline") is not None and e.get("period") is not None]
    both.sort(key=lambda e: abs(e["period"] - e["baseline"]), reverse=True)
    if not both:
        return ""
    esc = html.escape
    rows = "".join(
        f'<tr><th scope="row" class="l">{esc(e["id"])}</th><td class="l">{esc(_tenant(e["tenant"], t))}</td>'
        f'<td>{_num(e["baseline"], lang)}</td><td>{_num(e["period"], lang)}</td>'
        f'<td>{_num(e["period"] - e["baseline"], lang)}</td></tr>'
        for e in both[:count]
    )
    return (f'<details><summary>{esc(t["changes"])} ({min(count, len(both))})</summary><table><caption>'
            f'{esc(t["changes"])} — {esc(ind["title"][lang])}</caption><thead><tr><th scope="col" class="l">'
            f'{esc(t["entity"])}</th><th scope="col" class="l">{esc(t["commune"])}</th><th scope="col">'
            f'{esc(t["baseline"])}</th><th scope="col">{esc(t["period"])}</th><th scope="col">{esc(t["difference"])}'
            f"</th></tr></thead><tbody>{rows}</tbody></table></details>")


def _change_cell(fig: Mapping[str, Any], better: str, lang: str) -> str:
    change = fig["change_percent"]
    if change is None:
        return "<td>—</td>"
    good = (change < 0 and better == "lower") or (change > 0 and better == "higher")
    bad = (change > 0 and better == "lower") or (change < 0 and better == "higher")
    klass = ' class="good"' if good else ' class="bad"' if bad else ""
    sign = "+" if change > 0 else ""
    return f"<td{klass}>{sign}{_num(change, lang)} %</td>"


def write_html(doc: Mapping[str, Any], path: Path, lang: str) -> None:
    """report.html: every indicator by theme, its method, a table and charts, in ``lang``."""
    t = TEXT[lang]
    windows = doc["windows"]
    esc = html.escape
    out = [f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{esc(t['title'])}</title><style>{_CSS}</style></head><body><main>"
           f"<h1>{esc(t['title'])}</h1>"
           f"<p>{esc(t['baseline'])}{t['colon']}{esc(t['from'])} {esc(windows['baseline']['start'])} {esc(t['to'])} "
           f"{esc(windows['baseline']['end'])}<br>{esc(t['period'])}{t['colon']}{esc(t['from'])} "
           f"{esc(windows['period']['start'])} {esc(t['to'])} {esc(windows['period']['end'])}</p>"]
    out.append(f'<table><caption>{esc(t["summary"])}</caption><thead><tr><th scope="col" class="l">'
               f'{esc(t["indicator"])}</th><th scope="col">{esc(t["unit"])}</th><th scope="col">{esc(t["baseline"])}'
               f'</th><th scope="col">{esc(t["period"])}</th><th scope="col">{esc(t["change"])}</th></tr></thead>'
               "<tbody>")
    for ind in doc["indicators"]:
        fig = ind["territory"]
        out.append(f'<tr><th scope="row"><a href="#{esc(ind["id"])}">{esc(ind["title"][lang])}</a></th>'
                   f'<td>{esc(ind["unit"])}</td><td>{_num(fig["baseline"]["value"], lang)}</td>'
                   f'<td>{_num(fig["period"]["value"], lang)}</td>{_change_cell(fig, ind["better"], lang)}</tr>')
    out.append("</tbody></table>")
    theme = None
    for ind in doc["indicators"]:
        if ind["theme"] != theme:
            theme = ind["theme"]
            out.append(f"<h2>{esc(t.get('theme.' + theme, theme))}</h2>")
        better = t["better." + ind["better"]]
        out.append(f'<section id="{esc(ind["id"])}"><h3>{esc(ind["title"][lang])}'
                   f'{" (" + esc(ind["unit"]) + ")" if ind["unit"] else ""}</h3>'
                   f'<p class="method"><strong>{esc(t["method"])}.</strong> {esc(ind["method"][lang])}'
                   f'{" — " + esc(better) if better else ""}</p>')
        out.append(f'<table><caption>{esc(ind["title"][lang])} — {esc(ind["id"])}</caption><thead><tr>'
                   f'<th scope="col" class="l">{esc(t["scope"])}</th><th scope="col">{esc(t["baseline"])}</th>'
                   f'<th scope="col">{esc(t["period"])}</th><th scope="col">{esc(t["difference"])}</th>'
                   f'<th scope="col">{esc(t["change"])}</th><th scope="col">{esc(t["entities"])}</th></tr></thead>'
                   "<tbody>")
        rows = [(t["territory"], ind["territory"])] + [(_tenant(x["tenant"], t), x) for x in ind["tenants"]]
        for name, fig in rows:
            out.append(f'<tr><th scope="row">{esc(name)}</th><td>{_num(fig["baseline"]["value"], lang)}</td>'
                       f'<td>{_num(fig["period"]["value"], lang)}</td><td>{_num(fig["difference"], lang)}</td>'
                       f'{_change_cell(fig, ind["better"], lang)}<td>{fig["baseline"]["entities"]} / '
                       f'{fig["period"]["entities"]}</td></tr>')
        out.append("</tbody></table>")
        out.append(_movers(ind, lang, t))
        out.append(_bars(ind, lang, t))
        out.append(_columns(ind, lang, t))
        out.append("</section>")
    out.append(f"<footer><p>{esc(t['generated'])} ({esc(doc['generator'])}), {esc(doc['generatedAt'])}</p>"
               "</footer></main></body></html>\n")
    path.write_text("".join(out), encoding="utf-8")
