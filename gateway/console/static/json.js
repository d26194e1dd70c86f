// JSON pretty-printer as DOM, with the node at a JSON pointer (RFC 6901) highlighted.

import { h } from './common.js';

function unescapeToken(token) {
  return token.replace(/~1/g, '/').replace(/~0/g, '~');
}

/** The tokens of a pointer ('/a/0' -> ['a', '0']), null when it is not one. */
export function pointerTokens(pointer) {
  if (typeof pointer !== 'string' || (pointer !== '' && !pointer.startsWith('/'))) return null;
  return pointer === '' ? [] : pointer.slice(1).split('/').map(unescapeToken);
}

/** The deepest prefix of `tokens` that exists in `doc` (its length). */
export function resolvedDepth(doc, tokens) {
  let node = doc;
  let depth = 0;
  for (const t of tokens) {
    if (node !== null && typeof node === 'object' && Object.prototype.hasOwnProperty.call(node, t)) {
      node = node[t];
      depth += 1;
    } else break;
  }
  return depth;
}

/**
 * A <pre> showing `doc` indented; the node at `pointer` (or its deepest existing ancestor) gets class "hl".
 * Returns {pre, exact} where exact says whether the whole pointer was found.
 */
export function prettyJson(doc, pointer) {
  const tokens = pointerTokens(pointer);
  const depth = tokens ? resolvedDepth(doc, tokens) : -1;
  const target = tokens ? tokens.slice(0, depth) : null;
  const pre = h('pre', { class: 'json', tabindex: '0' });
  function same(path) {
    return target !== null && path.length === target.length && path.every((t, i) => t === target[i]);
  }
  function value(node, path, indent) {
    const parts = [];
    if (node === null || typeof node !== 'object') {
      const cls = typeof node === 'string' ? 'str' : 'numv';
      parts.push(h('span', { class: cls }, JSON.stringify(node)));
    } else if (Array.isArray(node)) {
      if (!node.length) parts.push('[]');
      else {
        parts.push('[\n');
        node.forEach((item, i) => {
          const child = [...path, String(i)];
          const itemEl = value(item, child, indent + '  ');
          if (same(child)) itemEl.classList.add('hl');
          parts.push(indent + '  ', itemEl, i < node.length - 1 ? ',\n' : '\n');
        });
        parts.push(indent + ']');
      }
    } else {
      const keys = Object.keys(node);
      if (!keys.length) parts.push('{}');
      else {
        parts.push('{\n');
        keys.forEach((k, i) => {
          const child = [...path, k];
          const keyEl = h('span', { class: 'key' }, JSON.stringify(k));
          const line = h('span', { 'data-pointer': '/' + child.map((t) => t.replace(/~/g, '~0').replace(/\//g, '~1')).join('/') },
            keyEl, ': ', value(node[k], child, indent + '  '));
          if (same(child)) line.classList.add('hl');
          parts.push(indent + '  ', line, i < keys.length - 1 ? ',\n' : '\n');
        });
        parts.push(indent + '}');
      }
    }
    return h('span', {}, parts);
  }
  pre.append(value(doc, [], ''));
  return { pre, exact: tokens !== null && depth === tokens.length, found: target !== null && target.length > 0 };
}
