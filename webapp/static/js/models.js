// The model picker. It asks GET /models (the URL is rendered into the <select> by the
// server) and shows itself only when the server lists more than one model (router mode);
// the chosen id (or the only one listed) goes into every request's `model` field. The
// choice is kept in localStorage; a model the server no longer lists falls back to the first.

const MODEL_KEY = 'llama-server-py:model';

function remembered() {
  try {
    return localStorage.getItem(MODEL_KEY) || '';
  } catch {
    return '';
  }
}

function remember(id) {
  try {
    localStorage.setItem(MODEL_KEY, id);
  } catch {
    // Not persisted: the picker still holds it for this page.
  }
}

/** The server's models (`[]` when it cannot say: an old server, a missing API key). */
async function listModels(url, apiKey) {
  try {
    const response = await fetch(url, { headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {} });
    if (!response.ok) return [];
    const body = await response.json();
    return Array.isArray(body.data) ? body.data.filter((m) => m && typeof m.id === 'string') : [];
  } catch {
    return [];
  }
}

function label(model) {
  const status = model.status && model.status.value;
  return status && status !== 'loaded' ? `${model.id} (${status})` : model.id;
}

/**
 * Wire the picker. `getApiKey()` gives the key to send; `onChange(id)` is told the chosen
 * model ('' while the picker is hidden). Returns {current(), loaded(), refresh()}: call refresh() again when
 * the statuses shown may have changed (after a request, which may have loaded a model).
 */
export function installModelPicker(select, getApiKey, onChange) {
  let current = '';
  let statuses = {};                  // id -> status value ('loaded', 'unloaded', ...)

  async function refresh() {
    const models = await listModels(select.dataset.url, getApiKey());
    statuses = Object.fromEntries(models.map((m) => [m.id, (m.status && m.status.value) || 'loaded']));
    select.hidden = models.length < 2;
    if (models.length < 2) {          // nothing to choose; a lone router model is still named
      current = models.length ? models[0].id : '';
      onChange('');
      return;
    }
    const wanted = current || remembered();
    const ids = models.map((m) => m.id);
    current = ids.includes(wanted) ? wanted : ids[0];
    select.replaceChildren(...models.map((m) => new Option(label(m), m.id, false, m.id === current)));
    select.value = current;
    onChange(current);
  }

  select.addEventListener('change', () => {
    current = select.value;
    remember(current);
    onChange(current);
  });

  // whether the chosen model is running (a single-model server's always is)
  const loaded = () => !current || statuses[current] === undefined || statuses[current] === 'loaded';
  return { current: () => current, loaded, refresh };
}
