// The system page's actions: machine memory, backends and their versions, the effective config,
// and llamactl's own metrics sampled while the page is open. State in state.system.
import { getJson, request } from './api.js';
import { get, set } from './store.js';

const SAMPLE_MS = 5000;
const SAMPLES_KEPT = 60; // five minutes of samples
let sampling = null;

export function enterSystem() {
  set({ system: { memory: null, config: null, versions: {}, metrics: null, samples: [], error: null } });
  loadSystem();
  clearInterval(sampling);
  sampleMetrics();
  sampling = setInterval(() => {
    // The page was left (or signed out): stop asking.
    if (get().route.view !== 'system' || !get().session) clearInterval(sampling);
    else sampleMetrics();
  }, SAMPLE_MS);
}

function edit(changes) {
  set((state) => (state.system ? { system: { ...state.system, ...changes } } : {}));
}

async function loadSystem() {
  try {
    const [memory, config] = await Promise.all([getJson('/api/v1/system'), getJson('/api/v1/config')]);
    edit({ memory, config });
    for (const backend of Object.keys(config.backends)) loadVersion(backend);
  } catch (error) {
    edit({ error: error.message });
  }
}

async function loadVersion(backend) {
  let version;
  try {
    version = { text: (await (await request(`/api/v1/backends/${encodeURIComponent(backend)}/version`)).text()).trim() };
  } catch (error) {
    version = { error: error.message };
  }
  set((state) => (state.system ? { system: { ...state.system, versions: { ...state.system.versions, [backend]: version } } } : {}));
}

async function sampleMetrics() {
  try {
    const text = await (await request('/metrics')).text();
    const totals = requestTotals(parsePrometheus(text));
    const samples = [...(get().system?.samples ?? []), { at: Date.now(), totals }].slice(-SAMPLES_KEPT);
    edit({ metrics: { available: true }, samples });
  } catch (error) {
    edit({ metrics: { available: false, error: error.message } });
  }
}

// Prometheus's text format, the sample lines only: [{name, labels, value}].
export function parsePrometheus(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]] = pair[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

// Requests and completion tokens so far, per instance.
export function requestTotals(samples) {
  const totals = {};
  const add = (instance, field, value) => {
    totals[instance] ??= { requests: 0, tokens: 0 };
    totals[instance][field] += value;
  };
  for (const sample of samples) {
    if (sample.name === 'llamactl_requests_total') add(sample.labels.instance, 'requests', sample.value);
    else if (sample.name === 'llamactl_completion_tokens_total') add(sample.labels.instance, 'tokens', sample.value);
  }
  return totals;
}

// Per second between consecutive samples, for one instance and field: the points of a sparkline.
export function rates(samples, instance, field) {
  const points = [];
  for (let index = 1; index < samples.length; index += 1) {
    const before = samples[index - 1];
    const after = samples[index];
    const seconds = (after.at - before.at) / 1000;
    const delta = (after.totals[instance]?.[field] ?? 0) - (before.totals[instance]?.[field] ?? 0);
    points.push(seconds > 0 ? Math.max(delta, 0) / seconds : 0);
  }
  return points;
}
