// A time-series chart in SVG: a line of values, or min/max as a band with the average as a line.

import { fmtTime, s } from './common.js';
import { t } from './i18n.js';

const W = 720;
const H = 260;
const M = { left: 56, right: 12, top: 12, bottom: 32 };

/**
 * points: [{t: ms, v: number, min?: number, max?: number}], sorted by t.
 * Returns an <svg class="chart"> whose series path carries data-points = number of points.
 */
export function timeChart(points, { unit = '', label = '' } = {}) {
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${label} history, ${points.length} points` });
  if (!points.length) {
    svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, t('No values in this period')));
    return svg;
  }
  const t0 = points[0].t;
  const t1 = points[points.length - 1].t;
  let lo = Math.min(...points.map((p) => p.min ?? p.v));
  let hi = Math.max(...points.map((p) => p.max ?? p.v));
  if (lo === hi) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.05;
  lo -= pad; hi += pad;
  const x = (at) => M.left + (t1 === t0 ? (W - M.left - M.right) / 2 : ((at - t0) / (t1 - t0)) * (W - M.left - M.right));
  const y = (v) => M.top + (1 - (v - lo) / (hi - lo)) * (H - M.top - M.bottom);
  svg.append(s('line', { class: 'axis', x1: M.left, y1: H - M.bottom, x2: W - M.right, y2: H - M.bottom }),
    s('line', { class: 'axis', x1: M.left, y1: M.top, x2: M.left, y2: H - M.bottom }));
  for (let i = 0; i <= 4; i += 1) {
    const v = lo + ((hi - lo) * i) / 4;
    svg.append(s('text', { x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, `${+v.toPrecision(4)}`));
  }
  svg.append(s('text', { x: M.left, y: H - 10 }, fmtTime(new Date(t0).toISOString())),
    s('text', { x: W - M.right, y: H - 10, 'text-anchor': 'end' }, fmtTime(new Date(t1).toISOString())));
  if (unit) svg.append(s('text', { x: M.left + 6, y: M.top + 10, class: 'unit-label' }, unit));
  if (points.some((p) => p.min !== undefined && p.max !== undefined)) {
    const upper = points.map((p) => `${x(p.t).toFixed(1)},${y(p.max ?? p.v).toFixed(1)}`);
    const lower = points.slice().reverse().map((p) => `${x(p.t).toFixed(1)},${y(p.min ?? p.v).toFixed(1)}`);
    svg.append(s('polygon', { class: 'band', points: [...upper, ...lower].join(' ') }));
  }
  const d = points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
  svg.append(s('path', { class: 'series', d, 'data-points': points.length }));
  if (points.length === 1) {
    const p = points[0];
    if (p.min !== undefined && p.max !== undefined) svg.append(s('line', { class: 'series', x1: x(t0), x2: x(t0), y1: y(p.min), y2: y(p.max) }));
    svg.append(s('circle', { cx: x(t0), cy: y(p.v), r: 4 }));
  }
  return svg;
}
