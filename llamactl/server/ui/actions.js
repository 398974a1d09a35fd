// Everything the views can ask for: each action talks to llamactl and updates the store.
import { ApiError, authHeaders, getJson, request, sendJson } from './api.js';
import { applyEvent, stripAnsi } from './format.js';
import { forgetKey, savedKey, saveKey } from './session.js';
import { follow } from './sse.js';
import { get, set } from './store.js';
import { enterKeys } from './keys.js';
import { enterModels } from './models.js';
import { enterPlayground } from './playground.js';
import { enterSystem } from './system.js';

// The pages with a module of their own: each is entered with the rest of the hash (or null).
const PAGES = { models: enterModels, keys: enterKeys, playground: enterPlayground, system: enterSystem };

const LOG_LINES_KEPT = 5000;
let live = null; // the AbortController of the events stream
let logStream = null; // and of the followed log

// ------------------------------------------------------------------ session

export async function signIn(key) {
  set({ signIn: { busy: true, error: null } });
  try {
    const role = await roleOf(key);
    saveKey(key);
    set({ session: { key, role }, signIn: { busy: false, error: null } });
    await afterSignIn();
  } catch (error) {
    set({ signIn: { busy: false, error: error.message } });
  }
}

export async function restoreSession() {
  const key = savedKey();
  if (!key) {
    set({ session: null });
    return;
  }
  await signIn(key);
}

export function signOut() {
  forgetKey();
  stopStreams();
  routed = null;
  // Every page's state goes: a key shown once on the keys page must not outlive the session.
  set({
    session: null, instances: new Map(), loaded: false, live: 'closed', logs: null, create: null,
    models: null, keys: null, playground: null, system: null,
  });
}

// A management key may read /api/v1; an inference key only /v1.
async function roleOf(key) {
  try {
    await request('/api/v1/version', { key });
    return 'management';
  } catch (error) {
    if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403)) throw error;
  }
  try {
    await request('/v1/models', { key });
    return 'inference';
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      throw new Error('llamactl refused this key');
    }
    throw error;
  }
}

async function afterSignIn() {
  if (get().session.role !== 'management') {
    await loadModels();
    route(location.hash);
    return;
  }
  startEvents();
  await loadInstances();
  route(location.hash);
}

function stopStreams() {
  if (live) live.abort();
  if (logStream) logStream.abort();
  live = logStream = null;
}

function refused(error) {
  return error.status === 401 || error.status === 403;
}

export function notify(kind, text) {
  set({ notice: { kind, text } });
}

export function dismissNotice() {
  set({ notice: null });
}

// ------------------------------------------------------------------ instances

export async function loadInstances() {
  try {
    const list = await getJson('/api/v1/instances');
    set({ instances: new Map(list.map((instance) => [instance.name, instance])), loaded: true });
  } catch (error) {
    notify('error', `Could not list the instances: ${error.message}`);
  }
}

async function loadModels() {
  try {
    const answer = await getJson('/v1/models');
    const entries = answer.data.map((model) => [model.id, { name: model.id, status: model.status?.value ?? model.status ?? '' }]);
    set({ instances: new Map(entries), loaded: true });
  } catch (error) {
    notify('error', `Could not list the models: ${error.message}`);
  }
}

// One stream for the whole page: browsers allow six connections per origin.
function startEvents() {
  if (live) live.abort();
  live = new AbortController();
  follow('/api/v1/events', {
    headers: authHeaders(),
    signal: live.signal,
    onState: (state, error) => {
      set({ live: state });
      if (state === 'stopped') notify('error', `Live updates stopped: ${error.message}`);
    },
    onOpen: (reconnected) => { if (reconnected) loadInstances(); },
    shouldStop: refused,
    onEvent: (message) => {
      const event = JSON.parse(message.data);
      const applied = applyEvent(get().instances, event);
      set({ instances: applied.instances });
      if (applied.fetch) refreshInstance(event.instance);
    },
  });
}

async function refreshInstance(name) {
  try {
    const instance = await getJson(`/api/v1/instances/${encodeURIComponent(name)}`);
    const instances = new Map(get().instances);
    instances.set(name, instance);
    set({ instances });
  } catch (error) {
    if (error.status !== 404) notify('error', `Could not read ${name}: ${error.message}`);
  }
}

export async function instanceAction(name, action) {
  if (action === 'delete' && !confirm(`Delete the instance ${name}? Its options and logs go with it.`)) return;
  set((state) => ({ busy: new Set(state.busy).add(name) }));
  try {
    const path = `/api/v1/instances/${encodeURIComponent(name)}`;
    if (action === 'delete') await request(path, { method: 'DELETE' });
    else await sendJson('POST', `${path}/${action}`);
    if (action === 'delete') {
      const instances = new Map(get().instances);
      instances.delete(name);
      set({ instances });
    } else {
      await refreshInstance(name);
    }
  } catch (error) {
    notify('error', `${action} ${name}: ${error.message}`);
  } finally {
    set((state) => {
      const busy = new Set(state.busy);
      busy.delete(name);
      return { busy };
    });
  }
}

export async function exportInstance(name) {
  try {
    const instance = await getJson(`/api/v1/instances/${encodeURIComponent(name)}`);
    download(`${name}.json`, JSON.stringify(instance.options, null, 2) + '\n', 'application/json');
  } catch (error) {
    notify('error', `Could not export ${name}: ${error.message}`);
  }
}

// ------------------------------------------------------------------ routes

let routed = null; // the hash last entered: entering it again would reset what the user typed

export function route(hash) {
  if (!get().session) return; // entered once signed in (afterSignIn): no request goes without a key
  const [view, ...rest] = hash.replace(/^#\/?/, '').split('/');
  const name = rest.length ? decodeURIComponent(rest.join('/')) : null;
  const key = `${view}/${name}`;
  if (key === routed) return;
  routed = key;
  if (view !== 'logs' && logStream) {
    logStream.abort();
    logStream = null;
  }
  if (view === 'create') {
    const create = name ? editing(name) : emptyCreate();
    set({ route: { view: 'create', name }, create });
    loadSpec(create.backend);
  } else if (view === 'logs' && name) {
    set({ route: { view: 'logs', name } });
    followLog(name);
  } else if (PAGES[view]) {
    set({ route: { view, name } });
    PAGES[view](name);
  } else {
    set({ route: { view: 'instances', name: null } });
  }
}

// ------------------------------------------------------------------ create and edit

const OPTION_FIELDS = ['idle_timeout', 'auto_restart', 'on_demand_start', 'group', 'max_concurrent', 'max_queue'];

function emptyCreate() {
  return {
    editing: null, backend: 'llama_cpp', command: '', name: '', parsed: null, options: [], instanceOptions: {},
    environment: '', commandOverride: '', errors: {}, busy: false, declared: false, optionSearch: '',
  };
}

function editing(name) {
  const instance = get().instances.get(name);
  if (!instance) return { ...emptyCreate(), errors: { form: `There is no instance ${name}.` } };
  const options = instance.options;
  const instanceOptions = {};
  for (const field of OPTION_FIELDS) if (options[field] !== undefined) instanceOptions[field] = options[field];
  return {
    ...emptyCreate(),
    editing: name,
    name,
    declared: Boolean(instance.declared),
    backend: options.backend_type,
    parsed: { backend_type: options.backend_type },
    options: optionRows(options.backend_options),
    instanceOptions,
    environment: environmentText(options.environment),
    commandOverride: options.command_override || '',
  };
}

export function editCreate(changes) {
  set((state) => ({ create: { ...state.create, ...changes } }));
  if (changes.backend) loadSpec(changes.backend);
}

// Every option of a backend, with its flags and help (GET /api/v1/backends/{backend}/options).
async function loadSpec(backend) {
  if (get().specs[backend]) return;
  try {
    const spec = await getJson(`/api/v1/backends/${encodeURIComponent(backend)}/options`);
    const byKey = new Map(spec.flags.map((flag) => [flag.key, flag]));
    set((state) => ({ specs: { ...state.specs, [backend]: { ...spec, byKey } } }));
  } catch (error) {
    notify('error', `Could not read the options of ${backend}: ${error.message}`);
  }
}

export function addOption(flag) {
  const create = get().create;
  if (create.options.some((row) => row.key === flag.key)) return;
  const text = flag.kind === 'switch' ? 'true' : '';
  const string = flag.kind === 'str' || flag.kind === 'json';
  editCreate({ options: [...create.options, { key: flag.key, text, string }], optionSearch: '' });
}

export function removeOption(index) {
  const options = get().create.options.slice();
  options.splice(index, 1);
  editCreate({ options });
}

export function editOption(index, text) {
  const options = get().create.options.slice();
  options[index] = { ...options[index], text };
  editCreate({ options });
}

export async function parseCommand() {
  const { backend, command } = get().create;
  editCreate({ busy: true, errors: {} });
  try {
    const parsed = await sendJson('POST', `/api/v1/backends/${encodeURIComponent(backend)}/parse-command`, { command });
    loadSpec(parsed.backend_type);
    editCreate({
      busy: false,
      parsed,
      options: optionRows(parsed.backend_options),
      environment: environmentText(parsed.environment),
      commandOverride: parsed.command_override || '',
    });
  } catch (error) {
    editCreate({ busy: false, errors: { command: error.message } });
  }
}

export async function saveInstance() {
  const create = get().create;
  const errors = {};
  const body = {
    backend_type: create.parsed ? create.parsed.backend_type : create.backend,
    backend_options: {},
    ...create.instanceOptions,
  };
  for (const row of create.options) {
    try {
      body.backend_options[row.key] = valueOf(row);
    } catch {
      errors[`backend_options.${row.key}`] = `not valid JSON: ${row.text}`;
    }
  }
  const environment = parseEnvironment(create.environment);
  if (environment.error) errors.environment = environment.error;
  else if (Object.keys(environment.value).length) body.environment = environment.value;
  if (create.commandOverride) body.command_override = create.commandOverride;
  if (!create.name) errors.name = 'a name is required';
  if (Object.keys(errors).length) {
    editCreate({ errors });
    return;
  }
  editCreate({ busy: true, errors: {} });
  const path = `/api/v1/instances/${encodeURIComponent(create.name)}`;
  try {
    const instance = await sendJson(create.editing ? 'PUT' : 'POST', path, body);
    const instances = new Map(get().instances);
    instances.set(instance.name, instance);
    set({ instances, create: null });
    location.hash = '#/instances';
  } catch (error) {
    editCreate({ busy: false, errors: { [error.field || 'form']: error.message } });
  }
}

function optionRows(options = {}) {
  return Object.entries(options).map(([key, value]) => ({
    key,
    text: typeof value === 'string' ? value : JSON.stringify(value),
    string: typeof value === 'string',
  }));
}

function valueOf(row) {
  return row.string ? row.text : JSON.parse(row.text);
}

function environmentText(environment = {}) {
  return Object.entries(environment).map(([name, value]) => `${name}=${value}`).join('\n');
}

function parseEnvironment(text) {
  const value = {};
  for (const line of text.split('\n').map((each) => each.trim()).filter(Boolean)) {
    const equals = line.indexOf('=');
    if (equals <= 0) return { error: `each line is NAME=value; got ${line}` };
    value[line.slice(0, equals)] = line.slice(equals + 1);
  }
  return { value };
}

// ------------------------------------------------------------------ logs

function followLog(name) {
  if (logStream) logStream.abort();
  logStream = new AbortController();
  set({ logs: { name, lines: [], paused: false, held: [], filter: '', state: 'connecting' } });
  const url = `/api/v1/instances/${encodeURIComponent(name)}/logs?lines=500&follow=true`;
  follow(url, {
    headers: authHeaders(),
    signal: logStream.signal,
    resume: false,
    shouldStop: (error) => refused(error) || error.status === 404,
    // A log has no event ids: after a drop it starts again from its last lines.
    onOpen: () => editLogs({ lines: [], held: [] }),
    onState: (state, error) => editLogs({ state, error: error ? error.message : null }),
    onEvent: (event) => appendLog(stripAnsi(event.data)),
  });
}

function editLogs(changes) {
  set((state) => (state.logs ? { logs: { ...state.logs, ...changes } } : {}));
}

function appendLog(line) {
  const logs = get().logs;
  if (!logs) return;
  if (logs.paused) editLogs({ held: [...logs.held, line].slice(-LOG_LINES_KEPT) });
  else editLogs({ lines: [...logs.lines, line].slice(-LOG_LINES_KEPT) });
}

export function pauseLogs(paused) {
  const logs = get().logs;
  if (paused) editLogs({ paused: true });
  else editLogs({ paused: false, lines: [...logs.lines, ...logs.held].slice(-LOG_LINES_KEPT), held: [] });
}

export function filterLogs(filter) {
  editLogs({ filter });
}

export function downloadLogs() {
  const logs = get().logs;
  download(`${logs.name}.log`, logs.lines.join('\n') + '\n', 'text/plain');
}

function download(filename, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  link.click();
  URL.revokeObjectURL(url);
}
