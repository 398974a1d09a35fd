// The instances table, live from the events stream, with each row's actions.
import { exportInstance, instanceAction } from '../actions.js';
import { bytes, memoryOf, modelOf, uptime } from '../format.js';
import { html } from '../html.js';

const RUNNING = new Set(['running', 'starting', 'restarting']);

export function InstancesView({ state, management }) {
  const instances = [...state.instances.values()].sort((a, b) => a.name.localeCompare(b.name));
  if (!state.loaded) return html`<p>Loading instances…</p>`;
  if (!instances.length) {
    return html`<p class="empty">No instances yet.${management && html` <a href="#/create">Create one</a>.`}</p>`;
  }
  if (!management) {
    return html`
      <table class="instances">
        <caption>Models this key may use</caption>
        <thead><tr><th scope="col">Name</th><th scope="col">Status</th></tr></thead>
        <tbody>${instances.map((each) => html`<tr key=${each.name}><td>${each.name}</td>
          <td><span class="status" data-status=${each.status}>${each.status}</span></td></tr>`)}</tbody>
      </table>`;
  }
  return html`
    <table class="instances">
      <caption>${instances.length} instance${instances.length === 1 ? '' : 's'}</caption>
      <thead><tr>
        <th scope="col">Name</th><th scope="col">Backend</th><th scope="col">Status</th>
        <th scope="col">Model</th><th scope="col">Port</th><th scope="col">Memory</th>
        <th scope="col">In flight</th><th scope="col">Queued</th><th scope="col">Up</th><th scope="col">Restarts</th>
        <th scope="col">Actions</th>
      </tr></thead>
      <tbody>${instances.map((each) => html`<${Row} key=${each.name} instance=${each}
        busy=${state.busy.has(each.name)} now=${state.now} />`)}</tbody>
    </table>`;
}

function Row({ instance, busy, now }) {
  const name = instance.name;
  const running = RUNNING.has(instance.status);
  const action = (which) => () => instanceAction(name, which);
  return html`
    <tr data-instance=${name}>
      <th scope="row">${name}${instance.declared && html` <span class="badge" title="Declared in the config file">config</span>`}</th>
      <td>${instance.options.backend_type}</td>
      <td><span class="status" data-status=${instance.status}>${instance.status}</span>
        ${instance.last_error && html`<span class="error-text" title=${instance.last_error}> ⚠</span>`}</td>
      <td class="model" title=${modelOf(instance)}>${modelOf(instance)}</td>
      <td class="port">${instance.port ?? "–"}</td>
      <td>${bytes(memoryOf(instance))}</td>
      <td>${instance.in_flight ?? 0}</td>
      <td>${instance.queued ?? 0}</td>
      <td class="uptime">${uptime(instance.running_since, now)}</td>
      <td>${instance.restarts ?? 0}</td>
      <td><div class="actions">
        ${running
          ? html`<button type="button" disabled=${busy} onClick=${action('stop')} aria-label=${`Stop ${name}`}>Stop</button>
                 <button type="button" disabled=${busy} onClick=${action('restart')} aria-label=${`Restart ${name}`}>Restart</button>`
          : html`<button type="button" disabled=${busy} onClick=${action('start')} aria-label=${`Start ${name}`}>Start</button>`}
        <a href=${`#/logs/${encodeURIComponent(name)}`} aria-label=${`Logs of ${name}`}>Logs</a>
        <a href=${`#/create/${encodeURIComponent(name)}`} aria-label=${`Edit ${name}`}>Edit</a>
        <button type="button" class="quiet" onClick=${() => exportInstance(name)} aria-label=${`Export ${name}`}>Export</button>
        ${!instance.declared && html`<button type="button" class="danger" disabled=${busy || running}
          onClick=${action('delete')} aria-label=${`Delete ${name}`}>Delete</button>`}
      </div></td>
    </tr>`;
}
