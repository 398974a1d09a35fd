// The keys page's actions: list, create (the key is shown once), copy, revoke; kept in state.keys.
// The rules (a name, a future expiry, instances that exist) are llamactl's: its errors name the
// field they belong to, and the form shows each beside that field.
import { getJson, request, sendJson } from './api.js';
import { get, set } from './store.js';

// A created key lives in state.keys.created until the page is left: it is never fetched again.
addEventListener('hashchange', () => {
  if (!/^#\/?keys(\/|$)/.test(location.hash)) set((state) => (state.keys ? { keys: null } : {}));
});

function emptyForm() {
  return { name: '', mode: 'allow_all', chosen: [], expires: '' };
}

export function enterKeys() {
  set({
    keys: {
      list: null, // the API's keys, newest first; null until loaded
      listError: null,
      form: emptyForm(),
      errors: {}, // field -> message; 'form' for one that names no field of ours
      busy: false,
      created: null, // {name, key}: the key itself, shown once
      copy: null, // {ok: true} | {ok: false, message}
      revoking: {}, // id -> true while in flight, or the error's message
    },
  });
  loadKeys();
}

function editKeys(changes) {
  set((state) => (state.keys ? { keys: { ...state.keys, ...changes } } : {}));
}

export async function loadKeys() {
  editKeys({ listError: null });
  try {
    editKeys({ list: await getJson('/api/v1/auth/keys') });
  } catch (error) {
    editKeys({ listError: `Could not list the keys: ${error.message}` });
  }
}

export function editForm(changes) {
  editKeys({ form: { ...get().keys.form, ...changes } });
}

export function chooseInstance(name, chosen) {
  const others = get().keys.form.chosen.filter((each) => each !== name);
  editForm({ chosen: chosen ? [...others, name] : others });
}

export async function createKey() {
  const { form } = get().keys;
  const body = { name: form.name, permission_mode: form.mode };
  if (form.mode === 'per_instance') {
    // A chosen instance deleted since is no longer offered, so it is not asked for either.
    const instances = get().instances;
    body.instances = form.chosen.filter((name) => instances.has(name)).sort();
  }
  if (form.expires) {
    const when = new Date(form.expires).getTime();
    if (Number.isNaN(when)) {
      editKeys({ errors: { expires_at: 'not a date and time' } });
      return;
    }
    body.expires_at = Math.floor(when / 1000);
  }
  editKeys({ busy: true, errors: {} }); // a key still shown stays until another replaces it
  try {
    const { key, ...info } = await sendJson('POST', '/api/v1/auth/keys', body);
    set((state) => {
      if (!state.keys) return {}; // the page was left: the key is not shown anywhere else
      const list = [info, ...(state.keys.list || []).filter((each) => each.id !== info.id)];
      return { keys: { ...state.keys, busy: false, form: emptyForm(), list, created: { name: info.name, key }, copy: null } };
    });
  } catch (error) {
    editKeys({ busy: false, errors: { [fieldOf(error.field)]: error.message } });
  }
}

// "instances[2]" is one of the checkboxes: the error goes beside the list of them.
function fieldOf(field) {
  if (!field) return 'form';
  if (field.startsWith('instances')) return 'instances';
  return ['name', 'expires_at', 'permission_mode'].includes(field) ? field : 'form';
}

export async function copyKey() {
  try {
    await navigator.clipboard.writeText(get().keys.created.key);
    editKeys({ copy: { ok: true } });
  } catch (error) {
    editKeys({ copy: { ok: false, message: `Could not copy the key (${error.message}): select it and copy it by hand.` } });
  }
}

export function forgetCreated() {
  editKeys({ created: null, copy: null });
}

function markRevoking(id, value) {
  const keys = get().keys;
  if (!keys) return;
  const revoking = { ...keys.revoking };
  if (value === undefined) delete revoking[id];
  else revoking[id] = value;
  editKeys({ revoking });
}

function dropKey(id) {
  markRevoking(id, undefined);
  set((state) => (state.keys ? { keys: { ...state.keys, list: state.keys.list.filter((each) => each.id !== id) } } : {}));
}

export async function revokeKey(info) {
  if (!confirm(`Revoke the key ${info.name}? Whatever uses it is refused from now on.`)) return;
  markRevoking(info.id, true);
  try {
    await request(`/api/v1/auth/keys/${info.id}`, { method: 'DELETE' });
    dropKey(info.id);
  } catch (error) {
    if (error.status === 404) dropKey(info.id); // revoked elsewhere already: what the user wanted
    else markRevoking(info.id, `Could not revoke: ${error.message}`);
  }
}
