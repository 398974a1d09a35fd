// One instance's log, followed live: pause, search, download. Lines are text, never HTML.
import { downloadLogs, filterLogs, pauseLogs } from '../actions.js';
import { html } from '../html.js';

export function LogsView({ logs }) {
  const needle = logs.filter.toLowerCase();
  const shown = needle ? logs.lines.filter((line) => line.toLowerCase().includes(needle)) : logs.lines;
  return html`
    <section class="logs">
      <h2>Logs of ${logs.name}</h2>
      <div class="toolbar">
        <button type="button" onClick=${() => pauseLogs(!logs.paused)} aria-pressed=${logs.paused}>
          ${logs.paused ? `Resume (${logs.held.length} new)` : 'Pause'}</button>
        <label for="log-filter">Search</label>
        <input id="log-filter" type="search" value=${logs.filter} onInput=${(e) => filterLogs(e.currentTarget.value)} />
        <button type="button" onClick=${downloadLogs}>Download</button>
        <span class="live" data-live=${logs.state}>${logs.state === 'open' ? 'following' : logs.state}</span>
        <a href="#/instances">Back to the instances</a>
      </div>
      ${logs.error && logs.state !== 'open' && html`<p class="field-error" role="alert">${logs.error}</p>`}
      <pre class="log" tabindex="0" aria-label=${`Log of ${logs.name}`} aria-live="off">${shown.join('\n')}</pre>
    </section>`;
}
