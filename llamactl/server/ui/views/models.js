// The models page: the catalogue (filter, facts, create an instance, delete a download), then the
// download form and its jobs with their progress.
import { bytes } from '../format.js';
import { html } from '../html.js';
import {
  cancelOrRemoveJob, closeCreate, createFromModel, deletable, deleteModel, editCreating, editDownload,
  filterModels, loadCatalogue, matching, openCreate, running, startDownload,
} from '../models.js';

const SOURCES = { path: 'directory', huggingface: 'Hugging Face', ollama: 'Ollama', lmstudio: 'LM Studio' };
// The catalogue's columns: [heading, class] (numbers are right-aligned).
const COLUMNS = [
  ['Model'], ['Format'], ['Architecture'], ['Parameters', 'number'], ['Quantization'], ['Context', 'number'],
  ['Size', 'number'], ['Est. memory', 'number'], ['Source'], ['Actions'],
];

export function ModelsView({ state }) {
  const models = state.models;
  if (!models) return html`<p class="loading">Loading the models…</p>`;
  return html`
    <div class="models">
      <${Catalogue} models=${models} />
      <${Downloads} models=${models} />
    </div>`;
}

// ------------------------------------------------------------------ catalogue

function Catalogue({ models }) {
  const list = models.list;
  const shown = list ? matching(list, models.filter) : [];
  return html`
    <section aria-labelledby="catalogue-title">
      <div class="models-toolbar">
        <h2 id="catalogue-title">Models on this machine</h2>
        <label for="model-filter">Filter</label>
        <input id="model-filter" type="search" value=${models.filter} autocomplete="off" spellcheck=${false}
          placeholder="id, repo or name" onInput=${(e) => filterModels(e.currentTarget.value)} />
        <button type="button" class="quiet" disabled=${models.loading} onClick=${loadCatalogue}>Rescan</button>
      </div>
      ${models.listError && html`<p class="field-error" role="alert">${models.listError}</p>`}
      ${list === null && !models.listError && html`<p class="empty">Scanning the model stores…</p>`}
      ${list && list.length === 0 && html`<p class="empty">No models found. Name directories in
        <code>discovery.paths</code>, or download one below.</p>`}
      ${list && list.length > 0 && shown.length === 0 && html`<p class="empty">No model matches ${models.filter}.</p>`}
      ${shown.length > 0 && html`
        <table class="catalogue">
          <caption>${caption(shown.length, list.length)}</caption>
          <thead><tr>${COLUMNS.map(([heading, kind]) => html`<th scope="col" class=${kind}>${heading}</th>`)}</tr></thead>
          <tbody>${shown.flatMap((entry) => [
            html`<${ModelRow} key=${entry.id} entry=${entry} deleting=${Boolean(models.deleting[entry.id])} />`,
            models.creating && models.creating.id === entry.id
              && html`<${CreateRow} key=${`${entry.id} create`} entry=${entry} creating=${models.creating} />`,
          ].filter(Boolean))}</tbody>
        </table>`}
    </section>`;
}

function caption(shown, all) {
  const models = `${all} model${all === 1 ? '' : 's'}`;
  return shown === all ? models : `${shown} of ${models}`;
}

function ModelRow({ entry, deleting }) {
  const where = entry.tag ? `${entry.repo}:${entry.tag}` : entry.repo;
  return html`
    <tr data-model=${entry.id}>
      <th scope="row" class="model-name">
        <span class="name">${entry.name}</span>
        <code class="id" title=${entry.model_path}>${entry.id}</code>
      </th>
      <td>${entry.format}</td>
      <td>${entry.architecture ?? '–'}</td>
      <td class="number" title=${entry.parameters ?? ''}>${count(entry.parameters)}</td>
      <td>${entry.quantization ?? '–'}</td>
      <td class="number">${entry.context_length ?? '–'}</td>
      <td class="number">${bytes(entry.size_bytes)}</td>
      <td class="number">${bytes(entry.estimated_bytes)}</td>
      <td title=${where}>${SOURCES[entry.source] ?? entry.source}</td>
      <td><div class="actions">
        <button type="button" onClick=${() => openCreate(entry)} aria-label=${`Create an instance of ${entry.id}`}>Create instance</button>
        ${deletable(entry) && html`<button type="button" class="danger" disabled=${deleting}
          onClick=${() => deleteModel(entry)} aria-label=${`Delete ${entry.id}`}>Delete</button>`}
      </div></td>
    </tr>`;
}

// Focuses the name field once, when the form opens (a stable ref: Preact calls it on mount only).
function focusOnOpen(input) {
  if (input) input.select();
}

function CreateRow({ entry, creating }) {
  const error = creating.errors.name;
  const submit = (event) => {
    event.preventDefault();
    createFromModel();
  };
  // Closed, the form hands the focus back to the button that opened it.
  const close = () => {
    closeCreate();
    const opener = document.querySelector(`tr[data-model="${CSS.escape(entry.id)}"] button`);
    if (opener) opener.focus();
  };
  const escape = (event) => {
    if (event.key === 'Escape') close();
  };
  return html`
    <tr class="create-row">
      <td colspan=${COLUMNS.length}>
        <form class="create-from-model" onSubmit=${submit} onKeyDown=${escape}
            aria-label=${`Create an instance of ${entry.id}`}>
          <div class=${`field${error ? ' invalid' : ''}`}>
            <label for="instance-name">Instance name</label>
            <input id="instance-name" value=${creating.name} autocomplete="off" spellcheck=${false} ref=${focusOnOpen}
              aria-invalid=${error ? 'true' : null} aria-describedby=${error ? 'instance-name-error' : 'instance-name-help'}
              onInput=${(e) => editCreating({ name: e.currentTarget.value })} />
            <p class="help" id="instance-name-help">Serves ${entry.id}; the backend follows its format (${entry.format}).</p>
            ${error && html`<p class="field-error" id="instance-name-error" role="alert">${error}</p>`}
          </div>
          <div class="create-buttons">
            <button type="submit" disabled=${creating.busy}>Create</button>
            <button type="button" class="quiet" onClick=${close}>Cancel</button>
          </div>
          ${creating.errors.form && html`<p class="field-error" role="alert">${creating.errors.form}</p>`}
        </form>
      </td>
    </tr>`;
}

// ------------------------------------------------------------------ downloads

function Downloads({ models }) {
  const download = models.download;
  const errors = download.errors;
  const submit = (event) => {
    event.preventDefault();
    startDownload();
  };
  return html`
    <section aria-labelledby="downloads-title">
      <h2 id="downloads-title">Download from the Hugging Face hub</h2>
      <form class="download" onSubmit=${submit}>
        <${Field} id="download-repo" label="Repository" error=${errors.repo} help="org/model, as on the hub">
          <input id="download-repo" value=${download.repo} autocomplete="off" spellcheck=${false}
            placeholder="unsloth/Qwen3-0.6B-GGUF" aria-invalid=${errors.repo ? 'true' : null}
            onInput=${(e) => editDownload({ repo: e.currentTarget.value })} />
        <//>
        <${Field} id="download-tag" label="Tag" error=${errors.tag}
            help=${download.format === 'gguf'
              ? 'A quant such as Q4_K_M; empty: Q4_K_M, else Q4_0, else the first file'
              : 'A branch, tag or commit; empty: main'}>
          <input id="download-tag" value=${download.tag} autocomplete="off" spellcheck=${false}
            placeholder=${download.format === 'gguf' ? 'Q4_K_M' : 'main'}
            onInput=${(e) => editDownload({ tag: e.currentTarget.value })} />
        <//>
        <${Field} id="download-format" label="Format" error=${errors.format}>
          <select id="download-format" value=${download.format} onChange=${(e) => editDownload({ format: e.currentTarget.value })}>
            <option value="gguf">GGUF</option>
            <option value="safetensors">safetensors</option>
          </select>
        <//>
        <button type="submit" disabled=${download.busy}>Download</button>
        ${errors.form && html`<p class="field-error" role="alert">${errors.form}</p>`}
      </form>
      ${models.jobsError && html`<p class="field-error" role="alert">${models.jobsError}</p>`}
      ${models.jobs && models.jobs.length > 0 && html`
        <table class="jobs">
          <caption>Downloads</caption>
          <thead><tr>
            <th scope="col">Repository</th><th scope="col">Format</th><th scope="col">Status</th>
            <th scope="col">Progress</th><th scope="col">Actions</th>
          </tr></thead>
          <tbody>${models.jobs.map((job) => html`<${JobRow} key=${job.id} job=${job} busy=${Boolean(models.jobBusy[job.id])} />`)}</tbody>
        </table>`}
    </section>`;
}

function JobRow({ job, busy }) {
  const what = `${job.repo}:${job.tag}`;
  const { bytes_downloaded: done, total_bytes: total, current_file: file } = job.progress;
  const live = running(job);
  return html`
    <tr data-job=${job.id}>
      <th scope="row">${what}</th>
      <td>${job.format}</td>
      <td>
        <span class="status" data-status=${job.status}>${job.status}</span>
        ${job.error && html`<p class="error-text job-error">${job.error}</p>`}
      </td>
      <td class="progress">${live || total ? html`
        <progress max=${total || 1} value=${total ? done : undefined} aria-label=${`Progress of ${what}`}></progress>
        <span class="help">${total ? `${bytes(done)} of ${bytes(total)}` : 'starting…'}${live && file ? `, ${file}` : ''}</span>`
        : '–'}
      </td>
      <td>
        <button type="button" class=${live ? 'danger' : 'quiet'} disabled=${busy} onClick=${() => cancelOrRemoveJob(job)}
          aria-label=${`${live ? 'Cancel' : 'Remove'} the download of ${what}`}>${live ? 'Cancel' : 'Remove'}</button>
      </td>
    </tr>`;
}

function Field({ id, label, error, help, children }) {
  return html`
    <div class=${`field${error ? ' invalid' : ''}`}>
      <label for=${id}>${label}</label>
      ${children}
      ${help && html`<p class="help">${help}</p>`}
      ${error && html`<p class="field-error" id=${`${id}-error`} role="alert">${error}</p>`}
    </div>`;
}

// Parameters as the CLI shows them (1.2B, 350M, 86K): as model cards write them.
function count(value) {
  if (value === null || value === undefined) return '–';
  for (const [unit, size, digits] of [['T', 1e12, 1], ['B', 1e9, 1], ['M', 1e6, 0], ['K', 1e3, 0]]) {
    if (value >= size) return `${(value / size).toFixed(digits)}${unit}`;
  }
  return String(value);
}
