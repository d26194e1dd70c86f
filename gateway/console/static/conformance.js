// Conformance: run a shipped profile against a target with a progress bar; past runs, their reports and the clause.

import { api, errorBox, fmtTime, h, info } from './common.js';
import { t } from './i18n.js';

const PROFILES = ['territoire-essentiel', 'territoire-complet', 'fournisseur-donnees'];
const DOWNLOADS = [['report.json', 'JSON'], ['report.junit.xml', 'JUnit'], ['report.html', 'HTML'],
  ['clause.fr.html', 'Clause FR'], ['clause.en.html', 'Clause EN']];

function fileUrl(run, name, download) {
  return `/console/api/conformance/${encodeURIComponent(run.id)}/${name}${download ? '?download=1' : ''}`;
}

export async function renderConformance(view, _rest, params) {
  const { conformanceTarget } = await info();
  const profile = h('input', { id: 'cf-profile', list: 'cf-profiles', value: PROFILES[0], required: true, size: 22 });
  const target = h('input', { id: 'cf-target', type: 'url', value: conformanceTarget || '', required: true, size: 40 });
  const lang = h('select', { id: 'cf-lang' }, h('option', { value: 'fr' }, 'français'), h('option', { value: 'en' }, 'English'));
  const token = h('input', { id: 'cf-token', type: 'password', autocomplete: 'off', placeholder: t('if the target needs one') });
  const start = h('button', { type: 'submit' }, t('Run'));
  const progress = h('div', { id: 'cf-progress', 'aria-live': 'polite' });
  const runs = h('div', { class: 'table-wrap' });
  const report = h('div', { id: 'cf-report' });
  const form = h('form', { class: 'toolbar' },
    h('label', { for: 'cf-profile' }, t('Profile'), profile, h('datalist', { id: 'cf-profiles' }, PROFILES.map((p) => h('option', { value: p })))),
    h('label', { for: 'cf-target' }, t('Target (NGSI-LD API)'), target),
    h('label', { for: 'cf-lang' }, t('Report language'), lang),
    h('label', { for: 'cf-token' }, t('Target token'), token),
    start);
  view.append(h('h1', {}, t('Conformance')), form, progress, h('h2', {}, t('Runs')), runs, report);

  let timer = null;

  function showReport(run) {
    report.replaceChildren(h('h2', {}, t('Report {0}', run.id)),
      h('iframe', { src: fileUrl(run, 'report.html', false), title: `conformance report ${run.id}`, class: 'report' }));
  }

  async function refresh() {
    let doc;
    try {
      doc = await api('/console/api/conformance');
    } catch (err) {
      runs.replaceChildren(errorBox(err));
      return;
    }
    const current = doc.runs.find((r) => r.status === 'running');
    start.disabled = doc.running;
    if (current) {
      progress.replaceChildren(h('label', { for: 'cf-bar' }, t('Running {0} against {1}: {2}/{3} checks ', current.profile, current.target, current.done, current.total || '?')),
        h('progress', { id: 'cf-bar', max: current.total || 1, value: current.done }),
        h('div', { class: 'muted' }, current.current || ''));
    } else progress.replaceChildren();
    if (!doc.runs.length) {
      runs.replaceChildren(h('p', { class: 'muted' }, t('No run yet.')));
    } else {
      runs.replaceChildren(h('table', { id: 'cf-runs' },
        h('thead', {}, h('tr', {}, [t('Started'), t('Profile'), t('Target'), t('Result'), t('Reports')].map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, doc.runs.map((r) => {
          const open = r.files.includes('report.html') ? h('button', { type: 'button' }, t('Read')) : null;
          if (open) open.addEventListener('click', () => showReport(r));
          return h('tr', { 'data-run': r.id, 'data-status': r.status },
            h('td', {}, fmtTime(r.started)), h('td', {}, r.profile), h('td', {}, h('code', {}, r.target)),
            h('td', { class: r.status === 'failed' ? 'why' : '' }, r.status === 'running' ? t('running…') : (r.message || r.status).split('\n')[0]),
            h('td', {}, open, ' ', DOWNLOADS.filter(([name]) => r.files.includes(name)).map(([name, label]) =>
              [h('a', { href: fileUrl(r, name, true), download: '' }, label), ' '])));
        }))));
    }
    if (doc.running && !timer) timer = setInterval(refresh, 1000);
    if (!doc.running && timer) { clearInterval(timer); timer = null; }
    return doc;
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    start.disabled = true;
    try {
      const body = { profile: profile.value.trim(), target: target.value.trim(), lang: lang.value };
      if (token.value) body.token = token.value;
      await api('/console/api/conformance', { method: 'POST', body });
      token.value = '';
    } catch (err) {
      progress.replaceChildren(errorBox(err));
    }
    await refresh();
  });
  const doc = await refresh();
  const wanted = params.get('run') && doc && doc.runs.find((r) => r.id === params.get('run'));
  if (wanted) showReport(wanted);
  return () => { if (timer) clearInterval(timer); };
}
