// Map: located entities as Leaflet markers over the operator's GeoJSON outlines, coloured, clustered
// (Leaflet.markercluster), clickable. No tile layer: the outlines are the base map, so nothing is fetched.

import { api, attrValue, entitiesOfType, entityPoint, h, info, ngsiBase, shortName } from './common.js';
import { t } from './i18n.js';
import { leaflet } from './vendor.js';

const PALETTE = ['#1f5fa8', '#c2410c', '#15803d', '#7e22ce', '#b91c1c', '#0e7490', '#a16207', '#be185d', '#4d7c0f', '#475569'];
const NONE = '#9ca3af';
const MAX_PER_TYPE = 20000;

/** A colour function for the chosen key: type (categorical), a numeric attribute (scale) or any other (categorical). */
function colouring(items, key) {
  const valueOf = (it) => (key === '@type' ? shortName(it.entity.type) : (() => {
    const k = Object.keys(it.entity).find((name) => shortName(name) === key);
    return k === undefined ? undefined : attrValue(it.entity[k]);
  })());
  const values = items.map(valueOf);
  const numbers = values.filter((v) => typeof v === 'number');
  if (key !== '@type' && numbers.length && numbers.length === values.filter((v) => v !== undefined).length) {
    // a loop, not Math.min(...numbers): ten thousand arguments is near the engines' limit
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of numbers) { if (v < lo) lo = v; if (v > hi) hi = v; }
    const colour = (v) => (typeof v !== 'number' ? NONE : `hsl(${(220 - (hi === lo ? 0.5 : (v - lo) / (hi - lo)) * 220).toFixed(0)}, 70%, 45%)`);
    return { of: (it) => colour(valueOf(it)), legend: [[`${+lo.toPrecision(4)}`, colour(lo)], [`${+hi.toPrecision(4)}`, colour(hi)], [t('no value'), NONE]] };
  }
  const name = (v) => (v === undefined ? '(none)' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const cats = [...new Set(values.map(name))].sort();
  const colourOf = new Map(cats.map((c, i) => [c, c === '(none)' ? NONE : PALETTE[i % PALETTE.length]]));
  return { of: (it) => colourOf.get(name(valueOf(it))), legend: cats.map((c) => [c, colourOf.get(c)]) };
}

export async function renderMap(view, _rest, params) {
  const [{ tenants }, L] = await Promise.all([info(), leaflet()]);
  const tenant = params.get('tenant') || '';
  const outlines = await api('/console/api/outlines');
  const typeList = (await api(`${ngsiBase()}/types`, { tenant })).typeList || [];
  const items = [];
  for (const type of typeList) {
    // the cluster layer keeps tens of thousands of markers fluid: up to 20,000 of each type are drawn
    for (const entity of await entitiesOfType(type, tenant, MAX_PER_TYPE)) {
      const p = entityPoint(entity);
      if (p) items.push({ entity, lonlat: p });
    }
  }
  const base = L.geoJSON(outlines, {
    interactive: false,
    style: (f) => (/LineString$/.test((f.geometry && f.geometry.type) || '')
      ? { className: 'outline line', color: '#6b9bd1', weight: 2, fill: false }
      : { className: 'outline', color: '#8f9aab', weight: 1, fillColor: '#fdfdfb', fillOpacity: 1 }),
    pointToLayer: (_f, latlng) => L.circleMarker(latlng, { radius: 3 }), // a Point in the outlines: no image marker
  });
  const bounds = base.getBounds();
  for (const it of items) bounds.extend([it.lonlat[1], it.lonlat[0]]);
  if (!bounds.isValid()) {
    view.append(h('h1', {}, t('Map')), h('p', { class: 'muted' }, t('No entity with a location in this tenant.')));
    return null;
  }
  const attrNames = [...new Set(items.flatMap((it) => Object.keys(it.entity).filter((k) => !['id', 'type', 'location', '@context'].includes(k)).map(shortName)))].sort();
  const tenantSel = tenants && tenants.length > 1
    ? h('select', { id: 'map-tenant' }, tenants.map((name) => h('option', { value: name, selected: name === tenant }, name || t('(default)'))))
    : null;
  const colourSel = h('select', { id: 'map-colour' }, h('option', { value: '@type' }, t('type')),
    attrNames.map((n) => h('option', { value: n, selected: n === params.get('colour') }, n)));
  const fit = h('button', { type: 'button' }, t('Fit'));
  const legend = h('ul', { class: 'legend', 'aria-label': t('legend') });
  const box = h('div', { id: 'map', class: 'map', role: 'region', 'aria-label': t('map of {0} located entities', items.length) });
  view.append(h('h1', {}, t('Map')),
    h('div', { class: 'toolbar' }, tenantSel ? h('label', { for: 'map-tenant' }, t('Tenant'), tenantSel) : null,
      h('label', { for: 'map-colour' }, t('Colour by'), colourSel), fit),
    legend, box,
    h('p', { class: 'muted' }, t('{0} entities with a location; outlines: {1}.', items.length, (outlines.features || []).length ? t('operator-supplied') : t('none configured'))));

  // maxZoom must be set when there is no tile layer (the cluster plugin needs it); no attribution link leaves the page
  const map = L.map(box, { maxZoom: 19, zoomControl: false, attributionControl: false });
  L.control.zoom({ zoomInTitle: t('zoom in'), zoomOutTitle: t('zoom out') }).addTo(map);
  L.control.attribution({ prefix: 'Leaflet' }).addTo(map);
  base.addTo(map);
  const fitAll = () => map.fitBounds(bounds, { padding: [16, 16], maxZoom: 17 });
  fitAll();

  let colour = colouring(items, colourSel.value);
  const paint = (marker) => {
    const el = marker.getElement();
    if (el) el.style.background = colour.of(marker.item); // a style property: allowed by the page's CSP
  };
  const clusters = L.markerClusterGroup({
    chunkedLoading: true,
    showCoverageOnHover: false,
    maxClusterRadius: 40,
    // markers are clustered in slices, the page stays responsive; data-clustered says how far it got
    chunkProgress: (done, total) => {
      box.dataset.clustered = String(done);
      if (done === total) box.dataset.ready = 'true';
    },
    iconCreateFunction: (cluster) => {
      const n = cluster.getChildCount();
      return L.divIcon({
        html: h('div', { 'data-count': n, title: t('{0} entities: zoom in', n) }, h('span', {}, String(n))),
        className: `marker-cluster marker-cluster-${n < 10 ? 'small' : n < 100 ? 'medium' : 'large'}`,
        iconSize: L.point(40, 40),
      });
    },
  });
  const icon = L.divIcon({ className: 'entity-marker', iconSize: [14, 14] });
  const markers = items.map((it) => {
    const href = `#/entity/${encodeURIComponent(it.entity.id)}${tenant ? `?tenant=${encodeURIComponent(tenant)}` : ''}`;
    // keyboard: Leaflet makes the marker focusable (role=button) and Enter clicks it
    const marker = L.marker([it.lonlat[1], it.lonlat[0]], { icon, title: `${shortName(it.entity.type)} ${it.entity.id}`, keyboard: true });
    marker.item = it;
    marker.on('add', () => {
      marker.getElement().dataset.entity = it.entity.id;
      paint(marker);
    });
    marker.on('click', () => { location.hash = href; });
    return marker;
  });
  let settled = 0; // data-settled counts the cluster views drawn after a zoom (tests wait on it, not on a clock)
  box.dataset.settled = '0';
  clusters.on('animationend', () => { settled += 1; box.dataset.settled = String(settled); });
  map.addLayer(clusters);
  clusters.addLayers(markers);

  function drawLegend() {
    legend.replaceChildren(...colour.legend.map(([label, c]) => {
      const sw = h('span', { class: 'swatch' });
      sw.style.background = c;
      return h('li', {}, sw, label);
    }));
  }
  drawLegend();
  colourSel.addEventListener('change', () => {
    colour = colouring(items, colourSel.value);
    drawLegend();
    markers.forEach(paint); // the ones not on the map are painted when they are added
  });
  fit.addEventListener('click', fitAll);
  if (tenantSel) tenantSel.addEventListener('change', () => { location.hash = `#/map?tenant=${encodeURIComponent(tenantSel.value)}`; });
  return () => map.remove();
}
