// Requests to the two streaming endpoints, and one shape for what comes back:
// {text, reasoning, toolCalls, probs: [{content, probs: [{tok_str, prob}]}], timings, usage, done}.

import { streamJSON } from '../completion.js';
import { samplingFields } from './settings.js';

/** Stream a raw completion of `prompt` (native `POST /completion`). */
export async function* streamCompletion(urls, settings, prompt, config) {
  const body = { prompt, stream: true, n_predict: settings.n_predict, cache_prompt: true,
    ...samplingFields(settings) };
  if (settings.model) body.model = settings.model;   // router mode: the picker's choice
  if (settings.n_probs > 0) body.n_probs = settings.n_probs;
  for await (const chunk of streamJSON(urls.completion, body, config)) {
    yield fromNative(chunk.data);
    if (chunk.data.stop) return;
  }
}

/** Stream a chat reply (OpenAI `POST /v1/chat/completions`; the server applies the template). */
export async function* streamChat(urls, settings, messages, config) {
  const turns = messages.map(chatTurn);
  if (settings.system && settings.system.trim()) turns.unshift({ role: 'system', content: settings.system });
  const body = { messages: turns, stream: true, cache_prompt: true, ...samplingFields(settings) };
  if (settings.model) body.model = settings.model;
  if (settings.n_predict >= 0) body.max_tokens = settings.n_predict;
  if (settings.n_probs > 0) {
    body.logprobs = true;
    body.top_logprobs = settings.n_probs;
  }
  for await (const chunk of streamJSON(urls.chat, body, config)) {
    yield fromChat(chunk.data);
  }
}

/** A message as sent: with images, a content array of a text part and `image_url` parts. */
function chatTurn({ role, content, images }) {
  const kept = (images || []).filter((image) => image.url);   // not those storage dropped
  if (!kept.length) return { role, content };
  const parts = content ? [{ type: 'text', text: content }] : [];
  for (const image of kept) parts.push({ type: 'image_url', image_url: { url: image.url } });
  return { role, content: parts };
}

/**
 * Whether the server takes images (`GET /props` `modalities.vision`; in router mode the
 * props of `model`, without loading it). null when it cannot say now: still loading, no or a
 * wrong API key, a model not loaded.
 */
export async function fetchVision(url, model, apiKey) {
  const query = model ? `?${new URLSearchParams({ model, autoload: 'false' })}` : '';
  try {
    const response = await fetch(url + query, { headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {} });
    if (!response.ok) return null;
    const props = await response.json();
    return Boolean(props.modalities && props.modalities.vision);
  } catch {
    return null;
  }
}

function fromNative(data) {
  return {
    text: data.content || '',
    reasoning: '',
    toolCalls: [],
    probs: Array.isArray(data.completion_probabilities) ? data.completion_probabilities : [],
    timings: data.timings || null,
    usage: null,
    done: Boolean(data.stop),
  };
}

function fromChat(data) {
  const choice = (data.choices && data.choices[0]) || {};
  const delta = choice.delta || {};
  let probs = [];
  if (choice.logprobs && Array.isArray(choice.logprobs.content)) {
    probs = choice.logprobs.content.map((t) => ({
      content: t.token,
      probs: (t.top_logprobs || []).map((p) => ({ tok_str: p.token, prob: Math.exp(p.logprob) })),
    }));
  } else if (Array.isArray(data.completion_probabilities)) {
    probs = data.completion_probabilities;
  }
  return {
    text: typeof delta.content === 'string' ? delta.content : '',
    reasoning: typeof delta.reasoning_content === 'string' ? delta.reasoning_content : '',
    toolCalls: Array.isArray(delta.tool_calls) ? delta.tool_calls : [],
    probs,
    timings: data.timings || null,
    usage: data.usage || null,
    done: Boolean(choice.finish_reason),
  };
}

/** One line about speed, from the server's timings (or usage and the wall clock). */
export function describeTimings(reply) {
  const t = reply.timings;
  if (t && typeof t.predicted_per_second === 'number') {
    const parts = [`${t.predicted_n} tokens`, `${t.predicted_per_second.toFixed(1)} tokens/s`];
    if (typeof t.prompt_n === 'number' && typeof t.prompt_per_second === 'number' && t.prompt_n > 0) {
      parts.push(`prompt ${t.prompt_n} tokens at ${t.prompt_per_second.toFixed(1)} tokens/s`);
    }
    return parts.join(' · ');
  }
  const u = reply.usage;
  if (u && typeof u.completion_tokens === 'number' && reply.elapsedMs > 0) {
    return `${u.completion_tokens} tokens · ${(u.completion_tokens / (reply.elapsedMs / 1000)).toFixed(1)} tokens/s`;
  }
  return '';
}

/**
 * Add one streamed tool-call delta to `reply.toolCalls`: the first delta of a call has its
 * `index`, `id` and `function.name`; later ones append `function.arguments` fragments.
 */
export function mergeToolCall(reply, delta) {
  const calls = reply.toolCalls || (reply.toolCalls = []);
  const i = typeof delta.index === 'number' ? delta.index : calls.length;
  const fn = delta.function || {};
  if (!calls[i]) calls[i] = { id: delta.id || '', name: fn.name || '', arguments: '' };
  if (fn.name && !calls[i].name) calls[i].name = fn.name;
  if (typeof fn.arguments === 'string') calls[i].arguments += fn.arguments;
}
