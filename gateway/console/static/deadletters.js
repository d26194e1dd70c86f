// Dead letters: filter by source, stage and reason; read the payload with the JSON pointer highlighted; replay.

import { api, errorBox, fmtTime, h } from './common.js';
import { prettyJson } from './json.js';

const PAGE = 1000;

function resultLine(r) {
  const what = r.status === 'queued' ? `queued ${(r.queued || []).length} entit${(r.queued || []).length === 1 ? 'y' : 'ies'}`
    : r.status === 'still-failing' ? 'still failing (kept)' : r.status === 'not-found' ? 'gone' : `failed: ${r.reason || ''}`;
  return h('li', { class: r.status, 'data-letter': r.id }, `#${r.id}: ${what}`);
}

export async function renderDeadLetters(view, _rest, params) {
  const sources = (await api('/admin/sources')).sources.map((s) => s.name);
  const source = h('select', { id: 'dl-source' }, h('option', { value: '' }, 'all sources'),
    sources.map((n) => h('option', { value: n, selected: n === params.get('source') }, n)));
  const stage = h('select', { id: 'dl-stage' }, ['', 'translation', 'validation', 'sink'].map((v) =>
    h('option', { value: v, selected: v === (params.get('stage') || '') }, v || 'all stages')));
  const reason = h('input', { id: 'dl-reason', type: 'search', placeholder: 'text in the reason', value: params.get('reason') || '' });
  const replaySelected = h('button', { type: 'button', disabled: true }, 'Replay selected');
  const replayAll = h('button', { type: 'button' }, 'Replay all shown');
  const results = h('div', { class: 'result', 'aria-live': 'polite', hidden: true });
  const list = h('div', { class: 'table-wrap' });
  const detail = h('div', { class: 'detail' });
  view.append(h('h1', {}, 'Dead letters'),
    h('div', { class: 'toolbar' },
      h('label', { for: 'dl-source' }, 'Source', source),
      h('label', { for: 'dl-stage' }, 'Stage', stage),
      h('label', { for: 'dl-reason' }, 'Reason contains', reason),
      replaySelected, replayAll),
    results, h('div', { class: 'split' }, list, detail));

  let shown = [];
  const selected = new Set();

  function showResults(title, items) {
    results.hidden = false;
    results.replaceChildren(h('strong', {}, title), h('ul', {}, items.map(resultLine)));
  }

  async function load() {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (source.value) q.set('source', source.value);
    if (stage.value) q.set('stage', stage.value);
    try {
      const doc = await api(`/admin/deadletters?${q}`);
      const needle = reason.value.trim().toLowerCase();
      shown = doc.deadLetters.filter((d) => !needle || d.reason.toLowerCase().includes(needle));
    } catch (err) {
      list.replaceChildren(errorBox(err));
      return;
    }
    for (const id of [...selected]) if (!shown.some((d) => d.id === id)) selected.delete(id);
    replaySelected.disabled = selected.size === 0;
    replayAll.disabled = shown.length === 0;
    if (!shown.length) {
      list.replaceChildren(h('p', { class: 'muted', id: 'dl-empty' }, 'No dead letter matches.'));
      return;
    }
    const all = h('input', { type: 'checkbox', 'aria-label': 'select all shown' });
    all.addEventListener('change', () => {
      for (const d of shown) (all.checked ? selected.add(d.id) : selected.delete(d.id));
      load();
    });
    list.replaceChildren(h('table', { id: 'dl-table' }, h('caption', {}, `${shown.length} dead letter(s)`),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, all), ['#', 'When', 'Source', 'Stage', 'Reason', 'Pointer'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, shown.map((d) => {
        const box = h('input', { type: 'checkbox', 'aria-label': `select dead letter ${d.id}`, checked: selected.has(d.id) });
        box.addEventListener('change', () => {
          (box.checked ? selected.add(d.id) : selected.delete(d.id));
          replaySelected.disabled = selected.size === 0;
        });
        const open = h('a', { href: `#/deadletters?${new URLSearchParams({ ...Object.fromEntries(params), id: d.id })}` }, String(d.id));
        open.addEventListener('click', (ev) => { ev.preventDefault(); showDetail(d.id); });
        return h('tr', { 'data-letter': d.id }, h('td', {}, box), h('td', {}, open), h('td', {}, fmtTime(d.createdAt)),
          h('td', {}, d.source), h('td', {}, d.stage), h('td', { class: 'why' }, d.reason), h('td', {}, h('code', {}, d.pointer || '')));
      }))));
  }

  async function replay(ids) {
    const out = [];
    for (const id of ids) {
      const r = await api(`/admin/deadletters/${id}/replay`, { method: 'POST' });
      out.push(r && r.status ? r : { id, status: 'failed', reason: (r && r.detail) || 'unknown' });
    }
    return out;
  }

  async function showDetail(id) {
    detail.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    let d;
    try {
      d = await api(`/admin/deadletters/${id}`);
    } catch (err) {
      detail.replaceChildren(errorBox(err));
      return;
    }
    const inEntity = d.stage !== 'translation' && d.entity;
    const payload = prettyJson(d.payload, inEntity ? null : d.pointer);
    const entity = d.entity ? prettyJson(d.entity, inEntity ? d.pointer : null) : null;
    const one = h('button', { type: 'button' }, 'Replay this one');
    one.addEventListener('click', async () => {
      one.disabled = true;
      try {
        showResults('Replay', await replay([id]));
      } catch (err) {
        showResults('Replay', [{ id, status: 'failed', reason: err.message }]);
      }
      await load();
    });
    const drop = h('button', { type: 'button' }, 'Delete');
    drop.addEventListener('click', async () => {
      await api(`/admin/deadletters/${id}`, { method: 'DELETE' });
      detail.replaceChildren(h('p', { class: 'muted' }, `Dead letter #${id} deleted.`));
      await load();
    });
    const where = (inEntity ? entity : payload);
    detail.replaceChildren(h('div', { class: 'panel', id: 'dl-detail', 'data-letter': id },
      h('h2', {}, `Dead letter #${id}`),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Reason'), h('dd', { class: 'why' }, d.reason),
        h('dt', {}, 'Pointer'), h('dd', {}, h('code', {}, d.pointer || '(none)'),
          where && d.pointer && !where.exact ? h('span', { class: 'muted' }, ' (not present: its closest parent is marked)') : null),
        h('dt', {}, 'Source'), h('dd', {}, `${d.source} (${d.adapter}), tenant ${d.tenant || '(default)'}`),
        h('dt', {}, 'Stage'), h('dd', {}, d.stage),
        h('dt', {}, 'Received'), h('dd', {}, fmtTime(d.receivedAt)),
        d.entityId ? [h('dt', {}, 'Entity'), h('dd', {}, d.entityId)] : null,
        h('dt', {}, 'Correlation'), h('dd', {}, h('code', {}, d.correlationId || ''))),
      h('div', { class: 'toolbar' }, one, drop),
      h('h3', {}, `Raw payload (${d.contentType || 'unknown type'})`), payload.pre,
      entity ? [h('h3', {}, 'Entity that failed'), entity.pre] : null));
    const mark = detail.querySelector('.hl');
    if (mark) mark.scrollIntoView({ block: 'center' });
  }

  replaySelected.addEventListener('click', async () => {
    replaySelected.disabled = true;
    showResults('Replay of the selection', await replay([...selected].sort((a, b) => a - b)));
    selected.clear();
    await load();
  });
  replayAll.addEventListener('click', async () => {
    replayAll.disabled = true;
    let doc;
    if (reason.value.trim()) {
      doc = { results: await replay(shown.map((d) => d.id)) };
    } else {
      const body = { limit: PAGE };
      if (source.value) body.source = source.value;
      if (stage.value) body.stage = stage.value;
      doc = await api('/admin/deadletters/replay', { method: 'POST', body });
    }
    showResults(`Replay of ${doc.results.length} dead letter(s)`, doc.results);
    await load();
  });
  for (const el of [source, stage]) el.addEventListener('change', load);
  reason.addEventListener('input', load);
  await load();
  if (params.get('id')) await showDetail(Number(params.get('id')));
  const timer = setInterval(() => { if (!list.contains(document.activeElement)) load(); }, 5000);
  return () => clearInterval(timer);
}
