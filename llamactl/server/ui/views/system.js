// The system page: memory of the machine and of each instance, backends, config, live metrics.
import { bytes } from '../format.js';
import { html } from '../html.js';
import { rates } from '../system.js';

export function SystemView({ state }) {
  const system = state.system;
  if (!system) return html`<p>Loading…</p>`;
  return html`
    <section class="system">
      <h2>System</h2>
      ${system.error && html`<p class="field-error" role="alert">${system.error}</p>`}
      <${Memory} memory=${system.memory} instances=${[...state.instances.values()]} />
      <${Metrics} system=${system} />
      <${Backends} config=${system.config} versions=${system.versions} />
      <section aria-labelledby="config-heading">
        <h3 id="config-heading">Effective configuration</h3>
        <p class="help">As llamactl runs it, secrets replaced by ***. The API is described at${' '}<a href="/api/v1/docs">/api/v1/docs</a>.</p>
        <pre class="config" tabindex="0" aria-label="Effective configuration">${system.config ? JSON.stringify(system.config, null, 2) : 'Loading…'}</pre>
      </section>
    </section>`;
}

function Memory({ memory, instances }) {
  if (!memory) return html`<p>Loading the memory…</p>`;
  const used = memory.memory.total_bytes - memory.memory.available_bytes;
  return html`
    <section aria-labelledby="memory-heading">
      <h3 id="memory-heading">Memory</h3>
      <p>
        <label for="memory-used">${`In use: ${bytes(used)} of ${bytes(memory.memory.total_bytes)} (${memory.memory.used_percent.toFixed(1)} %)`}</label>
        <meter id="memory-used" min="0" max=${memory.memory.total_bytes} value=${used}
          high=${memory.memory.total_bytes * 0.85}></meter>
      </p>
      <p>Memory budget for instances: ${memory.memory_budget_bytes === null ? 'none (no memory admission)' : bytes(memory.memory_budget_bytes)}</p>
      ${memory.gpus.length > 0 && html`<ul>${memory.gpus.map((gpu) => html`<li key=${gpu.index}>GPU ${gpu.index} ${gpu.name}: ${bytes(gpu.used_bytes)} of ${bytes(gpu.total_bytes)}</li>`)}</ul>`}
      <table class="memory">
        <caption>Per instance: estimated from its files, reported by the backend, measured (PSS)</caption>
        <thead><tr><th scope="col">Instance</th><th scope="col">Status</th><th scope="col">Estimated</th>
          <th scope="col">Reported</th><th scope="col">Measured</th></tr></thead>
        <tbody>${instances.sort((a, b) => a.name.localeCompare(b.name)).map((each) => html`
          <tr key=${each.name}><th scope="row">${each.name}</th><td>${each.status}</td>
            <td>${bytes(each.memory?.estimated_bytes)}</td><td>${bytes(each.memory?.reported_bytes)}</td>
            <td>${bytes(each.memory?.measured_bytes)}</td></tr>`)}</tbody>
      </table>
    </section>`;
}

function Backends({ config, versions }) {
  if (!config) return null;
  return html`
    <section aria-labelledby="backends-heading">
      <h3 id="backends-heading">Backends</h3>
      <table class="backends">
        <thead><tr><th scope="col">Backend</th><th scope="col">Executable</th><th scope="col">Version</th></tr></thead>
        <tbody>${Object.entries(config.backends).map(([name, backend]) => html`
          <tr key=${name} data-backend=${name}><th scope="row">${name}</th>
            <td><code>${[backend.command, ...(backend.args || [])].join(' ')}</code></td>
            <td>${versionText(versions[name])}</td></tr>`)}</tbody>
      </table>
    </section>`;
}

function versionText(version) {
  if (!version) return 'asking…';
  if (version.error) return html`<span class="error-text">${version.error}</span>`;
  return version.text.split('\n').filter((line) => /version/i.test(line))[0] || version.text.split('\n')[0];
}

function Metrics({ system }) {
  const metrics = system.metrics;
  if (!metrics) return null;
  if (!metrics.available) {
    return html`<section><h3>Metrics</h3><p class="help">No metrics: ${metrics.error}</p></section>`;
  }
  const last = system.samples[system.samples.length - 1];
  const names = Object.keys(last ? last.totals : {}).sort();
  return html`
    <section aria-labelledby="metrics-heading">
      <h3 id="metrics-heading">Requests (from /metrics, every 5 s while this page is open)</h3>
      ${names.length === 0 && html`<p class="help">No requests yet.</p>`}
      <table class="metrics">
        <thead><tr><th scope="col">Instance</th><th scope="col">Requests</th><th scope="col">Completion tokens</th>
          <th scope="col">Requests per second</th></tr></thead>
        <tbody>${names.map((name) => html`
          <tr key=${name} data-instance=${name}><th scope="row">${name}</th><td>${last.totals[name].requests}</td>
            <td>${last.totals[name].tokens}</td>
            <td><${Sparkline} points=${rates(system.samples, name, 'requests')} label=${`Requests per second of ${name}`} /></td></tr>`)}</tbody>
      </table>
    </section>`;
}

const WIDTH = 160;
const HEIGHT = 28;

function Sparkline({ points, label }) {
  if (points.length < 2) return html`<span class="help">collecting…</span>`;
  const top = Math.max(...points, 1e-9);
  const step = WIDTH / (points.length - 1);
  const line = points.map((value, index) => `${(index * step).toFixed(1)},${(HEIGHT - (value / top) * (HEIGHT - 2) - 1).toFixed(1)}`).join(' ');
  const now = points[points.length - 1];
  return html`
    <svg class="sparkline" viewBox=${`0 0 ${WIDTH} ${HEIGHT}`} width=${WIDTH} height=${HEIGHT} role="img" aria-label=${`${label}: ${now.toFixed(2)} now`}>
      <polyline points=${line} fill="none" />
    </svg>
    <span class="rate">${now.toFixed(2)}/s</span>`;
}
