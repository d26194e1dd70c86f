// Map: located entities as SVG markers over the operator's GeoJSON outlines, coloured, clustered, clickable.

import { api, attrValue, entitiesOfType, entityPoint, errorBox, h, info, ngsiBase, s, shortName } from './common.js';
import { t } from './i18n.js';

const W = 900;
const H = 600;
const CELL = 32; // markers closer than this (in screen pixels) are drawn as one cluster
const PALETTE = ['#1f5fa8', '#c2410c', '#15803d', '#7e22ce', '#b91c1c', '#0e7490', '#a16207', '#be185d', '#4d7c0f', '#475569'];

function eachCoord(geometry, fn) {
  const walk = (c) => {
    if (Array.isArray(c) && typeof c[0] === 'number') fn(c);
    else if (Array.isArray(c)) c.forEach(walk);
  };
  if (geometry && geometry.type === 'GeometryCollection') (geometry.geometries || []).forEach((g) => eachCoord(g, fn));
  else if (geometry) walk(geometry.coordinates);
}

/** An equirectangular projection fitted to a lon/lat box, with cos(latitude) scaling. */
function projection(box) {
  const lat0 = ((box[1] + box[3]) / 2) * Math.PI / 180;
  const kx = Math.cos(lat0);
  const spanX = Math.max((box[2] - box[0]) * kx, 1e-4);
  const spanY = Math.max(box[3] - box[1], 1e-4);
  const scale = 0.9 * Math.min(W / spanX, H / spanY);
  const cx = (box[0] + box[2]) / 2;
  const cy = (box[1] + box[3]) / 2;
  return ([lon, lat]) => [W / 2 + (lon - cx) * kx * scale, H / 2 - (lat - cy) * scale];
}

function pathOf(geometry, project) {
  const ring = (r) => r.map((c, i) => `${i ? 'L' : 'M'}${project(c).map((v) => v.toFixed(1)).join(',')}`).join('');
  switch (geometry.type) {
    case 'Polygon': return geometry.coordinates.map((r) => ring(r) + 'Z').join('');
    case 'MultiPolygon': return geometry.coordinates.map((p) => p.map((r) => ring(r) + 'Z').join('')).join('');
    case 'LineString': return ring(geometry.coordinates);
    case 'MultiLineString': return geometry.coordinates.map(ring).join('');
    default: return '';
  }
}

/** A colour function for the chosen key: type (categorical), a numeric attribute (scale) or any other (categorical). */
function colouring(items, key) {
  const valueOf = (it) => (key === '@type' ? shortName(it.entity.type) : (() => {
    const k = Object.keys(it.entity).find((name) => shortName(name) === key);
    return k === undefined ? undefined : attrValue(it.entity[k]);
  })());
  const values = items.map(valueOf);
  const numbers = values.filter((v) => typeof v === 'number');
  if (key !== '@type' && numbers.length && numbers.length === values.filter((v) => v !== undefined).length) {
    const lo = Math.min(...numbers);
    const hi = Math.max(...numbers);
    const colour = (v) => (typeof v !== 'number' ? '#9ca3af' : `hsl(${(220 - (hi === lo ? 0.5 : (v - lo) / (hi - lo)) * 220).toFixed(0)}, 70%, 45%)`);
    return { of: (it) => colour(valueOf(it)), legend: [[`${+lo.toPrecision(4)}`, colour(lo)], [`${+hi.toPrecision(4)}`, colour(hi)], [t('no value'), '#9ca3af']] };
  }
  const cats = [...new Set(values.map((v) => (v === undefined ? '(none)' : typeof v === 'object' ? JSON.stringify(v) : String(v))))].sort();
  const colourOf = new Map(cats.map((c, i) => [c, c === '(none)' ? '#9ca3af' : PALETTE[i % PALETTE.length]]));
  const name = (v) => (v === undefined ? '(none)' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  return { of: (it) => colourOf.get(name(valueOf(it))), legend: cats.map((c) => [c, colourOf.get(c)]) };
}

export async function renderMap(view, _rest, params) {
  const { tenants } = await info();
  const tenant = params.get('tenant') || '';
  const outlines = await api('/console/api/outlines');
  const typeList = (await api(`${ngsiBase()}/types`, { tenant })).typeList || [];
  const items = [];
  for (const type of typeList) {
    for (const entity of await entitiesOfType(type, tenant)) {
      const p = entityPoint(entity);
      if (p) items.push({ entity, lonlat: p });
    }
  }
  const box = [Infinity, Infinity, -Infinity, -Infinity];
  const grow = ([lon, lat]) => { box[0] = Math.min(box[0], lon); box[1] = Math.min(box[1], lat); box[2] = Math.max(box[2], lon); box[3] = Math.max(box[3], lat); };
  items.forEach((it) => grow(it.lonlat));
  for (const f of outlines.features || []) eachCoord(f.geometry, grow);
  if (!Number.isFinite(box[0])) {
    view.append(h('h1', {}, t('Map')), h('p', { class: 'muted' }, t('No entity with a location in this tenant.')));
    return;
  }
  const project = projection(box);
  const attrNames = [...new Set(items.flatMap((it) => Object.keys(it.entity).filter((k) => !['id', 'type', 'location', '@context'].includes(k)).map(shortName)))].sort();
  const tenantSel = tenants && tenants.length > 1
    ? h('select', { id: 'map-tenant' }, tenants.map((name) => h('option', { value: name, selected: name === tenant }, name || t('(default)'))))
    : null;
  const colourSel = h('select', { id: 'map-colour' }, h('option', { value: '@type' }, t('type')),
    attrNames.map((n) => h('option', { value: n, selected: n === params.get('colour') }, n)));
  const zoomIn = h('button', { type: 'button', 'aria-label': t('zoom in') }, '+');
  const zoomOut = h('button', { type: 'button', 'aria-label': t('zoom out') }, '−');
  const reset = h('button', { type: 'button' }, t('Fit'));
  const legend = h('ul', { class: 'legend', 'aria-label': t('legend') });
  const svg = s('svg', { class: 'map', viewBox: `0 0 ${W} ${H}`, role: 'group', 'aria-label': t('map of {0} located entities', items.length) });
  const base = s('g', { class: 'outlines' });
  for (const f of outlines.features || []) {
    const d = f.geometry ? pathOf(f.geometry, project) : '';
    const line = f.geometry && /LineString$/.test(f.geometry.type);
    if (d) base.append(s('path', { class: line ? 'outline line' : 'outline', d }, s('title', {}, (f.properties && (f.properties.name || f.properties.nom)) || '')));
  }
  const layer = s('g', { class: 'markers' });
  const scene = s('g', {}, base, layer);
  svg.append(scene);
  view.append(h('h1', {}, t('Map')),
    h('div', { class: 'toolbar' }, tenantSel ? h('label', { for: 'map-tenant' }, t('Tenant'), tenantSel) : null,
      h('label', { for: 'map-colour' }, t('Colour by'), colourSel), zoomIn, zoomOut, reset),
    legend, h('div', { class: 'map-wrap' }, svg),
    h('p', { class: 'muted' }, t('{0} entities with a location; outlines: {1}.', items.length, (outlines.features || []).length ? t('operator-supplied') : t('none configured'))));

  let zoom = 1;
  let centre = [W / 2, H / 2];
  for (const it of items) it.xy = project(it.lonlat);

  function draw() {
    scene.setAttribute('transform', `translate(${W / 2} ${H / 2}) scale(${zoom}) translate(${-centre[0]} ${-centre[1]})`);
    const colour = colouring(items, colourSel.value);
    legend.replaceChildren(...colour.legend.map(([label, c]) => {
      const sw = h('span', { class: 'swatch' });
      sw.style.background = c;
      return h('li', {}, sw, label);
    }));
    // clusters: each item joins the nearest cluster seed closer than CELL screen pixels (seeds found
    // through a grid of CELL-sized cells, so that ten thousand markers cluster in one pass)
    const grid = new Map();
    const clusters = [];
    for (const it of items) {
      const px = it.xy[0] * zoom;
      const py = it.xy[1] * zoom;
      const gx = Math.floor(px / CELL);
      const gy = Math.floor(py / CELL);
      let best = null;
      let bestD = CELL * CELL;
      for (let dx = -1; dx <= 1; dx += 1) {
        for (let dy = -1; dy <= 1; dy += 1) {
          for (const c of grid.get(`${gx + dx}:${gy + dy}`) || []) {
            const d = (c.px - px) ** 2 + (c.py - py) ** 2;
            if (d < bestD) { best = c; bestD = d; }
          }
        }
      }
      if (best) best.items.push(it);
      else {
        const c = { px, py, items: [it] };
        clusters.push(c);
        const key = `${gx}:${gy}`;
        if (!grid.has(key)) grid.set(key, []);
        grid.get(key).push(c);
      }
    }
    const cells = clusters.map((c) => c.items);
    const r = 6 / zoom;
    layer.replaceChildren();
    for (const group of cells) {
      if (group.length === 1) {
        const it = group[0];
        const dot = s('circle', { class: 'marker', cx: it.xy[0], cy: it.xy[1], r, fill: colour.of(it), 'stroke-width': 1.5 / zoom });
        const link = s('a', { href: `#/entity/${encodeURIComponent(it.entity.id)}${tenant ? `?tenant=${encodeURIComponent(tenant)}` : ''}`, 'data-entity': it.entity.id },
          dot, s('title', {}, `${shortName(it.entity.type)} ${it.entity.id}`));
        layer.append(link);
      } else {
        const cx = group.reduce((a, it) => a + it.xy[0], 0) / group.length;
        const cy = group.reduce((a, it) => a + it.xy[1], 0) / group.length;
        const rr = (9 + Math.min(Math.log2(group.length) * 2.5, 9)) / zoom;
        const g = s('a', { href: '#', class: 'cluster-link', 'data-count': group.length, 'aria-label': t('{0} entities: zoom in', group.length) },
          s('circle', { class: 'cluster', cx, cy, r: rr, 'stroke-width': 2 / zoom }),
          s('text', { class: 'cluster-label', x: cx, y: cy, 'font-size': 12 / zoom }, String(group.length)));
        g.addEventListener('click', (ev) => {
          ev.preventDefault();
          centre = [cx, cy];
          zoom = Math.min(zoom * 2.5, 4096);
          draw();
        });
        layer.append(g);
      }
    }
  }
  zoomIn.addEventListener('click', () => { zoom = Math.min(zoom * 1.6, 4096); draw(); });
  zoomOut.addEventListener('click', () => { zoom = Math.max(zoom / 1.6, 0.5); draw(); });
  reset.addEventListener('click', () => { zoom = 1; centre = [W / 2, H / 2]; draw(); });
  colourSel.addEventListener('change', draw);
  if (tenantSel) tenantSel.addEventListener('change', () => { location.hash = `#/map?tenant=${encodeURIComponent(tenantSel.value)}`; });
  svg.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    zoom = Math.min(Math.max(zoom * (ev.deltaY < 0 ? 1.25 : 0.8), 0.5), 4096);
    draw();
  }, { passive: false });
  draw();
}
