// Conformance: not in the console yet (the `jonction check` command runs profiles and writes reports).

import { h } from './common.js';

export async function renderConformance(view) {
  view.append(h('h1', {}, 'Conformance'),
    h('p', { class: 'notyet' }, 'Not yet in the console: ',
      h('code', {}, 'jonction check --profile NAME --target URL --out reports/'),
      ' runs a profile and writes the JSON, JUnit and HTML reports; ', h('code', {}, 'jonction clause'), ' writes the contract clause (FR/EN).'));
}
