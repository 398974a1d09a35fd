// Pure helpers for what the views show.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function bytes(value) {
  if (value === null || value === undefined) return '–';
  let amount = value;
  let unit = 0;
  while (amount >= 1024 && unit < UNITS.length - 1) {
    amount /= 1024;
    unit += 1;
  }
  return `${amount.toFixed(unit === 0 || amount >= 100 ? 0 : 1)} ${UNITS[unit]}`;
}

// CSI sequences (colours, cursor moves) and OSC ones (titles, links): log text is shown as text.
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

export function stripAnsi(text) {
  return text.replace(ANSI, '');
}

// How long since `since` (unix seconds), as people say it: 45 s, 12 min, 3 h 5 min, 2 d 4 h.
export function uptime(since, now = Date.now()) {
  if (since === null || since === undefined) return '–';
  const seconds = Math.max(0, Math.floor(now / 1000 - since));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function modelOf(instance) {
  const options = instance.options && instance.options.backend_options;
  const path = options && (options.model || options.model_path || options.hf_repo);
  const shown = instance.served_model || path; // a model made from the catalogue is served as its path
  return shown ? String(shown).split('/').pop() : '–';
}

export function memoryOf(instance) {
  const memory = instance.memory || {};
  return memory.measured_bytes ?? memory.reported_bytes ?? memory.estimated_bytes ?? null;
}

// An event from /api/v1/events applied to the instances; returns the new map and whether the
// instance needs fetching whole (one we do not know yet, or a status whose details changed).
export function applyEvent(instances, event) {
  const next = new Map(instances);
  const known = next.get(event.instance);
  if (event.kind === 'status' && event.status === 'deleted') {
    next.delete(event.instance);
    return { instances: next, fetch: false };
  }
  if (!known) return { instances: next, fetch: true };
  if (event.kind === 'status') {
    next.set(event.instance, { ...known, status: event.status });
    return { instances: next, fetch: true };
  }
  next.set(event.instance, { ...known, queued: event.queued, in_flight: event.in_flight });
  return { instances: next, fetch: false };
}

// The options whose key or flags contain the query, with '-' and '_' alike ("ctx" finds ctx_size),
// then those whose help does.
export function searchFlags(flags, query, limit = 12) {
  const needle = query.trim().toLowerCase().replace(/^-+/, '').replaceAll('-', '_');
  if (!needle) return [];
  const matches = (flag) => [flag.key, ...flag.spellings].some(
    (name) => name.toLowerCase().replace(/^-+/, '').replaceAll('-', '_').includes(needle));
  const words = query.trim().toLowerCase();
  const byKey = flags.filter((flag) => flag.key.includes(needle));
  const byFlag = flags.filter((flag) => !flag.key.includes(needle) && matches(flag));
  const byHelp = flags.filter((flag) => !matches(flag) && (flag.help || '').toLowerCase().includes(words));
  return [...byKey, ...byFlag, ...byHelp].slice(0, limit);
}
