// The models page's actions: the catalogue, instances made from it, downloads and deletes; kept in
// state.models. Download jobs are polled once a second while one runs and the page is shown.
import { notify } from './actions.js';
import { getJson, request, sendJson } from './api.js';
import { get, set } from './store.js';

const POLL_MS = 1000;
const RUNNING = new Set(['queued', 'downloading']);
const NAME_LENGTH = 50; // llamactl's longest instance name

let pollTimer = null;

// Leaving the page stops the polling at once (this runs before the router's own listener).
addEventListener('hashchange', () => {
  if (!onModelsPage()) stopPolling();
});

function onModelsPage() {
  return /^#\/?models(\/|$)/.test(location.hash) && get().session?.role === 'management';
}

function emptyDownload() {
  return { repo: '', tag: '', format: 'gguf', errors: {}, busy: false };
}

export function enterModels() {
  stopPolling();
  if (get().session?.role !== 'management') {
    set({ models: null });
    return;
  }
  set({
    models: {
      list: null, // the catalogue's entries by id; null until loaded
      listError: null,
      loading: false,
      filter: '',
      creating: null, // {id, name, busy, errors}: the inline form of one entry
      deleting: {}, // id -> true while in flight
      download: emptyDownload(),
      jobs: null, // the download jobs, oldest first; null until loaded
      jobsError: null,
      jobBusy: {}, // job id -> true while its cancel or removal is in flight
    },
  });
  loadCatalogue();
  loadJobs();
}

function editModels(changes) {
  set((state) => (state.models ? { models: { ...state.models, ...(typeof changes === 'function' ? changes(state.models) : changes) } } : {}));
}

// ------------------------------------------------------------------ catalogue

export async function loadCatalogue() {
  editModels({ loading: true, listError: null });
  try {
    const list = await getJson('/api/v1/models');
    editModels({ list, loading: false });
  } catch (error) {
    editModels({ loading: false, listError: `Could not list the models: ${error.message}` });
  }
}

export function filterModels(filter) {
  editModels({ filter });
}

// llamactl's own filter rule (GET /api/v1/models?filter=): the id, repo or name contains it, in any case.
export function matching(list, filter) {
  const needle = filter.trim().toLowerCase();
  if (!needle) return list;
  return list.filter((entry) => [entry.id, entry.repo, entry.name].some((text) => text.toLowerCase().includes(needle)));
}

// Only a download in the Hugging Face cache can be removed (DELETE /api/v1/models?repo=&tag=); the other
// stores belong to their own tools.
export function deletable(entry) {
  return entry.source === 'huggingface';
}

export async function deleteModel(entry) {
  const what = entry.tag ? `${entry.repo}:${entry.tag}` : entry.repo;
  if (!confirm(`Delete ${what} from the Hugging Face cache? Every file of that download goes, other quants in it too.`)) return;
  await whileBusy('deleting', entry.id, async () => {
    try {
      const query = new URLSearchParams({ repo: entry.repo });
      if (entry.tag) query.set('tag', entry.tag);
      await request(`/api/v1/models?${query}`, { method: 'DELETE' });
    } catch (error) {
      // Gone already (deleted elsewhere) is what the user asked for; the rescan shows it.
      if (error.status !== 404) notify('error', `Could not delete ${what}: ${error.message}`);
    }
  });
  await loadCatalogue();
}

// ------------------------------------------------------------------ an instance from a model

// A name for the instance: the entry's own name, in the characters instance names allow.
function suggestedName(entry) {
  const base = (entry.name || entry.id.split(/[:/]/).pop() || 'model').toLowerCase();
  return base.replace(/[^a-z0-9._-]+/g, '-').replace(/^[-.]+|-+$/g, '').slice(0, NAME_LENGTH) || 'model';
}

export function openCreate(entry) {
  editModels({ creating: { id: entry.id, name: suggestedName(entry), busy: false, errors: {} } });
}

export function editCreating(changes) {
  editModels((models) => (models.creating ? { creating: { ...models.creating, ...changes } } : {}));
}

export function closeCreate() {
  editModels({ creating: null });
}

export async function createFromModel() {
  const { creating } = get().models;
  const name = creating.name.trim();
  if (!name) {
    editCreating({ errors: { name: 'a name is required' } });
    return;
  }
  editCreating({ busy: true, errors: {} });
  try {
    const instance = await sendJson('POST', `/api/v1/instances/${encodeURIComponent(name)}`, { model: creating.id });
    const instances = new Map(get().instances);
    instances.set(instance.name, instance);
    set({ instances });
    editModels({ creating: null });
    location.hash = '#/instances';
  } catch (error) {
    editCreating({ busy: false, errors: { [error.field === 'name' ? 'name' : 'form']: error.message } });
  }
}

// ------------------------------------------------------------------ downloads

export function editDownload(changes) {
  editModels((models) => ({ download: { ...models.download, ...changes } }));
}

export async function startDownload() {
  const { download } = get().models;
  const repo = download.repo.trim();
  const tag = download.tag.trim();
  if (!repo) {
    editDownload({ errors: { repo: 'a repository is required, as org/model' } });
    return;
  }
  editDownload({ busy: true, errors: {} });
  try {
    await sendJson('POST', '/api/v1/models/download', { repo: tag ? `${repo}:${tag}` : repo, format: download.format });
    editModels({ download: emptyDownload() });
    await loadJobs();
  } catch (error) {
    const field = ['repo', 'format'].includes(error.field) ? error.field : 'form';
    editDownload({ busy: false, errors: { [field]: error.message } });
  }
}

export function running(job) {
  return RUNNING.has(job.status);
}

export async function loadJobs() {
  try {
    const { jobs } = await getJson('/api/v1/models/jobs');
    const before = get().models?.jobs;
    editModels({ jobs, jobsError: null });
    // A download that finished since the last look is in the catalogue now.
    const finished = before && jobs.some((job) => job.status === 'completed'
      && before.some((earlier) => earlier.id === job.id && running(earlier)));
    if (finished) loadCatalogue();
  } catch (error) {
    editModels({ jobsError: `Could not list the downloads: ${error.message}` });
  }
  schedulePoll();
}

function schedulePoll() {
  const jobs = get().models?.jobs;
  if (pollTimer !== null || !onModelsPage() || !jobs || !jobs.some(running)) return;
  pollTimer = setTimeout(() => {
    pollTimer = null;
    if (onModelsPage()) loadJobs();
  }, POLL_MS);
}

function stopPolling() {
  clearTimeout(pollTimer);
  pollTimer = null;
}

// Mark `id` busy in state.models[field] (its button disabled) while `work` runs.
async function whileBusy(field, id, work) {
  editModels((models) => ({ [field]: { ...models[field], [id]: true } }));
  try {
    await work();
  } finally {
    editModels((models) => {
      const marks = { ...models[field] };
      delete marks[id];
      return { [field]: marks };
    });
  }
}

// Cancel a running job (it stays listed, cancelled), or forget a finished one.
export async function cancelOrRemoveJob(job) {
  await whileBusy('jobBusy', job.id, async () => {
    try {
      await request(`/api/v1/models/jobs/${encodeURIComponent(job.id)}`, { method: 'DELETE' });
    } catch (error) {
      if (error.status !== 404) notify('error', `Could not ${running(job) ? 'cancel' : 'remove'} the download of ${job.repo}: ${error.message}`);
    }
  });
  await loadJobs();
}
