// The playground: chat with a model from /v1/models, or with two side by side on the same prompt.
// Kept in state.playground; each column holds its own conversation, each answer its timings.
import { ApiError, getJson, request } from './api.js';
import { notify } from './actions.js';
import { SseParser } from './sse.js';
import { get, set } from './store.js';

const SETTINGS = { system: '', temperature: '0.7', top_p: '1', max_tokens: '512' };
// The waiting stream's progress ("starting tiny (3 s)") comes as chunks with this id when the
// instance has send_loading_state: shown as a note, never as the model's words.
const LOADING_CHUNK_ID = 'llamactl-loading';

const running = new Map(); // answer id -> the AbortController of its request
let answers = 0; // the last answer id given

export function enterPlayground() {
  const state = get();
  if (!state.session) return; // entered before the key is checked: nothing is asked without it
  // A new sign-in (another key, perhaps) starts over: its models and conversations are not ours.
  if (!state.playground || state.playground.session !== state.session) {
    stopAll();
    set({
      playground: {
        session: state.session, models: null, prompt: '', ...SETTINGS,
        columns: [{ model: '', exchanges: [] }, { model: '', exchanges: [] }],
      },
    });
  }
  loadModels();
}

// The models this key may use; the first running one is picked unless one is picked already.
async function loadModels() {
  let models = [];
  try {
    const answer = await getJson('/v1/models');
    models = answer.data.map((model) => ({ id: model.id, status: model.status || '' }));
  } catch (error) {
    notify('error', `Could not list the models: ${error.message}`);
  }
  edit((playground) => {
    const ids = new Set(models.map((model) => model.id));
    const [first, second] = playground.columns;
    const fallback = (models.find((model) => model.status === 'running') || models[0] || { id: '' }).id;
    return {
      models,
      columns: [
        { ...first, model: ids.has(first.model) ? first.model : fallback },
        { ...second, model: ids.has(second.model) ? second.model : '' },
      ],
    };
  });
}

function edit(change) {
  set((state) => (state.playground ? { playground: { ...state.playground, ...change(state.playground) } } : {}));
}

export function editSettings(changes) {
  edit(() => changes);
}

// column 0 is "Model", column 1 "Compare with" ('' for none).
export function pickModel(column, model) {
  edit((playground) => ({
    columns: playground.columns.map((each, index) => (index === column ? { ...each, model } : each)),
  }));
}

export function streaming(playground) {
  return playground.columns.some((column) => column.exchanges.some((exchange) => isRunning(exchange.answer)));
}

export function isRunning(answer) {
  return answer.state === 'waiting' || answer.state === 'streaming';
}

export function canSend(playground) {
  return Boolean(playground.columns[0].model && playground.prompt.trim() && !streaming(playground));
}

// The prompt to every column with a model, at once: each column's conversation so far goes with it.
export function send() {
  const playground = get().playground;
  if (!playground || !canSend(playground)) return;
  const prompt = playground.prompt;
  const started = [];
  const columns = playground.columns.map((column) => {
    if (!column.model) return column;
    const answer = { id: ++answers, model: column.model, state: 'waiting', content: '', reasoning: '', note: '',
      error: null, finish: null, sentAt: performance.now(), firstTokenAt: null, firstContentAt: null,
      lastTokenAt: null, chunks: 0, usageTokens: null };
    const body = {
      model: column.model,
      messages: [...systemMessage(playground.system), ...history(column.exchanges), { role: 'user', content: prompt }],
      ...numbers(playground),
      stream: true,
      stream_options: { include_usage: true },
    };
    started.push([answer, body]);
    return { ...column, exchanges: [...column.exchanges, { prompt, answer }] };
  });
  edit(() => ({ columns, prompt: '' }));
  for (const [answer, body] of started) stream(answer, body);
}

function systemMessage(system) {
  return system.trim() ? [{ role: 'system', content: system }] : [];
}

// What the model said before goes back with the next prompt; a failed exchange, or one stopped
// before a word came, is left out with its prompt.
function history(exchanges) {
  return exchanges
    .filter(({ answer }) => !answer.error && answer.content)
    .flatMap(({ prompt, answer }) => [{ role: 'user', content: prompt }, { role: 'assistant', content: answer.content }]);
}

// The sampling settings as numbers; an empty or invalid one is left to the backend's default.
function numbers(playground) {
  const body = {};
  for (const [field, parse] of [['temperature', Number], ['top_p', Number], ['max_tokens', (text) => parseInt(text, 10)]]) {
    const value = parse(String(playground[field]).trim() || 'NaN');
    if (Number.isFinite(value)) body[field] = value;
  }
  return body;
}

async function stream(answer, body) {
  const controller = new AbortController();
  running.set(answer.id, controller);
  try {
    const response = await request('/v1/chat/completions', { method: 'POST', body, signal: controller.signal });
    const parser = new SseParser();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    // Read to the body's end, past [DONE]: a connection closed early would count as a client that left.
    let done = false;
    for (;;) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      for (const event of parser.feed(value)) {
        if (event.data === '[DONE]') done = true;
        else applyChunk(answer.id, JSON.parse(event.data), performance.now());
      }
    }
    editAnswer(answer.id, (now) => (now.state === 'error' ? {}
      : done ? { state: 'done' } : { state: 'error', error: 'the stream ended before the answer did' }));
  } catch (error) {
    if (controller.signal.aborted) editAnswer(answer.id, () => ({ state: 'stopped' }));
    else if (error instanceof ApiError) editAnswer(answer.id, () => ({ state: 'error', error: error.message }));
    else editAnswer(answer.id, () => ({ state: 'error', error: `the answer broke off: ${error.message}` }));
  } finally {
    running.delete(answer.id);
  }
}

// One OpenAI chunk: words, reasoning, the usage at the end, or an error that ends the stream.
export function chunkChanges(answer, chunk, now) {
  if (chunk.error) return { state: 'error', error: chunk.error.message || JSON.stringify(chunk.error) };
  const choice = (chunk.choices || [])[0];
  const delta = (choice && choice.delta) || {};
  const changes = {};
  if (chunk.usage && Number.isFinite(chunk.usage.completion_tokens)) changes.usageTokens = chunk.usage.completion_tokens;
  if (choice && choice.finish_reason) changes.finish = choice.finish_reason;
  if (chunk.id === LOADING_CHUNK_ID) {
    if (delta.reasoning_content) changes.note = delta.reasoning_content.trim();
    return changes;
  }
  const content = typeof delta.content === 'string' ? delta.content : '';
  const reasoning = typeof delta.reasoning_content === 'string' ? delta.reasoning_content : '';
  if (content || reasoning) {
    changes.state = 'streaming';
    changes.chunks = answer.chunks + 1;
    changes.lastTokenAt = now;
    if (answer.firstTokenAt === null) changes.firstTokenAt = now;
    if (content) {
      changes.content = answer.content + content;
      if (answer.firstContentAt === null) changes.firstContentAt = now;
    }
    if (reasoning) changes.reasoning = answer.reasoning + reasoning;
  }
  return changes;
}

function applyChunk(id, chunk, now) {
  editAnswer(id, (answer) => chunkChanges(answer, chunk, now));
}

// TTFT is to the first word of the answer; the rate counts the tokens after the first one (the
// usage's count when the stream gave it, else one a chunk) over the time from the first to the
// last, so a stopped answer has one too and a start or a queue does not slow it down.
export function statsOf(answer) {
  const ttft = answer.firstContentAt === null ? null : (answer.firstContentAt - answer.sentAt) / 1000;
  const tokens = answer.usageTokens ?? answer.chunks;
  const seconds = answer.firstTokenAt === null ? 0 : (answer.lastTokenAt - answer.firstTokenAt) / 1000;
  const perSecond = tokens > 1 && seconds > 0 ? (tokens - 1) / seconds : null;
  return { ttft, perSecond, tokens };
}

function editAnswer(id, change) {
  edit((playground) => {
    let found = false;
    const columns = playground.columns.map((column) => {
      const index = column.exchanges.findIndex((exchange) => exchange.answer.id === id);
      if (index < 0) return column;
      found = true;
      const exchanges = column.exchanges.slice();
      const exchange = exchanges[index];
      exchanges[index] = { ...exchange, answer: { ...exchange.answer, ...change(exchange.answer) } };
      return { ...column, exchanges };
    });
    return found ? { columns } : {};
  });
}

// Aborting the fetch closes the connection: llamactl cancels the request to the backend.
export function stopColumn(column) {
  const exchanges = get().playground.columns[column].exchanges;
  for (const { answer } of exchanges) if (running.has(answer.id)) running.get(answer.id).abort();
}

function stopAll() {
  for (const controller of running.values()) controller.abort();
}

export function clearConversations() {
  stopAll();
  edit((playground) => ({ columns: playground.columns.map((column) => ({ ...column, exchanges: [] })) }));
}
