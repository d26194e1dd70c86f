"""The contract clause and its technical annex, generated from a profile (French or English)."""

from __future__ import annotations

import html
import re
from importlib.resources import files
from string import Template

from conformance import TOOL_NAME, __version__
from conformance.clausemap import clause_map
from conformance.i18n import title
from conformance.profile import Profile
from conformance.registry import LEVEL_TITLES, catalogue

TEXT: dict[str, dict[str, str]] = {
    "fr": {
        "model": "Modèle", "version": "Version du schéma", "commit": "Révision amont",
        "required": "livraison obligatoire",
        "level": "Niveau", "content": "Contenu", "req": "Exigence", "count": "Vérifications",
        "mandatory": "obligatoire", "optional": "facultatif (pour information)",
        "id": "Identifiant", "check": "Vérification", "refs": "Références",
        "waivers": "Dérogations accordées (chaque dérogation est motivée) :",
        "no_waiver": "Aucune dérogation n'est accordée.",
        "t_accept": "seuil d'acceptation : 100 % des vérifications obligatoires réussies",
        "t_max_entities": "nombre d'entités lues par modèle pour le niveau L1 : {v:g}",
        "t_notif": "délai maximal de réception d'une notification : {v:g} s",
        "t_range": "part maximale de valeurs hors des plages déclarées : {v:.1%}",
        "t_interval": "tolérance sur l'intervalle médian de remontée : +{v:.0%} de l'intervalle déclaré",
        "t_p95": "95e centile des intervalles au plus égal à {v:g} fois l'intervalle déclaré",
        "ev_q": "3. la fiche fournisseur (format YAML défini par le schéma `profile.schema.json`, bloc "
                "`quality`) déclarant, pour chaque type d'entité, l'intervalle de remontée, la complétude, "
                "la latence maximale et les plages de valeurs plausibles, sur lesquels porte le niveau Q ;",
        "ev_noq": "3. la liste des types d'entités et des modèles de données fournis, avec leur version ;",
        "window": "Le niveau Q est mesuré sur une période d'observation de {w} (interrogation toutes les "
                  "{p}), contre la fiche fournisseur jointe à l'offre.",
        "days": "{n:g} jour(s)", "hours": "{n:g} heure(s)", "minutes": "{n:g} minute(s)", "seconds": "{n:g} s",
    },
    "en": {
        "model": "Model", "version": "Schema version", "commit": "Upstream revision",
        "required": "must be delivered",
        "level": "Level", "content": "Content", "req": "Requirement", "count": "Checks",
        "mandatory": "mandatory", "optional": "optional (for information)",
        "id": "Id", "check": "Check", "refs": "References",
        "waivers": "Waivers granted (each with its written reason):",
        "no_waiver": "No waiver is granted.",
        "t_accept": "acceptance threshold: 100 % of the mandatory checks passed",
        "t_max_entities": "entities read per model for level L1: {v:g}",
        "t_notif": "longest wait for a notification: {v:g} s",
        "t_range": "largest share of values outside the declared ranges: {v:.1%}",
        "t_interval": "tolerance on the median reporting interval: +{v:.0%} of the declared interval",
        "t_p95": "95th percentile of intervals at most {v:g} times the declared interval",
        "ev_q": "3. the vendor sheet (YAML as defined by `profile.schema.json`, `quality` block) declaring, "
                "for each entity type, the reporting interval, completeness, maximum latency and plausible "
                "value ranges that level Q measures;",
        "ev_noq": "3. the list of entity types and data models supplied, with their versions;",
        "window": "Level Q is measured over an observation window of {w} (one poll every {p}), against the "
                  "vendor sheet attached to the tender.",
        "days": "{n:g} day(s)", "hours": "{n:g} hour(s)", "minutes": "{n:g} minute(s)", "seconds": "{n:g} s",
    },
}


def _duration(seconds: float, t: dict[str, str]) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return t[unit].format(n=seconds / size)
    return t["seconds"].format(n=seconds)


def _models(profile: Profile, t: dict[str, str]) -> str:
    rows = [f"   | {t['model']} | {t['version']} | {t['commit']} |", "   |---|---|---|"]
    for m in profile.models:
        commit = ""
        try:
            import schemas

            spec = schemas.model(m["name"])
            commit = f"{spec.upstream_subject} {spec.upstream_commit[:12]}".strip()
        except Exception:  # a model jonction does not bundle has no upstream record
            commit = "—"
        # Every model conforms when delivered; only those marked must be delivered by every target.
        name = f"{m['name']} ({t['required']})" if m.get("required") else m["name"]
        rows.append(f"   | {name} | {m['version']} | {commit or '—'} |")
    if not profile.models:
        rows.append("   | — | — | — |")
    return "\n".join(rows)


def _levels(profile: Profile, lang: str, t: dict[str, str]) -> str:
    selection = profile.selection()
    cat = catalogue()
    rows = [f"| {t['level']} | {t['content']} | {t['req']} | {t['count']} |", "|---|---|---|---|"]
    for level in profile.levels:
        n = sum(1 for cid, st in selection.items() if cat[cid].level == level and st == "mandatory")
        req = t["mandatory"] if level in profile.mandatory_levels else t["optional"]
        rows.append(f"| {level} | {LEVEL_TITLES[level][lang]} | {req} | {n} |")
    return "\n".join(rows)


def _thresholds(profile: Profile, t: dict[str, str]) -> str:
    lines = [f"- {t['t_accept']} ;" if t is TEXT["fr"] else f"- {t['t_accept']};"]
    levels = set(profile.levels)
    wanted = [("L1", "t_max_entities", "max_entities_per_type"), ("L4", "t_notif", "notification_timeout_seconds"),
              ("Q", "t_range", "max_out_of_range_rate"), ("Q", "t_interval", "interval_tolerance"),
              ("Q", "t_p95", "interval_p95_factor")]
    for level, key, name in wanted:
        if level in levels:
            lines.append(f"- {t[key].format(v=profile.threshold(name))}" + (" ;" if t is TEXT["fr"] else ";"))
    lines[-1] = lines[-1].rstrip(" ;") + "."
    return "\n".join(lines)


def _waivers(profile: Profile, t: dict[str, str], lang: str) -> str:
    if not profile.waivers:
        return t["no_waiver"]
    lines = [t["waivers"], ""]
    for cid, reason in profile.waivers.items():
        lines.append(f"- **{cid}** ({title(cid, lang)}) : {reason}" if t is TEXT["fr"]
                     else f"- **{cid}** ({title(cid, lang)}): {reason}")
    return "\n".join(lines)


def _checks(profile: Profile, t: dict[str, str], lang: str) -> tuple[str, int]:
    cat = catalogue()
    cmap = clause_map()
    rows = [f"| {t['id']} | {t['level']} | {t['check']} | {t['refs']} |", "|---|---|---|---|"]
    n = 0
    for cid, st in profile.selection().items():
        if st != "mandatory":
            continue
        n += 1
        refs = "; ".join(cmap.references(cid)).replace("|", "/")
        rows.append(f"| {cid} | {cat[cid].level} | {title(cid, lang).replace('|', '/')} | {refs} |")
    return "\n".join(rows), n


def markdown(profile: Profile, lang: str = "fr") -> str:
    """The clause and its annex in Markdown."""
    t = TEXT[lang]
    template = Template(files("conformance").joinpath("templates", f"clause.{lang}.md").read_text(encoding="utf-8"))
    checks, count = _checks(profile, t, lang)
    quality = "Q" in profile.levels
    window = ""
    if quality:
        window = t["window"].format(w=_duration(float(profile.quality.get("window_seconds", 3600)), t),
                                    p=_duration(float(profile.quality.get("poll_interval_seconds", 60)), t))
    summary = profile.doc.get("summary", {}).get(lang, "")
    return template.substitute(
        profile_id=profile.id, profile_version=profile.version, profile_title=profile.title[lang],
        profile_sha=profile.sha256, profile_summary=summary, tool=TOOL_NAME, tool_version=__version__,
        models_table=_models(profile, t), levels_table=_levels(profile, lang, t),
        thresholds=_thresholds(profile, t), waivers=_waivers(profile, t, lang),
        evidence_quality=t["ev_q"] if quality else t["ev_noq"], quality_window=window,
        mandatory_count=count, checks_table=checks,
    )


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"\*(.+?)\*", r"<em>\1</em>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def to_html(md: str, lang: str) -> str:
    """Render the small Markdown subset the templates use as a self-contained HTML page."""
    body: list[str] = []
    para: list[str] = []
    table: list[list[str]] = []
    items: list[tuple[str, str]] = []
    start = [1]

    def flush() -> None:
        if para:
            body.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if table:
            head, rows = table[0], table[2:]
            body.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead>"
                        "<tbody>" + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                                            for r in rows) + "</tbody></table>")
            table.clear()
        if items:
            # A numbered list cut by a table goes on with its own numbers (<ol start>).
            tag = "ol" if items[0][0] == "ol" else "ul"
            first = f' start="{start[0]}"' if tag == "ol" and start[0] != 1 else ""
            body.append(f"<{tag}{first}>" + "".join(f"<li>{_inline(x)}</li>" for _, x in items) + f"</{tag}>")
            items.clear()

    for raw in md.splitlines():
        line = raw.strip()
        if not line:
            if not items:
                flush()
            continue
        if line.startswith("|"):
            if para or items:
                flush()
            table.append([c.strip() for c in line.strip("|").split("|")])
            continue
        if table:
            flush()
        if line.startswith("#"):
            flush()
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("> "):
            flush()
            body.append(f"<blockquote>{_inline(line[2:])}</blockquote>")
        elif re.match(r"^\d+\. ", line):
            if para:
                flush()
            if not items:
                start[0] = int(line.split(". ", 1)[0])
            items.append(("ol", line.split(". ", 1)[1]))
        elif line.startswith("- "):
            if para:
                flush()
            items.append(("ul", line[2:]))
        elif items and raw.startswith("   "):
            kind, text = items[-1]
            items[-1] = (kind, text + " " + line)
        else:
            if items:
                flush()
            para.append(line)
    flush()
    merged = re.sub(r"</blockquote>\s*<blockquote>", " ", "\n".join(body))
    css = ("body{font-family:Georgia,'Times New Roman',serif;max-width:900px;margin:2rem auto;padding:0 1rem;"
           "line-height:1.5;color:#111}table{border-collapse:collapse;width:100%;font-size:.85rem}"
           "td,th{border:1px solid #999;padding:.25rem .4rem;text-align:left}th{background:#eee}"
           "blockquote{border-left:4px solid #999;margin:1rem 0;padding:.2rem 1rem;color:#444}"
           "code{font-size:.85em}@media print{body{margin:0}}")
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>Clause</title>'
            f"<style>{css}</style></head><body>\n{merged}\n</body></html>\n")


def render(profile: Profile, *, lang: str = "fr", fmt: str = "md") -> str:
    """The clause in ``lang`` (fr or en) as Markdown or HTML."""
    md = markdown(profile, lang)
    return md if fmt == "md" else to_html(md, lang)



