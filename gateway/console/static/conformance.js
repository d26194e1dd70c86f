// Conformance: not in the console yet (the `jonction conformance` command runs profiles and writes reports).

import { h } from './common.js';

export async function renderConformance(view) {
  view.append(h('h1', {}, 'Conformance'),
    h('p', { class: 'notyet' }, 'Not yet in the console. Run a profile with ',
      h('code', {}, 'jonction conformance --help'), ': it writes the JSON, JUnit and HTML reports.'));
}
