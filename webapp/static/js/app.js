// The front end: chat and raw completion modes over the server's streaming endpoints.
// Endpoint URLs, the model name and the server's defaults come from the page's
// #server-config JSON block; nothing here hard-codes a URL.

import { fetchVision, mergeToolCall, streamChat, streamCompletion } from './api.js';
import { installAttachments, messageImages } from './attachments.js';
import { installModelPicker } from './models.js';
import { installProbsPopover, renderExtras, renderMeta, renderText } from './render.js';
import { defaultSettings, readForm, writeForm } from './settings.js';
import { loadApiKey, loadState, saveApiKey, saveState } from './store.js';

const config = JSON.parse(document.getElementById('server-config').textContent);
const $ = (id) => document.getElementById(id);

const defaults = defaultSettings(config.defaults);
const state = loadState();
state.settings = { ...defaults, ...state.settings };
let apiKey = loadApiKey();
let running = null;   // {controller, mode} while a request streams

// ---------------------------------------------------------------------------- modes

function setMode(mode) {
  if (!config.urls.chat) mode = 'completion';   // a server without the OpenAI chat route
  state.mode = mode;
  for (const tab of document.querySelectorAll('[data-mode]')) {
    tab.setAttribute('aria-selected', String(tab.dataset.mode === mode));
  }
  $('chat-view').hidden = mode !== 'chat';
  $('completion-view').hidden = mode !== 'completion';
  document.body.dataset.mode = mode;
  saveState(state);
}

for (const tab of document.querySelectorAll('[data-mode]')) {
  tab.addEventListener('click', () => setMode(tab.dataset.mode));
}
$('tab-chat').hidden = !config.urls.chat;

// ---------------------------------------------------------------------------- settings

const wide = window.matchMedia('(min-width: 900px)');

function setSettingsOpen(open, remember = true) {
  document.body.classList.toggle('settings-open', open);
  $('settings-toggle').setAttribute('aria-expanded', String(open));
  if (remember && wide.matches) {
    state.settingsOpen = open;
    saveState(state);
  }
}

function applySettingsForm() {
  const { values, error } = readForm($('settings-form'), defaults);
  state.settings = { ...state.settings, ...values };
  $('settings-error').hidden = !error;
  $('settings-error').textContent = error || '';
  saveState(state);
  return error;
}

writeForm($('settings-form'), state.settings);
$('settings-form').addEventListener('input', applySettingsForm);
$('settings-form').addEventListener('submit', (e) => e.preventDefault());
$('settings-toggle').addEventListener('click', () =>
  setSettingsOpen(!document.body.classList.contains('settings-open')));
$('settings-close').addEventListener('click', () => setSettingsOpen(false));
$('settings-reset').addEventListener('click', () => {
  state.settings = { ...defaults };
  writeForm($('settings-form'), state.settings);
  applySettingsForm();
});
setSettingsOpen(wide.matches && state.settingsOpen !== false, false);
wide.addEventListener('change', () => setSettingsOpen(wide.matches && state.settingsOpen !== false, false));

// ---------------------------------------------------------------------------- model picker

// Shown only when the server lists several models (router mode); requests then name one.
const picker = installModelPicker($('model-picker'), () => apiKey, (id) => {
  document.querySelector('.model-name').hidden = Boolean(id);
  refreshVision();
});
const withModel = (settings) => ({ ...settings, model: picker.current() });

// ---------------------------------------------------------------------------- API key

function askApiKey(reason) {
  $('api-key-reason').textContent = reason;
  $('api-key-input').value = apiKey;
  if (!$('api-key-dialog').open) $('api-key-dialog').showModal();
}

$('api-key-form').addEventListener('submit', () => {
  apiKey = $('api-key-input').value.trim();
  saveApiKey(apiKey);
  $('api-key-change').hidden = false;
  picker.refresh();
});
$('api-key-change').addEventListener('click', () => askApiKey('The key sent with every request.'));
$('api-key-change').hidden = !(config.api_key_required || apiKey);
if (config.api_key_required && !apiKey) askApiKey('This server needs an API key.');

// ---------------------------------------------------------------------------- streaming

function setBusy(mode) {
  const busy = mode !== null;
  $('chat-send').disabled = busy;
  $('completion-run').disabled = busy;
  $('chat-stop').hidden = mode !== 'chat';
  $('completion-stop').hidden = mode !== 'completion';
  document.body.classList.toggle('busy', busy);
}

/** Stream `parts` (from api.js) into `reply`, calling `update` as text arrives. */
async function stream(mode, reply, start, update) {
  const controller = new AbortController();
  running = { controller, mode };
  setBusy(mode);
  const t0 = performance.now();
  try {
    for await (const part of start({ controller, api_key: apiKey })) {
      reply.content += part.text;
      if (part.reasoning) reply.reasoning = (reply.reasoning || '') + part.reasoning;
      for (const call of part.toolCalls || []) mergeToolCall(reply, call);
      if (part.probs.length) reply.probs = (reply.probs || []).concat(part.probs);
      if (part.timings) reply.timings = part.timings;
      if (part.usage) reply.usage = part.usage;
      update();
    }
  } catch (error) {
    if (error.name === 'AbortError') {
      reply.stopped = true;
    } else {
      reply.error = error.message || String(error);
      if (error.status === 401) askApiKey('The server did not accept the API key. Enter it again.');
    }
  } finally {
    reply.elapsedMs = performance.now() - t0;
    delete reply.pending;
    running = null;
    setBusy(null);
    update(true);
    saveState(state);
    picker.refresh();   // the request may have loaded its model (and unloaded another)
  }
}

function stop() {
  if (running) running.controller.abort();
}

$('chat-stop').addEventListener('click', stop);
$('completion-stop').addEventListener('click', stop);

// Renders at most once per frame while tokens arrive.
function throttled(fn) {
  let queued = false;
  return (now = false) => {
    if (now) {
      fn();
      return;
    }
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}

// ---------------------------------------------------------------------------- chat

const scroller = $('chat-scroll');

function nearBottom() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
}

function messageElement(msg, index) {
  const li = document.createElement('li');
  li.className = `message ${msg.role}`;
  li.dataset.msg = String(index);
  const role = document.createElement('div');
  role.className = 'role';
  role.textContent = msg.role === 'user' ? 'You' : 'Assistant';
  const content = document.createElement('div');
  content.className = 'content';
  const meta = document.createElement('div');
  meta.className = 'meta';
  const reasoning = document.createElement('details');
  reasoning.className = 'reasoning';
  reasoning.hidden = true;
  const summary = document.createElement('summary');
  const thought = document.createElement('div');
  thought.className = 'reasoning-text';
  reasoning.append(summary, thought);
  // once the user opens or closes it, the block stays as they left it
  summary.addEventListener('click', () => { reasoning.dataset.auto = 'off'; });
  const calls = document.createElement('ul');
  calls.className = 'tool-calls';
  calls.hidden = true;
  li.append(role, messageImages(msg.images), reasoning, content, calls, meta);
  fillMessage(li, msg);
  return li;
}

function fillMessage(li, msg) {
  li.classList.toggle('pending', Boolean(msg.pending));
  renderText(li.querySelector('.content'), msg.content, msg.probs);
  renderExtras(li, msg);
  renderMeta(li.querySelector('.meta'), msg);
}

function renderMessages() {
  $('messages').replaceChildren(...state.messages.map(messageElement));
  $('chat-empty').hidden = state.messages.length > 0;
  scroller.scrollTop = scroller.scrollHeight;
}

async function sendChat(text) {
  if (applySettingsForm()) return setSettingsOpen(true);
  const images = attachments.take();
  state.messages.push(images.length ? { role: 'user', content: text, images } : { role: 'user', content: text });
  saveState(state);
  const history = state.messages.filter((m) => !m.error && (m.role === 'user' || m.content));
  const reply = { role: 'assistant', content: '', pending: true };
  state.messages.push(reply);
  renderMessages();
  const li = $('messages').lastElementChild;
  const update = throttled(() => {
    const stick = nearBottom();
    fillMessage(li, reply);
    if (stick) scroller.scrollTop = scroller.scrollHeight;
  });
  await stream('chat', reply, (cfg) => streamChat(config.urls, withModel(state.settings), history, cfg), update);
}

const input = $('chat-input');

function fitInput() {
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

input.addEventListener('input', fitInput);
input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('chat-form').requestSubmit();
  }
});
$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if ((!text && !attachments.count()) || running) return;
  input.value = '';
  fitInput();
  sendChat(text);
});

// Images (attachments.js): offered when /props says the server takes them.
const attachments = installAttachments({
  button: $('chat-attach'), input: $('chat-file'), list: $('chat-attachments'),
  zone: $('chat-view'), notice: $('chat-attach-notice'),
});
let visionOf = null;   // the model (picker.current()) whose /props was read

async function refreshVision() {
  const model = picker.current();
  // an unloaded model's /props would be a 400 (nothing is loaded just to ask): ask once it runs
  if (!config.urls.chat || visionOf === model || !picker.loaded()) return;
  const vision = await fetchVision(config.urls.props, model, apiKey);
  if (vision === null || model !== picker.current()) return;   // unknown yet: asked again later
  visionOf = model;
  document.body.dataset.vision = String(vision);
  attachments.setEnabled(vision);
}

// ---------------------------------------------------------------------------- completion

const promptBox = $('completion-prompt');

function renderCompletion() {
  const out = state.completion.output;
  $('completion-output-box').hidden = !out;
  if (!out) return;
  $('completion-output').classList.toggle('pending', Boolean(out.pending));
  renderText($('completion-output'), out.content, out.probs);
  renderMeta($('completion-meta'), out);
}

promptBox.value = state.completion.prompt;
promptBox.addEventListener('input', () => {
  state.completion.prompt = promptBox.value;
  saveState(state);
});

$('completion-run').addEventListener('click', async () => {
  if (running) return;
  if (applySettingsForm()) return setSettingsOpen(true);
  const prompt = promptBox.value;
  const out = { content: '', pending: true };
  state.completion.output = out;
  renderCompletion();
  await stream('completion', out,
    (cfg) => streamCompletion(config.urls, withModel(state.settings), prompt, cfg), throttled(renderCompletion));
});

$('completion-append').addEventListener('click', () => {
  const out = state.completion.output;
  if (!out || running) return;
  promptBox.value += out.content;
  state.completion.prompt = promptBox.value;
  state.completion.output = null;
  renderCompletion();
  saveState(state);
});

// ---------------------------------------------------------------------------- the rest

$('new-conversation').addEventListener('click', () => {
  stop();
  if (state.mode === 'chat') {
    state.messages = [];
    renderMessages();
  } else {
    state.completion = { prompt: '', output: null };
    promptBox.value = '';
    renderCompletion();
  }
  saveState(state);
});

installProbsPopover(document.querySelector('.main'), $('probs-pop'), (span) => {
  const index = Number(span.dataset.tok);
  const holder = span.closest('[data-msg]');
  const reply = holder ? state.messages[Number(holder.dataset.msg)] : state.completion.output;
  return reply && reply.probs ? reply.probs[index] : null;
});

async function watchHealth() {
  const banner = $('banner');
  for (;;) {
    let status = 0;
    try {
      status = (await fetch(config.urls.health)).status;
    } catch {
      status = 0;
    }
    if (status === 200) {
      banner.hidden = true;
      return;
    }
    banner.hidden = false;
    banner.textContent = status === 503 ? 'Loading the model…' : 'The server is not answering; retrying…';
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

setMode(state.mode);
renderMessages();
renderCompletion();
fitInput();
watchHealth().then(refreshVision);
if (!config.api_key_required || apiKey) picker.refresh();   // else once the key is entered
