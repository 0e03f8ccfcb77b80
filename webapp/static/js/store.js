// What the page keeps across reloads, in localStorage: the conversation, the completion
// document, the settings, the mode, and (separately) the API key.

const STATE_KEY = 'llama-server-py:state:v1';
const API_KEY_KEY = 'llama-server-py:api-key';

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
  return m && (m.role === 'user' || m.role === 'assistant') && typeof m.content === 'string';
}

export function saveState(state) {
  // A reply still streaming is saved as it stands, marked stopped: after a reload it is.
  const settled = ({ pending, ...rest }) => (pending ? { ...rest, stopped: true } : rest);
  const messages = state.messages.map(settled);
  const output = state.completion.output;
  const completion = { prompt: state.completion.prompt, output: output ? settled(output) : null };
  try {
    localStorage.setItem(STATE_KEY, JSON.stringify({
      mode: state.mode, settings: state.settings, settingsOpen: state.settingsOpen,
      messages, completion,
    }));
  } catch {
    // Storage full or disabled: the page still works, it just forgets on reload.
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
