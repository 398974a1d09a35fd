// The frame: the header with its navigation and sign-out, the notice, and the current view.
import { dismissNotice, signOut } from '../actions.js';
import { html } from '../html.js';
import { CreateView } from './create.js';
import { InstancesView } from './instances.js';
import { KeysView } from './keys.js';
import { LogsView } from './logs.js';
import { ModelsView } from './models.js';
import { PlaygroundView } from './playground.js';
import { SignIn } from './signin.js';
import { SystemView } from './system.js';

// The navigation: [view, label, for inference keys too].
const PAGES = [
  ['instances', 'Instances', true],
  ['create', 'Create', false],
  ['models', 'Models', false],
  ['playground', 'Playground', true],
  ['keys', 'Keys', false],
  ['system', 'System', false],
];
const VIEWS = { models: ModelsView, keys: KeysView, playground: PlaygroundView, system: SystemView };

export function App({ state }) {
  if (!state.session) return html`<${SignIn} signIn=${state.signIn} />`;
  const management = state.session.role === 'management';
  const view = state.route.view;
  return html`
    <header class="top">
      <h1>llamactl</h1>
      <nav aria-label="Main">
        ${PAGES.filter(([, , forInference]) => management || forInference).map(([page, label]) => html`
          <a href=${`#/${page}`} aria-current=${view === page ? 'page' : null}>${label}</a>`)}
        <a href="/api/v1/docs">API docs</a>
      </nav>
      <span class="live" data-live=${state.live} title="Live updates">${liveText(state, management)}</span>
      <button type="button" onClick=${signOut}>Sign out</button>
    </header>
    ${state.notice && html`
      <div class=${`notice ${state.notice.kind}`} role=${state.notice.kind === 'error' ? 'alert' : 'status'}>
        <span>${state.notice.text}</span>
        <button type="button" class="quiet" onClick=${dismissNotice} aria-label="Dismiss">×</button>
      </div>`}
    <main>${body(state, management, view)}</main>`;
}

function body(state, management, view) {
  if (management && view === 'create' && state.create) {
    const backend = state.create.parsed ? state.create.parsed.backend_type : state.create.backend;
    return html`<${CreateView} create=${state.create} spec=${state.specs[backend]} />`;
  }
  if (management && view === 'logs' && state.logs) return html`<${LogsView} logs=${state.logs} />`;
  const page = VIEWS[view];
  if (page && (management || view === 'playground')) return html`<${page} state=${state} />`;
  return html`<${InstancesView} state=${state} management=${management} />`;
}

function liveText(state, management) {
  if (!management) return 'read-only';
  return { open: 'live', retrying: 'reconnecting…', stopped: 'not live', closed: 'connecting…' }[state.live];
}
