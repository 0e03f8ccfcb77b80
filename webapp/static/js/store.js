// What the page keeps across reloads, in localStorage: the conversation, the completion
// document, the settings, the mode, and (separately) the API key.

const STATE_KEY = 'llama-server-py:state:v1';
const API_KEY_KEY = 'llama-server-py:api-key';
// A message's image (a data: URI) is kept only up to this many characters (about 750 KB of
// file); a larger one, or every image when storage is full, is saved as its name alone.
export const MAX_STORED_IMAGE = 1_000_000;

export function emptyState() {
  return {
    mode: 'chat',
    settings: {},
    settingsOpen: null,
    messages: [],
    completion: { prompt: '', output: null },
  };
}

export function loadState() {
  const state = emptyState();
  try {
    const saved = JSON.parse(localStorage.getItem(STATE_KEY) || 'null');
    if (saved && typeof saved === 'object') {
      if (saved.mode === 'chat' || saved.mode === 'completion') state.mode = saved.mode;
      if (saved.settings && typeof saved.settings === 'object') state.settings = saved.settings;
      if (typeof saved.settingsOpen === 'boolean') state.settingsOpen = saved.settingsOpen;
      if (Array.isArray(saved.messages)) state.messages = saved.messages.filter(validMessage);
      if (saved.completion && typeof saved.completion === 'object') {
        state.completion.prompt = String(saved.completion.prompt || '');
        if (saved.completion.output && typeof saved.completion.output.content === 'string') {
          state.completion.output = saved.completion.output;
        }
      }
    }
  } catch {
    // A corrupt or foreign value: start over rather than fail to load.
  }
  return state;
}

function validMessage(m) {
  if (!m || (m.role !== 'user' && m.role !== 'assistant') || typeof m.content !== 'string') return false;
  if (m.images !== undefined) {
    m.images = Array.isArray(m.images) ? m.images.filter(validImage) : [];
  }
  return true;
}

function validImage(i) {
  return i && typeof i.name === 'string' && (i.url === undefined || typeof i.url === 'string');
}

/** `m` with each image `keep(image)` refuses reduced to its name and type (no data). */
function withImages(m, keep) {
  if (!m.images) return m;
  return { ...m, images: m.images.map((i) => (i.url && keep(i) ? i : { name: i.name, type: i.type })) };
}

export function saveState(state) {
  // A reply still streaming is saved as it stands, marked stopped: after a reload it is.
  const settled = ({ pending, ...rest }) => (pending ? { ...rest, stopped: true } : rest);
  const messages = state.messages.map(settled);
  const output = state.completion.output;
  const completion = { prompt: state.completion.prompt, output: output ? settled(output) : null };
  const write = (keep) => localStorage.setItem(STATE_KEY, JSON.stringify({
    mode: state.mode, settings: state.settings, settingsOpen: state.settingsOpen,
    messages: messages.map((m) => withImages(m, keep)), completion,
  }));
  try {
    write((image) => image.url.length <= MAX_STORED_IMAGE);
  } catch {
    try {
      write(() => false);   // storage full: the text without the images
    } catch {
      // Storage full or disabled: the page still works, it just forgets on reload.
    }
  }
}

export function loadApiKey() {
  try {
    return localStorage.getItem(API_KEY_KEY) || '';
  } catch {
    return '';
  }
}

export function saveApiKey(key) {
  try {
    if (key) localStorage.setItem(API_KEY_KEY, key);
    else localStorage.removeItem(API_KEY_KEY);
  } catch {
    // Not persisted; kept in memory by the caller.
  }
}
