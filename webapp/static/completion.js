/**
 * completion.js: a small client for the server's streaming completion API.
 *
 * Served at `/completion.js`, so any page (for instance one served with `--path`) can do:
 *
 *     import { llama } from '/completion.js'
 *     for await (const chunk of llama('Tell me a joke', { n_predict: 64 })) {
 *       document.write(chunk.data.content)
 *     }
 *
 * Every helper takes the same three things:
 * - `prompt`: the prompt (a string, or whatever `POST /completion` accepts as `prompt`);
 * - `params`: request fields merged over {@link paramDefaults} (`n_predict`, `temperature`,
 *   `stop`, `n_probs`, `grammar`, ... see docs/server.md). `params.api_key`, if given, is sent
 *   as `Authorization: Bearer ...` and not as a body field;
 * - `config`: how to reach the server: `controller` (an AbortController; `abort()` stops the
 *   generation and the server frees the slot), `api_url` (base URL, default: this origin),
 *   `endpoint` (default `/completion`), `url` (a full URL, overrides both), `api_key`.
 *
 * Plain ES module, no dependencies.
 * @module completion
 */

/** Fields sent with every request unless `params` overrides them. */
export const paramDefaults = {
  stream: true,
  n_predict: 500,
  temperature: 0.2,
  stop: ['</s>'],
};

/** The server's default generation settings, once known (from `/props` or a final chunk). */
let generationSettings = null;

/**
 * An HTTP or in-stream error from the server. `status` is the HTTP status (0 when the error
 * came inside an event stream) and `body` the parsed OpenAI-style error object, if any.
 */
export class LlamaError extends Error {
  constructor(message, status = 0, body = null) {
    super(message);
    this.name = 'LlamaError';
    this.status = status;
    this.body = body;
  }
}

function baseUrl(config) {
  return (config.api_url || '').replace(/\/+$/, '');
}

function endpointUrl(config, fallback) {
  return config.url || baseUrl(config) + (config.endpoint || fallback);
}

function authHeaders(key) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorFrom(response) {
  const text = await response.text().catch(() => '');
  let body = null;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    body = JSON.parse(text);
    message = body?.error?.message || message;
  } catch {
    if (text) message = text;
  }
  return new LlamaError(message, response.status, body);
}

/**
 * The events of a `text/event-stream` response, as `{event, data, id, retry}` with `data` the
 * raw string (several `data:` lines joined by newlines). Comment lines are skipped.
 * @param {Response} response a fetch response whose body is an event stream
 * @returns {AsyncGenerator<{event: string, data: string, id?: string, retry?: number}>}
 */
export async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let event = { event: 'message', data: [] };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = done ? '' : lines.pop();
      for (const line of lines) {
        if (line === '') {
          if (event.data.length) yield { ...event, data: event.data.join('\n') };
          event = { event: 'message', data: [] };
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'data') event.data.push(value);
        else if (field === 'event') event.event = value;
        else if (field === 'id') event.id = value;
        else if (field === 'retry') event.retry = Number(value);
        else if (field === 'error') event.data.push(JSON.stringify({ error: parseMaybe(value) }));
      }
      if (done) break;
    }
    if (event.data.length) yield { ...event, data: event.data.join('\n') };
  } finally {
    // Stopping early (break, return, abort) must also close the connection.
    reader.cancel().catch(() => {});
  }
}

function parseMaybe(text) {
  try {
    return JSON.parse(text);
  } catch {
    return { message: text };
  }
}

/**
 * POST `body` as JSON to `url` and yield each streamed event with `data` parsed from JSON.
 * Ends at an OpenAI-style `data: [DONE]`, and throws a {@link LlamaError} on an HTTP error or
 * an `{"error": ...}` event. Used by {@link llama} and by the chat page for
 * `/v1/chat/completions`.
 * @param {string} url
 * @param {object} body
 * @param {{controller?: AbortController, api_key?: string}} [config]
 * @returns {AsyncGenerator<{event: string, data: object, id?: string, retry?: number}>}
 */
export async function* streamJSON(url, body, config = {}) {
  const controller = config.controller || new AbortController();
  const response = await fetch(url, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: {
      'Content-Type': 'application/json',
      Accept: 'text/event-stream',
      ...authHeaders(config.api_key),
    },
    signal: controller.signal,
  });
  if (!response.ok) throw await errorFrom(response);
  for await (const raw of sseEvents(response)) {
    if (raw.data === '[DONE]') return;
    const data = JSON.parse(raw.data);
    if (data && data.error) {
      throw new LlamaError(data.error.message || String(data.error), 0, data);
    }
    yield { ...raw, data };
  }
}

/**
 * Complete `prompt`, yielding one `{data}` event per streamed chunk; `data.content` is the new
 * text, and the last chunk has `data.stop === true` with `timings`, `generation_settings`, and
 * the other result fields. The generator's return value is the whole generated text.
 * Aborting `config.controller` ends the generator quietly.
 *
 *     const controller = new AbortController()
 *     for await (const chunk of llama(prompt, { n_predict: 128 }, { controller })) {
 *       out.textContent += chunk.data.content
 *     }
 *
 * @param {string|Array} prompt
 * @param {object} [params] request fields over {@link paramDefaults}
 * @param {{controller?: AbortController, api_url?: string, endpoint?: string, url?: string, api_key?: string}} [config]
 * @returns {AsyncGenerator<{event: string, data: object}, string>}
 */
export async function* llama(prompt, params = {}, config = {}) {
  const controller = config.controller || new AbortController();
  const { api_key: paramKey, ...rest } = params;
  const body = { ...paramDefaults, ...rest, prompt };
  const url = endpointUrl(config, '/completion');
  let content = '';
  try {
    const events = streamJSON(url, body, { controller, api_key: config.api_key || paramKey });
    for await (const chunk of events) {
      content += chunk.data.content || '';
      yield chunk;
      if (chunk.data.stop) {
        if (chunk.data.generation_settings) generationSettings = chunk.data.generation_settings;
        break;
      }
    }
  } catch (error) {
    if (error.name !== 'AbortError') throw error;
  } finally {
    controller.abort();
  }
  return content;
}

/**
 * Like {@link llama}, but returns an EventTarget that dispatches CustomEvents:
 * `message` (detail: each chunk's data), `generation_settings` (detail: the settings used),
 * `timings` (detail: the final timings), `done` (detail: `{content}`), and `error`
 * (detail: the Error) if the request fails.
 * @returns {EventTarget}
 */
export function llamaEventTarget(prompt, params = {}, config = {}) {
  const target = new EventTarget();
  (async () => {
    let content = '';
    try {
      for await (const chunk of llama(prompt, params, config)) {
        const data = chunk.data;
        content += data.content || '';
        target.dispatchEvent(new CustomEvent('message', { detail: data }));
        if (data.generation_settings) {
          target.dispatchEvent(new CustomEvent('generation_settings', { detail: data.generation_settings }));
        }
        if (data.timings) target.dispatchEvent(new CustomEvent('timings', { detail: data.timings }));
      }
      target.dispatchEvent(new CustomEvent('done', { detail: { content } }));
    } catch (error) {
      target.dispatchEvent(new CustomEvent('error', { detail: error }));
    }
  })();
  return target;
}

/**
 * Like {@link llama}, but resolves to the whole generated text (rejects on error).
 *
 *     const text = await llamaPromise('Tell me a joke', { n_predict: 64 })
 *
 * @returns {Promise<string>}
 */
export async function llamaPromise(prompt, params = {}, config = {}) {
  let content = '';
  for await (const chunk of llama(prompt, params, config)) {
    content += chunk.data.content || '';
  }
  return content;
}

/**
 * The older callback form: `params.prompt` is the prompt, `callback` gets each chunk
 * (`{data}`), and `controller` aborts it.
 * @param {object} params
 * @param {AbortController} [controller]
 * @param {(chunk: {data: object}) => void} callback
 */
export async function llamaComplete(params, controller, callback) {
  for await (const chunk of llama(params.prompt, params, { controller })) {
    callback(chunk);
  }
}

/**
 * The server's default generation settings (`default_generation_settings` of `GET /props`),
 * fetched once and cached.
 * @param {{api_url?: string, api_key?: string}} [config]
 * @returns {Promise<object>}
 */
export async function llamaModelInfo(config = {}) {
  if (!generationSettings) {
    const response = await fetch(baseUrl(config) + '/props', { headers: authHeaders(config.api_key) });
    if (!response.ok) throw await errorFrom(response);
    generationSettings = (await response.json()).default_generation_settings;
  }
  return generationSettings;
}
