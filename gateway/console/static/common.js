// Shared helpers of the console: DOM and SVG builders, API calls with the session cookie, formatting.

import { t } from './i18n.js';

export const SVG_NS = 'http://www.w3.org/2000/svg';

/** An HTML element: h('td', {class: 'x', onclick: f}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** An SVG element. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
}

/** The console's own description (mode, tenants, unit symbols), fetched once. */
let infoPromise = null;
export function info() {
  if (!infoPromise) infoPromise = api('/console/api/info');
  return infoPromise;
}

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

/** Call one of this server's APIs; JSON in and out; a 401 sends the operator to the login page. */
export async function api(path, { method = 'GET', body, tenant, accept = 'application/json' } = {}) {
  const headers = { Accept: accept };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') headers['Content-Type'] = 'application/json';
  if (tenant) headers['NGSILD-Tenant'] = tenant;
  const resp = await fetch(path, {
    method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) {
    location.assign('/console/login');
    throw new ApiError(401, 'log in first');
  }
  const text = await resp.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch { doc = text; }
  if (!resp.ok && resp.status !== 422) {
    const detail = (doc && (doc.detail || doc.title)) || `${resp.status} ${resp.statusText}`;
    throw new ApiError(resp.status, detail, doc);
  }
  return doc;
}

/** The NGSI-LD base path of this server ('' when it serves none). */
export function ngsiBase() {
  return document.body.dataset.ngsi || '';
}

/** The short name of an IRI: its last path segment or fragment (an IRI ending in /WasteContainer -> WasteContainer). */
export function shortName(iri) {
  if (typeof iri !== 'string') return String(iri);
  const m = /[/#:]([^/#:]+)$/.exec(iri);
  return iri.includes('://') && m ? m[1] : iri;
}

/** A date-time as the operator's local time, 'YYYY-MM-DD HH:MM:SS'. */
export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** How long ago, '12 s ago', '3 min ago'. */
export function ago(iso) {
  if (!iso) return '';
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (Number.isNaN(seconds)) return '';
  if (seconds < 60) return t('{0} s ago', Math.max(seconds, 0));
  if (seconds < 3600) return t('{0} min ago', Math.round(seconds / 60));
  if (seconds < 86400) return t('{0} h ago', Math.round(seconds / 3600));
  return t('{0} d ago', Math.round(seconds / 86400));
}

/** A duration in seconds, readable. */
export function fmtAge(seconds) {
  if (!seconds) return '0 s';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** An error box in the view. */
export function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, err instanceof Error ? err.message : String(err));
}

/** The value of an NGSI-LD attribute (Property value, Relationship object, GeoProperty value). */
export function attrValue(attr) {
  if (attr === null || typeof attr !== 'object') return attr;
  if (Array.isArray(attr)) return attrValue(attr[0]);
  if ('value' in attr) return attr.value;
  if ('object' in attr) return attr.object;
  if ('languageMap' in attr) return attr.languageMap;
  return attr;
}

/** A point [lon, lat] for an entity's location (a Point, or the first vertex of other geometries). */
export function entityPoint(entity) {
  const loc = entity.location && attrValue(entity.location);
  if (!loc || typeof loc !== 'object') return null;
  let c = loc.coordinates;
  while (Array.isArray(c) && Array.isArray(c[0])) c = c[0];
  if (!Array.isArray(c) || c.length < 2 || typeof c[0] !== 'number' || typeof c[1] !== 'number') return null;
  return [c[0], c[1]];
}

/** Every entity of one type (up to `max`), following the NGSI-LD pages. */
export async function entitiesOfType(type, tenant, max = 5000, onPage = null) {
  const out = [];
  const pageSize = 1000;
  for (let offset = 0; offset < max; offset += pageSize) {
    const page = await api(`${ngsiBase()}/entities?type=${encodeURIComponent(type)}&limit=${pageSize}&offset=${offset}`,
      { tenant, accept: 'application/json' });
    out.push(...page);
    if (page.length < pageSize) break;
    if (onPage) onPage(out); // more to come: let the caller show what is there
  }
  return out;
}
