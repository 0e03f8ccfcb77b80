// Turning replies into DOM: text with per-token spans (when probabilities came with it),
// the hover/tap popover of token probabilities, and the small meta line under a reply.

import { describeTimings } from './api.js';

// How far ahead a token's text may be found: a token that is only part of a UTF-8 character
// has no text of its own, so the next token's text starts a character or two later.
const SLACK = 8;

/**
 * Fill `el` with `text`. When `probs` is given, each token whose text continues `text` gets
 * a span carrying its index; whatever the tokens do not cover (a character split across
 * tokens, text held back for a stop string) stays plain text.
 */
export function renderText(el, text, probs) {
  el.replaceChildren();
  let pos = 0;
  if (Array.isArray(probs)) {
    probs.forEach((tok, i) => {
      const piece = typeof tok.content === 'string' ? tok.content : '';
      const ahead = piece ? text.slice(pos, pos + SLACK + piece.length).indexOf(piece) : -1;
      if (ahead < 0) return;
      const at = pos + ahead;
      if (at > pos) el.append(document.createTextNode(text.slice(pos, at)));
      pos = at;
      const span = document.createElement('span');
      span.className = 'tok';
      span.dataset.tok = String(i);
      span.textContent = piece;
      el.append(span);
      pos += piece.length;
    });
  }
  if (pos < text.length) el.append(document.createTextNode(text.slice(pos)));
}

export function renderMeta(el, reply) {
  const parts = [];
  const speed = describeTimings(reply);
  if (speed) parts.push(speed);
  if (reply.stopped) parts.push('stopped');
  el.replaceChildren();
  if (reply.error) {
    const err = document.createElement('span');
    err.className = 'error';
    err.textContent = reply.error;
    el.append(err);
  }
  if (parts.length) el.append(document.createTextNode((reply.error ? ' · ' : '') + parts.join(' · ')));
  el.hidden = !reply.error && parts.length === 0;
}

function visible(s) {
  return s.replace(/\n/g, '↵').replace(/\t/g, '⇥').replace(/ /g, '␣') || '∅';
}

/**
 * The popover: `lookup(span)` returns the token entry ({content, probs}) for a `.tok` span.
 * Shown on mouse hover and on tap/keyboard focus (phones have no hover).
 */
export function installProbsPopover(root, pop, lookup) {
  let current = null;

  function show(span) {
    const entry = lookup(span);
    if (!entry || !Array.isArray(entry.probs) || entry.probs.length === 0) return;
    current = span;
    const table = document.createElement('table');
    for (const p of entry.probs) {
      const row = table.insertRow();
      row.className = p.tok_str === entry.content ? 'chosen' : '';
      const tok = row.insertCell();
      tok.className = 'p-tok';
      tok.textContent = visible(String(p.tok_str));
      const bar = row.insertCell();
      bar.className = 'p-bar';
      const fill = document.createElement('span');
      fill.style.width = `${Math.max(0, Math.min(1, p.prob)) * 100}%`;
      bar.append(fill);
      const pct = row.insertCell();
      pct.className = 'p-val';
      pct.textContent = `${(p.prob * 100).toFixed(1)}%`;
    }
    pop.replaceChildren(table);
    pop.hidden = false;
    const r = span.getBoundingClientRect();
    const w = pop.offsetWidth;
    const h = pop.offsetHeight;
    const left = Math.min(Math.max(8, r.left), window.innerWidth - w - 8);
    const top = r.bottom + 6 + h > window.innerHeight ? r.top - h - 6 : r.bottom + 6;
    pop.style.left = `${left}px`;
    pop.style.top = `${Math.max(8, top)}px`;
  }

  function hide() {
    current = null;
    pop.hidden = true;
  }

  root.addEventListener('mouseover', (e) => {
    const span = e.target.closest('.tok');
    if (span && span !== current) show(span);
  });
  root.addEventListener('mouseout', (e) => {
    if (current && !(e.relatedTarget && current.contains(e.relatedTarget))) hide();
  });
  // A tap fires mouseover then click: both show, and a tap anywhere else hides.
  document.addEventListener('click', (e) => {
    const span = e.target.closest && root.contains(e.target) ? e.target.closest('.tok') : null;
    if (span) show(span);
    else hide();
  });
  window.addEventListener('scroll', hide, true);
  window.addEventListener('resize', hide);
}

/**
 * The parts of a reply besides its text: the model's reasoning in a collapsible block
 * (open while it is being written, closed once the answer starts) and its tool calls, each
 * shown as the function's name and its arguments.
 */
export function renderExtras(li, msg) {
  const box = li.querySelector('.reasoning');
  if (box) {
    const has = Boolean(msg.reasoning);
    box.hidden = !has;
    if (has) {
      box.querySelector('.reasoning-text').textContent = msg.reasoning;
      const thinking = Boolean(msg.pending) && !msg.content && !(msg.toolCalls && msg.toolCalls.length);
      if (box.dataset.auto !== 'off') box.open = thinking;
      box.querySelector('summary').textContent = thinking ? 'Thinking…' : 'Reasoning';
    }
  }
  const list = li.querySelector('.tool-calls');
  if (list) {
    const calls = msg.toolCalls || [];
    list.hidden = calls.length === 0;
    list.replaceChildren(...calls.map((call) => {
      const item = document.createElement('li');
      item.className = 'tool-call';
      const name = document.createElement('code');
      name.className = 'tool-name';
      name.textContent = call.name;
      const args = document.createElement('pre');
      args.className = 'tool-args';
      let shown = call.arguments;
      try {
        shown = JSON.stringify(JSON.parse(call.arguments), null, 2);
      } catch (e) { /* still streaming: show the raw text */ }
      args.textContent = shown;
      item.append(document.createTextNode('Tool call: '), name, args);
      return item;
    }));
  }
}
