// Overview: every source (state, last message, rate with a sparkline, dead letters) and every sink, polled.

import { ago, api, errorBox, fmtAge, fmtTime, h, s } from './common.js';
import { t } from './i18n.js';

const POLL_MS = 3000;

/** A small SVG sparkline of per-minute counts. */
export function sparkline(values, width = 120, height = 24) {
  const svg = s('svg', { class: 'spark', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': t('messages per minute over the last {0} minutes', values.length) });
  if (values.length < 2) return svg;
  const max = Math.max(...values, 1);
  const step = width / (values.length - 1);
  const d = values.map((v, i) => `${i ? 'L' : 'M'}${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`).join(' ');
  svg.append(s('path', { d, 'data-points': values.length }));
  return svg;
}

function stateCell(src) {
  const state = src.state || 'unknown';
  const cell = h('td', { class: 'state' }, h('span', { class: `badge ${state}` }, t(state)));
  if (state !== 'running' && src.since) cell.append(h('div', { class: 'muted' }, t('since {0}', fmtTime(src.since))));
  if (src.lastError && state !== 'running') cell.append(h('div', { class: 'why' }, src.lastError));
  return cell;
}

function sourceRow(src) {
  return h('tr', { 'data-source': src.name },
    h('th', { scope: 'row' }, src.name),
    h('td', {}, src.adapter),
    h('td', {}, src.tenant || t('(default)')),
    stateCell(src),
    h('td', { class: 'last' }, src.lastMessageAt ? [fmtTime(src.lastMessageAt), h('div', { class: 'muted' }, ago(src.lastMessageAt))] : '—'),
    h('td', { class: 'num messages' }, String(src.messages ?? 0)),
    h('td', { class: 'rate' }, h('span', { class: 'num' }, src.perMinute === null || src.perMinute === undefined ? '—' : String(src.perMinute)), ' ', sparkline(src.spark || [])),
    h('td', { class: 'num letters' }, src.deadLetters
      ? h('a', { href: `#/deadletters?source=${encodeURIComponent(src.name)}` }, String(src.deadLetters))
      : '0'));
}

function sinkRow(sink) {
  return h('tr', { 'data-sink': sink.name },
    h('th', { scope: 'row' }, sink.name),
    h('td', {}, sink.kind),
    h('td', {}, h('span', { class: `badge circuit-${sink.circuit}` }, t(sink.circuit)),
      sink.lastError ? h('div', { class: 'why' }, sink.lastError) : null),
    h('td', { class: 'num depth' }, String(sink.backlog.entities)),
    h('td', { class: 'num' }, fmtAge(sink.backlog.oldestAgeSeconds)),
    h('td', { class: 'num' }, String(sink.published)),
    h('td', { class: 'num' }, String(sink.retrying)));
}

function table(caption, heads, rows) {
  return h('div', { class: 'table-wrap' }, h('table', {}, h('caption', {}, caption),
    h('thead', {}, h('tr', {}, heads.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows)));
}

export async function renderOverview(view) {
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  const body = h('div', {});
  view.append(h('h1', {}, t('Overview')), status, body);
  async function refresh() {
    try {
      const doc = await api('/console/api/overview');
      body.replaceChildren(
        table(t('Sources'), [t('Source'), t('Adapter'), t('Tenant'), t('State'), t('Last message'), t('Messages'), t('Per minute (30 min)'), t('Dead letters')],
          doc.sources.map(sourceRow)),
        table(t('Sinks'), [t('Sink'), t('Kind'), t('Breaker'), t('Outbox depth'), t('Oldest waiting'), t('Published'), t('Retrying')],
          doc.sinks.map(sinkRow)));
      status.textContent = `${doc.ready ? t('Ready') : t('Not ready')} · ${t('{0} dead letter(s)', doc.deadLetters)} · ${t('updated {0}', fmtTime(doc.at))}`;
    } catch (err) {
      body.replaceChildren(errorBox(err));
    }
  }
  await refresh();
  const timer = setInterval(refresh, POLL_MS);
  return () => clearInterval(timer);
}
