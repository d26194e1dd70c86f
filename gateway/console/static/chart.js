// A time-series chart drawn by uPlot (vendored): a line of values, or min/max as a band with the average as a line.

import { h } from './common.js';
import { t } from './i18n.js';
import { uplot } from './vendor.js';

const ACCENT = '#1f5fa8';
const [S, MIN, HOUR, DAY] = [1, 60, 3600, 86400];
// uPlot's table of time-axis labels, in 24-hour time and day-first dates (its default is US 12-hour):
// [tick step (s), label, then the label added when the year, month, day, hour, minute or second rolls over, mode]
const TIME_LABELS = [
  [365 * DAY, '{YYYY}', null, null, null, null, null, null, 1],
  [28 * DAY, '{MM}/{YYYY}', null, null, null, null, null, null, 1],
  [DAY, '{DD}/{MM}', '\n{YYYY}', null, null, null, null, null, 1],
  [HOUR, '{HH}:{mm}', '\n{DD}/{MM}/{YYYY}', null, '\n{DD}/{MM}', null, null, null, 1],
  [MIN, '{HH}:{mm}', '\n{DD}/{MM}/{YYYY}', null, '\n{DD}/{MM}', null, null, null, 1],
  [S, ':{ss}', '\n{DD}/{MM}/{YYYY} {HH}:{mm}', null, '\n{DD}/{MM} {HH}:{mm}', null, '\n{HH}:{mm}', null, 1],
];

/**
 * points: [{t: ms, v: number, min?: number, max?: number}], sorted by t; width: the pixels available.
 * Resolves to a <div class="chart"> holding uPlot's canvas; data-points is the number of points uPlot holds,
 * data-band is set when the min/max band is drawn.
 */
export async function timeChart(points, { unit = '', label = '', width = 720 } = {}) {
  const box = h('div', { class: 'chart', role: 'img', 'aria-label': t('{0} history, {1} points', label, points.length) });
  if (!points.length) {
    box.append(h('p', { class: 'muted' }, t('No values in this period')));
    box.dataset.points = '0';
    return box;
  }
  const UPlot = await uplot();
  const banded = points.some((p) => p.min !== undefined && p.max !== undefined);
  const data = [points.map((p) => p.t / 1000), points.map((p) => p.v)];
  const series = [{}, { label, stroke: ACCENT, width: 2 }];
  const opts = {
    width: Math.max(280, Math.min(width, 960)),
    height: 260,
    series,
    axes: [{ values: TIME_LABELS }, { label: unit || undefined }],
    legend: { live: false },
    cursor: { drag: { x: true, y: false } }, // drag across the chart to zoom into a time range
  };
  if (banded) {
    data.push(points.map((p) => p.min ?? p.v), points.map((p) => p.max ?? p.v));
    series.push({ label: 'min', stroke: '#8fb1dc', width: 1 }, { label: 'max', stroke: '#8fb1dc', width: 1 });
    opts.bands = [{ series: [3, 2], fill: 'rgba(31, 95, 168, 0.15)' }];
  }
  const chart = new UPlot(opts, data);
  box.append(chart.root);
  box.dataset.points = String(chart.data[0].length);
  if (banded) box.dataset.band = 'min-max';
  return box;
}
