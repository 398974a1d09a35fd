// The keys page: the inference keys in a table with a Revoke button each, and a form that
// creates one and shows it once. Errors from llamactl are shown beside the field they name.
import { html } from '../html.js';
import { Field } from './field.js';
import {
  chooseInstance, copyKey, createKey, editForm, forgetCreated, loadKeys, revokeKey,
} from '../keys.js';

export function KeysView({ state }) {
  const keys = state.keys;
  if (!keys) return html`<p class="loading">Loading keys…</p>`;
  return html`
    <section class="keys-page">
      <h2>Keys</h2>
      <p class="help">Inference keys reach <code>/v1</code> (and the playground) for all instances or
        for the chosen ones only; they cannot manage anything. Sign in with one for a read-only view.</p>
      ${keys.created && html`<${NewKey} created=${keys.created} copy=${keys.copy} />`}
      <${KeyList} keys=${keys} />
      <${CreateForm} keys=${keys} instances=${[...state.instances.keys()].sort()} />
    </section>`;
}

// The key itself, shown this once: llamactl keeps only its hash.
function NewKey({ created, copy }) {
  return html`
    <section class="new-key" aria-labelledby="new-key-title">
      <h3 id="new-key-title">The key ${created.name}</h3>
      <p id="new-key-warning" class="warning"><strong>Copy it now: it will not be shown again.</strong>${' '}
        Leaving or reloading this page forgets it; llamactl keeps only its hash.</p>
      <label for="new-key-value">New key</label>
      <div class="with-action">
        <input id="new-key-value" readonly value=${created.key} spellcheck=${false}
          aria-describedby="new-key-warning" onFocus=${(e) => e.currentTarget.select()} />
        <button type="button" onClick=${copyKey}>Copy</button>
      </div>
      <p class="copy-result" role="status">${copy && copy.ok ? 'Copied' : ''}</p>
      ${copy && !copy.ok && html`<p class="field-error" role="alert">${copy.message}</p>`}
      <button type="button" class="quiet" onClick=${forgetCreated}>Done, forget it</button>
    </section>`;
}

function KeyList({ keys }) {
  if (keys.listError) {
    return html`<div class="field-error" role="alert">${keys.listError}
      <button type="button" class="quiet" onClick=${loadKeys}>Try again</button></div>`;
  }
  if (!keys.list) return html`<p class="help">Loading keys…</p>`;
  if (!keys.list.length) return html`<p class="empty">No inference keys yet.</p>`;
  const now = Date.now() / 1000;
  return html`
    <table class="keys">
      <caption>${keys.list.length} key${keys.list.length === 1 ? '' : 's'}. A key's instances are fixed when it is
        made: for others, create a new key and revoke this one.</caption>
      <thead><tr>
        <th scope="col">Name</th><th scope="col">Permissions</th><th scope="col">Instances</th>
        <th scope="col">Created</th><th scope="col">Last used</th><th scope="col">Expires</th>
        <th scope="col">Actions</th>
      </tr></thead>
      <tbody>${keys.list.map((info) => html`
        <${KeyRow} key=${info.id} info=${info} revoking=${keys.revoking[info.id]} now=${now} />`)}</tbody>
    </table>`;
}

function KeyRow({ info, revoking, now }) {
  const expired = info.expires_at !== null && info.expires_at <= now;
  return html`
    <tr data-key-id=${info.id}>
      <th scope="row">${info.name}</th>
      <td>${info.permission_mode === 'allow_all' ? 'all instances' : 'chosen instances'}</td>
      <td class="granted">${instancesText(info)}</td>
      <td>${when(info.created_at)}</td>
      <td>${info.last_used_at === null ? 'never' : when(info.last_used_at)}</td>
      <td>${info.expires_at === null ? 'never' : html`${when(info.expires_at)}${expired && html` <span class="badge expired">expired</span>`}`}</td>
      <td>
        <button type="button" class="danger" disabled=${revoking === true} onClick=${() => revokeKey(info)}
          aria-label=${`Revoke ${info.name}`}>${revoking === true ? 'Revoking…' : 'Revoke'}</button>
        ${typeof revoking === 'string' && html`<p class="field-error" role="alert">${revoking}</p>`}
      </td>
    </tr>`;
}

function instancesText(info) {
  if (info.permission_mode === 'allow_all') return 'all';
  // Grants go with their instance: a key whose instances were all deleted may use none.
  return info.instances.length ? info.instances.join(', ') : 'none (deleted)';
}

function CreateForm({ keys, instances }) {
  const { form, errors } = keys;
  const submit = (event) => {
    event.preventDefault();
    createKey();
  };
  return html`
    <form class="create-key" onSubmit=${submit} aria-labelledby="create-key-title">
      <h3 id="create-key-title">Create a key</h3>
      ${errors.form && html`<p class="field-error" role="alert">${errors.form}</p>`}
      <${Field} id="key-name" label="Name" error=${errors.name} help="Who or what will use it, e.g. notebook">
        <input id="key-name" value=${form.name} autocomplete="off"
          aria-describedby=${describedBy('key-name', errors.name)}
          onInput=${(e) => editForm({ name: e.currentTarget.value })} />
      <//>
      <fieldset class=${errors.instances || errors.permission_mode ? 'invalid' : ''}
          aria-describedby=${errors.instances ? 'key-instances-error' : null}>
        <legend>Instances it may use</legend>
        <label class="choice"><input type="radio" name="key-mode" value="allow_all"
          checked=${form.mode === 'allow_all'} onChange=${() => editForm({ mode: 'allow_all' })} />
          All instances, including those created later</label>
        <label class="choice"><input type="radio" name="key-mode" value="per_instance"
          checked=${form.mode === 'per_instance'} onChange=${() => editForm({ mode: 'per_instance' })} />
          Only the chosen instances</label>
        ${form.mode === 'per_instance' && html`<${InstanceChoice} instances=${instances} chosen=${form.chosen} />`}
        ${(errors.instances || errors.permission_mode) && html`
          <p class="field-error" id="key-instances-error" role="alert">${errors.instances || errors.permission_mode}</p>`}
      </fieldset>
      <${Field} id="key-expires" label="Expires (optional)" error=${errors.expires_at}
          help="Your local time; leave empty for a key that does not expire">
        <input id="key-expires" type="datetime-local" value=${form.expires}
          aria-describedby=${describedBy('key-expires', errors.expires_at)}
          onInput=${(e) => editForm({ expires: e.currentTarget.value })} />
      <//>
      <button type="submit" disabled=${keys.busy}>${keys.busy ? 'Creating…' : 'Create key'}</button>
    </form>`;
}

function InstanceChoice({ instances, chosen }) {
  if (!instances.length) return html`<p class="help">There are no instances yet: <a href="#/create">create one</a>.</p>`;
  return html`
    <ul class="instance-choice" aria-label="Chosen instances">
      ${instances.map((name) => html`<li key=${name}><label class="choice">
        <input type="checkbox" checked=${chosen.includes(name)}
          onChange=${(e) => chooseInstance(name, e.currentTarget.checked)} /> ${name}</label></li>`)}
    </ul>`;
}

function describedBy(id, error) {
  return error ? `${id}-help ${id}-error` : `${id}-help`;
}

// Unix seconds as local "YYYY-MM-DD HH:MM", with the exact instant for assistive tools and hovering.
function when(seconds) {
  const date = new Date(seconds * 1000);
  const pad = (number) => String(number).padStart(2, '0');
  const text = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} `
    + `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  return html`<time datetime=${date.toISOString()} title=${date.toString()}>${text}</time>`;
}
