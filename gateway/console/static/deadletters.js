// Dead letters: filter by source, stage and reason; read the payload with the JSON pointer highlighted; replay.

import { api, errorBox, fmtTime, h } from './common.js';
import { prettyJson } from './json.js';
import { t } from './i18n.js';

const PAGE = 1000;

function resultLine(r) {
  const what = r.status === 'queued' ? t('queued {0} entities', (r.queued || []).length)
    : r.status === 'still-failing' ? t('still failing (kept)') : r.status === 'not-found' ? t('gone') : t('failed: {0}', r.reason || '');
  return h('li', { class: r.status, 'data-letter': r.id }, `#${r.id}: ${what}`);
}

export async function renderDeadLetters(view, _rest, params) {
  const sources = (await api('/admin/sources')).sources.map((s) => s.name);
  const source = h('select', { id: 'dl-source' }, h('option', { value: '' }, t('all sources')),
    sources.map((n) => h('option', { value: n, selected: n === params.get('source') }, n)));
  const stage = h('select', { id: 'dl-stage' }, ['', 'translation', 'validation', 'routing', 'sink'].map((v) =>
    h('option', { value: v, selected: v === (params.get('stage') || '') }, v ? t(v) : t('all stages'))));
  const reason = h('input', { id: 'dl-reason', type: 'search', placeholder: t('text in the reason'), value: params.get('reason') || '' });
  const replaySelected = h('button', { type: 'button', disabled: true }, t('Replay selected'));
  const replayAll = h('button', { type: 'button' }, t('Replay all shown'));
  const results = h('div', { class: 'result', 'aria-live': 'polite', hidden: true });
  const list = h('div', { class: 'table-wrap' });
  const detail = h('div', { class: 'detail' });
  view.append(h('h1', {}, t('Dead letters')),
    h('div', { class: 'toolbar' },
      h('label', { for: 'dl-source' }, t('Source'), source),
      h('label', { for: 'dl-stage' }, t('Stage'), stage),
      h('label', { for: 'dl-reason' }, t('Reason contains'), reason),
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
      list.replaceChildren(h('p', { class: 'muted', id: 'dl-empty' }, t('No dead letter matches.')));
      return;
    }
    const all = h('input', { type: 'checkbox', 'aria-label': t('select all shown') });
    all.addEventListener('change', () => {
      for (const d of shown) (all.checked ? selected.add(d.id) : selected.delete(d.id));
      load();
    });
    list.replaceChildren(h('table', { id: 'dl-table' }, h('caption', {}, t('{0} dead letter(s)', shown.length)),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, all), ['#', t('When'), t('Source'), t('Stage'), t('Reason'), t('Pointer')].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, shown.map((d) => {
        const box = h('input', { type: 'checkbox', 'aria-label': t('select dead letter {0}', d.id), checked: selected.has(d.id) });
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
    detail.replaceChildren(h('p', { class: 'muted' }, t('Loading…')));
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
    const one = h('button', { type: 'button' }, t('Replay this one'));
    one.addEventListener('click', async () => {
      one.disabled = true;
      try {
        showResults(t('Replay'), await replay([id]));
      } catch (err) {
        showResults(t('Replay'), [{ id, status: 'failed', reason: err.message }]);
      }
      await load();
    });
    const drop = h('button', { type: 'button' }, t('Delete'));
    drop.addEventListener('click', async () => {
      await api(`/admin/deadletters/${id}`, { method: 'DELETE' });
      detail.replaceChildren(h('p', { class: 'muted' }, t('Dead letter #{0} deleted.', id)));
      await load();
    });
    const where = (inEntity ? entity : payload);
    detail.replaceChildren(h('div', { class: 'panel', id: 'dl-detail', 'data-letter': id },
      h('h2', {}, t('Dead letter #{0}', id)),
      h('dl', { class: 'facts' },
        h('dt', {}, t('Reason')), h('dd', { class: 'why' }, d.reason),
        h('dt', {}, t('Pointer')), h('dd', {}, h('code', {}, d.pointer || t('(none)')),
          where && d.pointer && !where.exact ? h('span', { class: 'muted' }, t(' (not present: its closest parent is marked)')) : null),
        h('dt', {}, t('Source')), h('dd', {}, `${d.source} (${d.adapter}), ${t('tenant {0}', d.tenant || t('(default)'))}`),
        h('dt', {}, t('Stage')), h('dd', {}, t(d.stage)),
        h('dt', {}, t('Received')), h('dd', {}, fmtTime(d.receivedAt)),
        d.entityId ? [h('dt', {}, t('Entity')), h('dd', {}, d.entityId)] : null,
        h('dt', {}, t('Correlation')), h('dd', {}, h('code', {}, d.correlationId || ''))),
      h('div', { class: 'toolbar' }, one, drop),
      h('h3', {}, t('Raw payload ({0})', d.contentType || t('unknown type'))), payload.pre,
      entity ? [h('h3', {}, t('Entity that failed')), entity.pre] : null));
    const mark = detail.querySelector('.hl');
    if (mark) mark.scrollIntoView({ block: 'center' });
  }

  replaySelected.addEventListener('click', async () => {
    replaySelected.disabled = true;
    showResults(t('Replay of the selection'), await replay([...selected].sort((a, b) => a - b)));
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
    showResults(t('Replay of {0} dead letter(s)', doc.results.length), doc.results);
    await load();
  });
  for (const el of [source, stage]) el.addEventListener('change', load);
  reason.addEventListener('input', load);
  await load();
  if (params.get('id')) await showDetail(Number(params.get('id')));
  const timer = setInterval(() => { if (!list.contains(document.activeElement)) load(); }, 5000);
  return () => clearInterval(timer);
}
