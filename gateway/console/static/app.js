// The console's router: one view per hash (#/overview, #/deadletters, #/entities, #/entity/<id>, #/map, #/devices).

import { errorBox, h } from './common.js';
import { renderOverview } from './overview.js';
import { renderDeadLetters } from './deadletters.js';
import { renderEntities, renderEntity } from './entities.js';
import { renderMap } from './map.js';
import { renderConformance } from './conformance.js';
import { renderDevices } from './devices.js';
import { t } from './i18n.js';

const VIEWS = {
  overview: renderOverview,
  deadletters: renderDeadLetters,
  entities: renderEntities,
  entity: renderEntity,
  map: renderMap,
  conformance: renderConformance,
  devices: renderDevices,
};

let stopCurrent = null;

async function route() {
  if (stopCurrent) {
    stopCurrent();
    stopCurrent = null;
  }
  const fallback = document.body.dataset.mode === 'gateway' ? '#/overview' : '#/entities';
  const hash = location.hash.startsWith('#/') ? location.hash : fallback;
  const [path, query] = hash.slice(2).split('?');
  const [name, ...rest] = path.split('/');
  const params = new URLSearchParams(query || '');
  const view = document.getElementById('view');
  view.replaceChildren();
  for (const a of document.querySelectorAll('header nav a')) {
    const target = a.getAttribute('href').slice(2);
    if (target === name || (name === 'entity' && target === 'entities')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const render = VIEWS[name];
  if (!render) {
    view.append(h('p', { class: 'error', role: 'alert' }, t('No page named {0}.', name)));
    return;
  }
  try {
    stopCurrent = (await render(view, rest.map(decodeURIComponent), params)) || null;
  } catch (err) {
    view.append(errorBox(err));
  }
}

window.addEventListener('hashchange', route);
route();
