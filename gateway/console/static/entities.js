// Entities: browse by tenant and type, search by id or attribute value; one entity with units and history.

import { api, attrValue, entitiesOfType, errorBox, fmtTime, h, info, ngsiBase, shortName } from './common.js';
import { timeChart } from './chart.js';
import { t } from './i18n.js';

const CORE = new Set(['id', 'type', '@context', 'scope', 'createdAt', 'modifiedAt']);

const PERIODS = [
  { key: '1h', label: t('last hour'), seconds: 3600 },
  { key: '6h', label: t('last 6 hours'), seconds: 6 * 3600 },
  { key: '24h', label: t('last 24 hours'), seconds: 86400 },
  { key: '7d', label: t('last 7 days (min/avg/max per hour)'), seconds: 7 * 86400, aggregate: 'PT1H' },
  { key: '30d', label: t('last 30 days (min/avg/max per day)'), seconds: 30 * 86400, aggregate: 'P1D' },
];

/** A tenant picker: the tenants the gateway routes to, or free text for a store. */
async function tenantPicker(current) {
  const { tenants } = await info();
  if (tenants && tenants.length > 1) {
    return h('select', { id: 'tenant' }, tenants.map((name) => h('option', { value: name, selected: name === current }, name || t('(default)'))));
  }
  return h('input', { id: 'tenant', type: 'text', value: current, placeholder: t('(default)'), size: 12 });
}

function matches(entity, needle) {
  if (!needle) return true;
  if (entity.id.toLowerCase().includes(needle)) return true;
  return Object.entries(entity).some(([k, a]) => !CORE.has(k) && JSON.stringify(attrValue(a) ?? '').toLowerCase().includes(needle));
}

function latestObservedAt(entity) {
  let best = '';
  for (const [k, a] of Object.entries(entity)) {
    if (!CORE.has(k) && a && typeof a === 'object' && typeof a.observedAt === 'string' && a.observedAt > best) best = a.observedAt;
  }
  return best;
}

function entityHref(id, tenant) {
  return `#/entity/${encodeURIComponent(id)}${tenant ? `?tenant=${encodeURIComponent(tenant)}` : ''}`;
}

export async function renderEntities(view, _rest, params) {
  const tenantSel = await tenantPicker(params.get('tenant') || '');
  const typeSel = h('select', { id: 'etype' });
  const search = h('input', { id: 'esearch', type: 'search', placeholder: t('id or attribute value'), value: params.get('q') || '' });
  const list = h('div', { class: 'table-wrap' });
  view.append(h('h1', {}, t('Entities')),
    h('div', { class: 'toolbar' },
      h('label', { for: 'tenant' }, t('Tenant'), tenantSel),
      h('label', { for: 'etype' }, t('Type'), typeSel),
      h('label', { for: 'esearch' }, t('Search'), search)),
    list);
  let entities = [];

  async function loadTypes() {
    const tenant = tenantSel.value.trim();
    const doc = await api(`${ngsiBase()}/types`, { tenant });
    const types = (doc.typeList || []).slice().sort((a, b) => shortName(a).localeCompare(shortName(b)));
    const wanted = params.get('type');
    typeSel.replaceChildren(...types.map((iri) => h('option', { value: iri, title: iri, selected: shortName(iri) === wanted || iri === wanted }, shortName(iri))));
  }

  function show() {
    const needle = search.value.trim().toLowerCase();
    const found = entities.filter((e) => matches(e, needle));
    const tenant = tenantSel.value.trim();
    if (!found.length) {
      list.replaceChildren(h('p', { class: 'muted' }, typeSel.value ? t('No entity matches.') : t('No entity type in this tenant.')));
      return;
    }
    list.replaceChildren(h('table', { id: 'entity-list' }, h('caption', {}, t('{0} of {1} {2}', found.length, entities.length, shortName(typeSel.value))),
      h('thead', {}, h('tr', {}, ['Id', t('Name'), t('Last observed')].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, found.slice(0, 500).map((e) => {
        const nameKey = Object.keys(e).find((k) => shortName(k) === 'name');
        return h('tr', { 'data-entity': e.id }, h('td', {}, h('a', { href: entityHref(e.id, tenant) }, e.id)),
          h('td', {}, nameKey ? String(attrValue(e[nameKey])) : ''), h('td', {}, fmtTime(latestObservedAt(e))));
      }))));
  }

  async function loadEntities() {
    if (!typeSel.value) { entities = []; show(); return; }
    list.replaceChildren(h('p', { class: 'muted' }, t('Loading…')));
    try {
      const wanted = typeSel.value;
      // the first page is shown at once; the list (and the search) grows as the next ones arrive
      entities = await entitiesOfType(wanted, tenantSel.value.trim(), 5000, (sofar) => {
        if (typeSel.value === wanted) { entities = sofar.slice(); show(); }
      });
    } catch (err) {
      list.replaceChildren(errorBox(err));
      return;
    }
    show();
  }

  tenantSel.addEventListener('change', async () => { await loadTypes(); await loadEntities(); });
  typeSel.addEventListener('change', loadEntities);
  search.addEventListener('input', show);
  search.addEventListener('keydown', async (ev) => {
    // an exact id opens the entity, whatever its type
    if (ev.key === 'Enter' && /^urn:/i.test(search.value.trim())) location.hash = entityHref(search.value.trim(), tenantSel.value.trim());
  });
  await loadTypes();
  await loadEntities();
}

function displayValue(attr) {
  const v = attrValue(attr);
  if (attr && typeof attr === 'object' && 'object' in attr && typeof v === 'string') return h('a', { href: entityHref(v, '') }, v);
  if (v !== null && typeof v === 'object') return h('code', {}, JSON.stringify(v));
  return String(v);
}

export async function renderEntity(view, rest, params) {
  const id = rest.join('/');
  const tenant = params.get('tenant') || '';
  const { units } = await info();
  const entity = await api(`${ngsiBase()}/entities/${encodeURIComponent(id)}`, { tenant });
  const attrs = Object.keys(entity).filter((k) => !CORE.has(k)).sort((a, b) => shortName(a).localeCompare(shortName(b)));
  const numeric = attrs.filter((k) => entity[k] && typeof attrValue(entity[k]) === 'number');
  const rows = attrs.map((k) => {
    const a = entity[k];
    const code = a && a.unitCode;
    return h('tr', { 'data-attr': shortName(k) },
      h('th', { scope: 'row', title: k }, shortName(k)),
      h('td', {}, displayValue(a)),
      h('td', { class: 'unit', title: code ? `UN/CEFACT ${code}` : '' }, code ? (units[code] || code) : ''),
      h('td', {}, a && a.observedAt ? fmtTime(a.observedAt) : ''));
  });
  view.append(h('p', {}, h('a', { href: `#/entities?type=${encodeURIComponent(shortName(entity.type))}${tenant ? `&tenant=${encodeURIComponent(tenant)}` : ''}` }, t('← Entities'))),
    h('h1', {}, id),
    h('p', { class: 'muted' }, `${shortName(entity.type)}${tenant ? ` · ${t('tenant {0}', tenant)}` : ''}`),
    h('div', { class: 'table-wrap' }, h('table', { id: 'attributes' }, h('caption', {}, t('Attributes')),
      h('thead', {}, h('tr', {}, [t('Attribute'), t('Value'), t('Unit'), t('Observed at')].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows))));
  if (!numeric.length) return;
  const attrSel = h('select', { id: 'hist-attr' }, numeric.map((k) => h('option', { value: k, selected: shortName(k) === params.get('attr') }, shortName(k))));
  const periodSel = h('select', { id: 'hist-period' }, PERIODS.map((p) => h('option', { value: p.key, selected: p.key === (params.get('period') || '1h') }, p.label)));
  const chartBox = h('div', { id: 'chart' });
  view.append(h('h2', {}, t('History')), h('div', { class: 'toolbar' },
    h('label', { for: 'hist-attr' }, t('Attribute'), attrSel), h('label', { for: 'hist-period' }, t('Period'), periodSel)), chartBox);

  async function draw() {
    const attr = attrSel.value;
    const period = PERIODS.find((p) => p.key === periodSel.value);
    const since = new Date(Date.now() - period.seconds * 1000).toISOString();
    const q = new URLSearchParams({ attrs: attr, timerel: 'after', timeAt: since });
    if (period.aggregate) {
      q.set('options', 'aggregatedValues');
      q.set('aggrMethods', 'min,max,avg');
      q.set('aggrPeriodDuration', period.aggregate);
    } else {
      q.set('options', 'temporalValues');
      q.set('lastN', '5000');
    }
    chartBox.replaceChildren(h('p', { class: 'muted' }, t('Loading…')));
    let doc;
    try {
      doc = await api(`${ngsiBase()}/temporal/entities/${encodeURIComponent(id)}?${q}`, { tenant });
    } catch (err) {
      chartBox.replaceChildren(errorBox(err));
      return;
    }
    const series = doc[attr] || {};
    let points;
    if (period.aggregate) {
      const byStart = new Map();
      for (const method of ['avg', 'min', 'max']) {
        for (const [v, start] of series[method] || []) {
          if (typeof v !== 'number') continue;
          const p = byStart.get(start) || { t: new Date(start).getTime() };
          if (method === 'avg') p.v = v; else p[method] = v;
          byStart.set(start, p);
        }
      }
      points = [...byStart.values()].filter((p) => p.v !== undefined);
    } else {
      points = (series.values || []).filter(([v]) => typeof v === 'number').map(([v, t]) => ({ t: new Date(t).getTime(), v }));
    }
    points.sort((a, b) => a.t - b.t);
    const code = entity[attr] && entity[attr].unitCode;
    const chart = await timeChart(points, { unit: code ? (units[code] || code) : '', label: shortName(attr), width: chartBox.clientWidth - 2 }); // less the border
    if (attrSel.value === attr && periodSel.value === period.key) chartBox.replaceChildren(chart); // a later pick won
  }
  attrSel.addEventListener('change', draw);
  periodSel.addEventListener('change', draw);
  await draw();
}
