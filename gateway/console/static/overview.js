// Overview: every source (state, last message, rate with a sparkline, dead letters) and every sink, polled.

import { ago, api, errorBox, fmtAge, fmtTime, h, s } from './common.js';

const POLL_MS = 3000;

/** A small SVG sparkline of per-minute counts. */
export function sparkline(values, width = 120, height = 24) {
  const svg = s('svg', { class: 'spark', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `messages per minute over the last ${values.length} minutes` });
  if (values.length < 2) return svg;
  const max = Math.max(...values, 1);
  const step = width / (values.length - 1);
  const d = values.map((v, i) => `${i ? 'L' : 'M'}${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`).join(' ');
  svg.append(s('path', { d, 'data-points': values.length }));
  return svg;
}

function stateCell(src) {
  const state = src.state || 'unknown';
  const cell = h('td', { class: 'state' }, h('span', { class: `badge ${state}` }, state));
  if (state !== 'running' && src.since) cell.append(h('div', { class: 'muted' }, `since ${fmtTime(src.since)}`));
  if (src.lastError && state !== 'running') cell.append(h('div', { class: 'why' }, src.lastError));
  return cell;
}

function sourceRow(src) {
  return h('tr', { 'data-source': src.name },
    h('th', { scope: 'row' }, src.name),
    h('td', {}, src.adapter),
    h('td', {}, src.tenant || '(default)'),
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
    h('td', {}, h('span', { class: `badge circuit-${sink.circuit}` }, sink.circuit),
      sink.lastError ? h('div', { class: 'why' }, sink.lastError) : null),
    h('td', { class: 'num depth' }, String(sink.backlog.entities)),
    h('td', { class: 'num' }, fmtAge(sink.backlog.oldestAgeSeconds)),
    h('td', { class: 'num' }, String(sink.published)),
    h('td', { class: 'num' }, String(sink.retrying)));
}

function table(caption, heads, rows) {
  return h('table', {}, h('caption', {}, caption),
    h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows));
}

export async function renderOverview(view) {
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  const body = h('div', {});
  view.append(h('h1', {}, 'Overview'), status, body);
  async function refresh() {
    try {
      const doc = await api('/console/api/overview');
      body.replaceChildren(
        table('Sources', ['Source', 'Adapter', 'Tenant', 'State', 'Last message', 'Messages', 'Per minute (30 min)', 'Dead letters'],
          doc.sources.map(sourceRow)),
        table('Sinks', ['Sink', 'Kind', 'Breaker', 'Outbox depth', 'Oldest waiting', 'Published', 'Retrying'],
          doc.sinks.map(sinkRow)));
      status.textContent = `${doc.ready ? 'Ready' : 'Not ready'} · ${doc.deadLetters} dead letter(s) · updated ${fmtTime(doc.at)}`;
    } catch (err) {
      body.replaceChildren(errorBox(err));
    }
  }
  await refresh();
  const timer = setInterval(refresh, POLL_MS);
  return () => clearInterval(timer);
}
