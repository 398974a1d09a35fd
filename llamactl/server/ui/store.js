// The page's one state object. Views render from it; actions replace parts of it with set().
// Renders are batched to one per animation frame, so a burst of events costs one render.

const listeners = new Set();
let state = {
  session: null, // {key, role: 'management' | 'inference'}
  signIn: { busy: false, error: null },
  route: { view: 'instances', name: null },
  instances: new Map(), // name -> the API's instance object
  loaded: false,
  live: 'closed', // the events stream: 'open' | 'retrying' | 'closed'
  notice: null, // {kind: 'error' | 'info', text}
  busy: new Set(), // instance names with an action in flight
  now: Date.now(), // the clock uptimes are shown against, moved on by main.js
  create: null,
  specs: {}, // backend type -> its options, as /api/v1/backends/{backend}/options lists them
  logs: null,
  models: null, // each page's own state, owned by its module (models.js, keys.js, ...)
  keys: null,
  playground: null,
  system: null,
};
let scheduled = false;

export function get() {
  return state;
}

export function set(patch) {
  const changes = typeof patch === 'function' ? patch(state) : patch;
  state = { ...state, ...changes };
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      for (const listener of listeners) listener(state);
    });
  }
}

export function subscribe(listener) {
  listeners.add(listener);
  listener(state);
}
