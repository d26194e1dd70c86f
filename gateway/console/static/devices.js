// Devices and provisioning: a LoRaWAN source's devices with their last radio metadata, its device
// profiles, and a form adding a device (validated by the server like the config; each problem is
// shown next to the field its JSON pointer names).

import { api, errorBox, fmtTime, h } from './common.js';
import { t } from './i18n.js';

const FIELDS = ['dev_eui', 'profile', 'entity_id', 'name', 'tenant', 'lon', 'lat'];

/** The form field a JSON pointer of the device names ('' when none does: shown above the form). */
function fieldOf(pointer) {
  const parts = pointer.split('/').slice(1);
  if (parts[0] === 'location') return parts[1] === 'lat' ? 'lat' : 'lon';
  if (parts[0] === 'params' && parts[1]) return `param-${parts[1]}`;
  return FIELDS.includes(parts[0]) ? parts[0] : '';
}

function radioCells(seen) {
  if (!seen) return [h('td', { class: 'muted', colspan: 4 }, t('no uplink since the gateway started'))];
  const num = (v, unit) => (v === null || v === undefined ? '—' : `${v} ${unit}`);
  return [
    h('td', { class: 'last' }, fmtTime(seen.time)),
    h('td', {}, `${num(seen.rssi, 'dBm')} / ${num(seen.snr, 'dB')}`),
    h('td', {}, (seen.gateways || []).join(', ') || '—'),
    h('td', {}, seen.fCnt ?? '—'),
  ];
}

function entityLink(d) {
  const href = `#/entity/${encodeURIComponent(d.entityId)}${d.tenant ? `?tenant=${encodeURIComponent(d.tenant)}` : ''}`;
  return h('a', { href }, d.entityId);
}

function deviceTable(devices) {
  if (!devices.length) return h('p', { class: 'muted', id: 'dev-empty' }, t('No device provisioned.'));
  return h('div', {}, h('p', { class: 'muted' }, t('{0} device(s); radio metadata is kept in memory since the gateway started', devices.length)),
    h('div', { class: 'table-wrap' }, h('table', { id: 'dev-table', 'aria-label': t('Devices') },
    h('thead', {}, h('tr', {}, [t('DevEUI'), t('Name'), t('Profile'), t('Entity'), t('Tenant'), t('Location'),
      t('Last uplink'), t('RSSI / SNR'), t('Gateways'), t('fCnt')].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, devices.map((d) => h('tr', { 'data-device': d.devEui },
      h('td', {}, h('code', {}, d.devEui), d.auto ? h('span', { class: 'muted' }, ` (${t('auto')})`) : null,
        d.addedAtRunTime ? h('span', { class: 'muted' }, ` (${t('added here')})`) : null),
      h('td', {}, d.name || '—'),
      h('td', {}, d.profile),
      h('td', {}, entityLink(d)),
      h('td', {}, d.tenant || t('(default)')),
      h('td', {}, d.location && d.location.type === 'Point'
        ? d.location.coordinates.map((c) => c.toFixed(5)).join(', ') : (d.location ? d.location.type : '—')),
      radioCells(d.lastUplink)))))));
}

function profileDetails(profiles) {
  return profiles.map((p) => h('details', { class: 'profile', 'data-profile': p.id },
    h('summary', {}, `${p.id} — ${p.vendor} ${p.model} → ${p.entityType}`),
    h('dl', {},
      h('dt', {}, t('Measures')), h('dd', {}, p.attributes.join(', ') || '—'),
      h('dt', {}, t('Required for every device')), h('dd', {}, p.requires.join(', ') || '—'),
      h('dt', {}, t('Parameters')), h('dd', {}, Object.keys(p.parameters).length
        ? h('ul', {}, Object.entries(p.parameters).map(([name, spec]) => h('li', {}, h('code', {}, name),
          ` (${spec.type}${spec.default !== undefined ? `, ${t('default')} ${spec.default}` : ''})`,
          spec.description ? ` — ${spec.description}` : '')))
        : '—'))));
}

function field(id, label, input) {
  input.id = `dev-${id}`;
  input.name = id;
  input.setAttribute('aria-describedby', `dev-${id}-error`);
  return h('div', { class: 'field', 'data-field': id },
    h('label', { for: `dev-${id}` }, label), input,
    h('p', { class: 'field-error', id: `dev-${id}-error`, 'aria-live': 'polite' }));
}

export async function renderDevices(view, _rest, params) {
  view.append(h('h1', {}, t('Devices')));
  // only sources whose adapter keeps a device registry (the admin API says which)
  const sources = (await api('/admin/sources')).sources.filter((s) => s.devices).map((s) => s.name);
  const registries = [];
  for (const name of sources) {
    registries.push({ name, doc: await api(`/admin/sources/${encodeURIComponent(name)}/devices`) });
  }
  if (!registries.length) {
    view.append(h('p', { class: 'muted' }, t('No source of this gateway keeps a device registry (LoRaWAN sources do).')));
    return null;
  }
  let current = registries.find((r) => r.name === params.get('source')) || registries[0];
  const select = h('select', { id: 'dev-source' },
    registries.map((r) => h('option', { value: r.name, selected: r === current }, r.name)));
  const list = h('div', { id: 'dev-list' });
  const profiles = h('div', { id: 'dev-profiles' });
  const status = h('div', { class: 'result', role: 'status', 'aria-live': 'polite', hidden: true });
  const general = h('p', { class: 'error', id: 'dev-form-error', role: 'alert', hidden: true });

  const profileSelect = h('select', { required: true });
  const paramsBox = h('fieldset', { id: 'dev-params' });
  const inputs = {
    dev_eui: h('input', { type: 'text', required: true, autocomplete: 'off', placeholder: '24e124713b100001', spellcheck: 'false' }),
    entity_id: h('input', { type: 'text', placeholder: 'urn:ngsi-ld:WasteContainer:…' }),
    name: h('input', { type: 'text' }),
    tenant: h('input', { type: 'text' }),
    lon: h('input', { type: 'text', inputmode: 'decimal', placeholder: '3.8767' }),
    lat: h('input', { type: 'text', inputmode: 'decimal', placeholder: '43.6108' }),
  };
  const form = h('form', { id: 'dev-form', novalidate: true },
    general,
    h('div', { class: 'form-grid' },
      field('dev_eui', t('DevEUI (16 hex digits)'), inputs.dev_eui),
      field('profile', t('Profile'), profileSelect),
      field('entity_id', t('Entity id (default urn:ngsi-ld:<Type>:<DevEUI>)'), inputs.entity_id),
      field('name', t('Name'), inputs.name),
      field('tenant', t('Tenant (default: the source\u2019s)'), inputs.tenant),
      field('lon', t('Longitude (WGS84)'), inputs.lon),
      field('lat', t('Latitude (WGS84)'), inputs.lat)),
    paramsBox,
    h('button', { type: 'submit' }, t('Add the device')));

  function profileById(id) {
    return current.doc.profiles.find((p) => p.id === id);
  }

  function showParams() {
    const p = profileById(profileSelect.value);
    const entries = p ? Object.entries(p.parameters) : [];
    paramsBox.hidden = entries.length === 0;
    paramsBox.replaceChildren(h('legend', {}, t('Profile parameters')), ...entries.map(([name, spec]) =>
      field(`param-${name}`, `${name}${spec.default !== undefined ? ` (${t('default')} ${spec.default})` : ''}`,
        h('input', { type: 'text', 'data-param': name, 'data-kind': spec.type, placeholder: spec.description || '' }))));
  }

  function draw() {
    list.replaceChildren(deviceTable(current.doc.devices));
    profiles.replaceChildren(...profileDetails(current.doc.profiles));
    const chosen = profileSelect.value;
    profileSelect.replaceChildren(h('option', { value: '' }, t('choose a profile')),
      ...current.doc.profiles.map((p) => h('option', { value: p.id, selected: p.id === chosen }, `${p.id} (${p.entityType})`)));
    showParams();
  }

  async function reload({ listOnly = false } = {}) {
    current.doc = await api(`/admin/sources/${encodeURIComponent(current.name)}/devices`);
    if (listOnly) list.replaceChildren(deviceTable(current.doc.devices)); // keep what the operator is typing
    else draw();
  }

  function clearErrors() {
    general.hidden = true;
    for (const box of form.querySelectorAll('.field')) {
      box.classList.remove('invalid');
      box.querySelector('.field-error').textContent = '';
      box.querySelector('input, select').removeAttribute('aria-invalid');
    }
  }

  function showErrors(errors) {
    const loose = [];
    for (const e of errors) {
      const box = form.querySelector(`.field[data-field="${fieldOf(e.pointer || '')}"]`);
      if (!box) {
        loose.push(`${e.pointer || '/'}: ${e.message}`);
        continue;
      }
      box.classList.add('invalid');
      const out = box.querySelector('.field-error');
      out.textContent = out.textContent ? `${out.textContent}; ${e.message}` : `${e.pointer}: ${e.message}`;
      box.querySelector('input, select').setAttribute('aria-invalid', 'true');
    }
    if (loose.length) {
      general.hidden = false;
      general.textContent = loose.join('\n');
    }
    const first = form.querySelector('[aria-invalid="true"]');
    if (first) first.focus();
  }

  function body() {
    const out = {};
    for (const key of ['dev_eui', 'entity_id', 'name', 'tenant']) {
      const v = inputs[key].value.trim();
      if (v) out[key] = v;
    }
    if (profileSelect.value) out.profile = profileSelect.value;
    const lon = inputs.lon.value.trim();
    const lat = inputs.lat.value.trim();
    const num = (v) => (v !== '' && Number.isFinite(Number(v)) ? Number(v) : v);
    if (lon || lat) out.location = { lon: num(lon), lat: num(lat) };
    const given = {};
    for (const input of paramsBox.querySelectorAll('input[data-param]')) {
      const v = input.value.trim();
      if (v) given[input.dataset.param] = ['number', 'integer'].includes(input.dataset.kind) ? num(v) : v;
    }
    if (Object.keys(given).length) out.params = given;
    return out;
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors();
    status.hidden = true;
    let doc;
    try {
      doc = await api(`/admin/sources/${encodeURIComponent(current.name)}/devices`, { method: 'POST', body: body() });
    } catch (err) {
      general.hidden = false;
      general.textContent = err.message;
      return;
    }
    if (doc && Array.isArray(doc.errors)) {
      showErrors(doc.errors);
      return;
    }
    status.hidden = false;
    status.replaceChildren(h('strong', { id: 'dev-added' }, t('Device {0} added: its uplinks now become {1}.', doc.devEui, doc.entityId)));
    form.reset();
    await reload();
  });

  profileSelect.addEventListener('change', showParams);
  select.addEventListener('change', async () => {
    current = registries.find((r) => r.name === select.value) || current;
    history.replaceState(null, '', `#/devices?source=${encodeURIComponent(current.name)}`);
    clearErrors();
    await reload();
  });

  view.append(
    h('div', { class: 'toolbar' }, h('label', { for: 'dev-source' }, t('Source'), select)),
    status, list,
    h('h2', {}, t('Add a device')), form,
    h('h2', {}, t('Device profiles')), profiles);
  draw();
  const timer = setInterval(() => { reload({ listOnly: true }).catch((err) => list.replaceChildren(errorBox(err))); }, 10000);
  return () => clearInterval(timer);
}
