// The vendored libraries (static/vendor/, see its README.md), loaded on first use from this server only:
// the map and chart pages pull them in, the other pages never pay for them.

const loaded = new Map();

function once(key, make) {
  if (!loaded.has(key)) loaded.set(key, make());
  return loaded.get(key);
}

function stylesheet(href) {
  return once(href, () => new Promise((resolve, reject) => {
    const link = Object.assign(document.createElement('link'), { rel: 'stylesheet', href });
    link.addEventListener('load', resolve);
    link.addEventListener('error', () => reject(new Error(`cannot load ${href}`)));
    // before the console's own sheet, so that console.css can adjust the libraries' defaults
    const own = document.head.querySelector('link[rel="stylesheet"]');
    if (own) own.before(link); else document.head.append(link);
  }));
}

// classic scripts in order: the cluster plugin extends the global L that Leaflet defines
function script(src) {
  return once(src, () => new Promise((resolve, reject) => {
    const el = Object.assign(document.createElement('script'), { src, async: false });
    el.addEventListener('load', resolve);
    el.addEventListener('error', () => reject(new Error(`cannot load ${src}`)));
    document.head.append(el);
  }));
}

const BASE = '/console/static/vendor';

/** Leaflet with Leaflet.markercluster: resolves to the global L. */
export async function leaflet() {
  await Promise.all([
    stylesheet(`${BASE}/leaflet/leaflet.css`),
    stylesheet(`${BASE}/markercluster/MarkerCluster.css`),
    stylesheet(`${BASE}/markercluster/MarkerCluster.Default.css`),
    script(`${BASE}/leaflet/leaflet.js`),
    script(`${BASE}/markercluster/leaflet.markercluster.js`),
  ]);
  return window.L;
}

/** uPlot: resolves to its constructor. */
export async function uplot() {
  await Promise.all([stylesheet(`${BASE}/uplot/uPlot.min.css`), script(`${BASE}/uplot/uPlot.iife.min.js`)]);
  return window.uPlot;
}
