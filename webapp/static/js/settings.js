// The settings form: every element with [data-setting] is one field, typed by data-kind
// (int, float, string, lines, json). Values live in a plain object kept in localStorage.

// UI defaults for fields the server's defaults do not give (or give as "no limit").
const UI_DEFAULTS = { system: '', n_predict: 512, n_probs: 0, stop: '', grammar: '', json_schema: '' };

/** The starting values: the server's defaults (rendered into the page) over the UI's own. */
export function defaultSettings(serverDefaults = {}) {
  const out = { ...UI_DEFAULTS };
  for (const key of ['temperature', 'top_k', 'top_p', 'min_p', 'typical_p', 'repeat_penalty',
    'repeat_last_n', 'presence_penalty', 'frequency_penalty', 'mirostat', 'mirostat_tau',
    'mirostat_eta', 'seed']) {
    if (typeof serverDefaults[key] === 'number') out[key] = serverDefaults[key];
  }
  if (typeof serverDefaults.n_predict === 'number' && serverDefaults.n_predict > 0) {
    out.n_predict = serverDefaults.n_predict;
  }
  return out;
}

function fields(form) {
  return [...form.querySelectorAll('[data-setting]')];
}

export function writeForm(form, values) {
  for (const el of fields(form)) {
    const value = values[el.name];
    el.value = value === undefined || value === null ? '' : String(value);
  }
}

/**
 * The form's values as {values, error}: numbers parsed (an empty number field keeps the
 * default), text kept as typed. `error` names the first field that cannot be used.
 */
export function readForm(form, defaults) {
  const values = {};
  let error = null;
  for (const el of fields(form)) {
    const kind = el.dataset.kind;
    const raw = el.value;
    el.removeAttribute('aria-invalid');
    if (kind === 'int' || kind === 'float') {
      if (raw.trim() === '') {
        values[el.name] = defaults[el.name];
        continue;
      }
      const n = Number(raw);
      if (!Number.isFinite(n) || (kind === 'int' && !Number.isInteger(n))) {
        el.setAttribute('aria-invalid', 'true');
        error = error || `${labelOf(el)}: expected ${kind === 'int' ? 'a whole number' : 'a number'}`;
        continue;
      }
      values[el.name] = n;
    } else {
      values[el.name] = raw;
      if (kind === 'json' && raw.trim()) {
        try {
          JSON.parse(raw);
        } catch (e) {
          el.setAttribute('aria-invalid', 'true');
          error = error || `${labelOf(el)}: not valid JSON (${e.message})`;
        }
      }
    }
  }
  return { values, error };
}

function labelOf(el) {
  return el.closest('label')?.querySelector('.field-label')?.textContent || el.name;
}

/** Stop strings: one per line, with \n, \t and \\ escapes. */
export function parseStops(text) {
  return String(text || '')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.replace(/\\(n|t|\\)/g, (_, c) => ({ n: '\n', t: '\t', '\\': '\\' })[c]));
}

const SAMPLING = ['temperature', 'top_k', 'top_p', 'min_p', 'typical_p', 'repeat_penalty',
  'repeat_last_n', 'presence_penalty', 'frequency_penalty', 'mirostat', 'mirostat_tau',
  'mirostat_eta', 'seed'];

/** The request fields shared by both endpoints. */
export function samplingFields(s) {
  const body = {};
  for (const key of SAMPLING) {
    if (typeof s[key] === 'number') body[key] = s[key];
  }
  const stop = parseStops(s.stop);
  if (stop.length) body.stop = stop;
  if (s.grammar && s.grammar.trim()) body.grammar = s.grammar;
  else if (s.json_schema && s.json_schema.trim()) body.json_schema = JSON.parse(s.json_schema);
  return body;
}
