// The playground page: the settings, one column per model (two to compare), the prompt.
// What a model says is shown as text, never as HTML.
import { html } from '../html.js';
import { Field } from './field.js';
import {
  canSend, clearConversations, editSettings, isRunning, pickModel, send, statsOf, stopColumn, streaming,
} from '../playground.js';

const SAMPLING = [
  ['temperature', 'Temperature', { min: 0, max: 2, step: 0.1 }],
  ['top_p', 'Top P', { min: 0, max: 1, step: 0.05 }],
  ['max_tokens', 'Max tokens', { min: 1, step: 1 }],
];

export function PlaygroundView({ state }) {
  const playground = state.playground;
  if (!playground || playground.models === null) return html`<p class="loading">Loading the models…</p>`;
  const management = state.session.role === 'management';
  if (!playground.models.length) {
    return html`<section class="playground"><h2>Playground</h2>
      <p class="empty">${management
        ? html`No models to try yet. <a href="#/create">Create an instance</a>.`
        : 'This key may use no model.'}</p></section>`;
  }
  const columns = playground.columns.map((column, index) => ({ ...column, index })).filter((column) => column.model);
  const busy = streaming(playground);
  const sendNow = () => {
    send();
    focusPrompt(); // a disabled Send would leave the focus nowhere
  };
  const keyDown = (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      sendNow();
    }
  };
  const clear = () => {
    clearConversations();
    focusPrompt(); // Clear is disabled once there is nothing left to clear
  };
  const submit = (event) => {
    event.preventDefault();
    sendNow();
  };
  return html`
    <section class="playground" onKeyDown=${keyDown}>
      <h2>Playground</h2>
      <${Settings} playground=${playground} instances=${state.instances} />
      <div class="pg-columns" data-columns=${columns.length}>
        ${columns.map((column) => html`<${Column} key=${column.index} column=${column}
          label=${columnLabel(column, columns)} />`)}
      </div>
      <form class="pg-prompt" onSubmit=${submit}>
        <label for="pg-prompt">Prompt</label>
        <textarea id="pg-prompt" rows="3" value=${playground.prompt} aria-describedby="pg-prompt-help"
          onInput=${(e) => editSettings({ prompt: e.currentTarget.value })}></textarea>
        <div class="pg-prompt-actions">
          <button type="submit" disabled=${!canSend(playground)}>Send</button>
          <button type="button" class="quiet" onClick=${clear}
            disabled=${!playground.columns.some((column) => column.exchanges.length)}>Clear</button>
          <span id="pg-prompt-help" class="help">${busy
            ? 'Answering… Stop ends an answer and keeps what came.'
            : `Ctrl+Enter sends${columns.length > 1 ? ' to both models' : ''}.`}</span>
        </div>
      </form>
    </section>`;
}

// A status as the events stream keeps it (management keys), else as /v1/models said it.
function statusOf(model, instances) {
  const instance = instances.get(model.id);
  return (instance && instance.status) || model.status;
}

function Settings({ playground, instances }) {
  const [first, second] = playground.columns;
  const models = playground.models.map((model) => ({ id: model.id, status: statusOf(model, instances) }));
  const picked = models.find((model) => model.id === first.model);
  const asleep = picked && picked.status && picked.status !== 'running'
    ? `${picked.id} is ${picked.status}: the first request starts it, if its instance starts on demand.` : null;
  const options = models.map((model) => html`<option value=${model.id}>${model.id}${
    model.status && model.status !== 'running' ? ` (${model.status})` : ''}</option>`);
  return html`
    <form class="pg-settings" onSubmit=${(event) => event.preventDefault()}>
      <${Field} id="pg-model" label="Model" help=${asleep}>
        <select id="pg-model" value=${first.model} aria-describedby=${asleep ? 'pg-model-help' : null}
          onChange=${(e) => pickModel(0, e.currentTarget.value)}>${options}</select>
      <//>
      <${Field} id="pg-compare" label="Compare with">
        <select id="pg-compare" value=${second.model} onChange=${(e) => pickModel(1, e.currentTarget.value)}>
          <option value="">No second model</option>${options}</select>
      <//>
      ${SAMPLING.map(([field, label, limits]) => html`
        <${Field} id=${`pg-${field}`} label=${label}>
          <input id=${`pg-${field}`} type="number" inputmode="decimal" ...${limits} value=${playground[field]}
            placeholder="default" title="Empty: the backend's default"
            onInput=${(e) => editSettings({ [field]: e.currentTarget.value })} />
        <//>`)}
      <div class="pg-system">
        <${Field} id="pg-system" label="System prompt">
          <textarea id="pg-system" rows="2" value=${playground.system} placeholder="None"
            onInput=${(e) => editSettings({ system: e.currentTarget.value })}></textarea>
        <//>
      </div>
    </form>`;
}

// The two columns may show the same model: the second's label says which it is.
function columnLabel(column, columns) {
  return column.index === 1 && columns[0].model === column.model ? `${column.model} (second)` : column.model;
}

// The Stop button goes once its answer stopped: the focus goes on to the prompt.
function stop(column) {
  stopColumn(column);
  focusPrompt();
}

function focusPrompt() {
  document.getElementById('pg-prompt').focus();
}

function Column({ column, label }) {
  const running = column.exchanges.some(({ answer }) => isRunning(answer));
  return html`
    <section class="pg-column" data-column=${column.index} aria-label=${`Conversation with ${label}`}>
      <header>
        <h3>${label}</h3>
        ${running && html`<button type="button" class="danger" onClick=${() => stop(column.index)}
          aria-label=${`Stop ${label}`}>Stop</button>`}
      </header>
      ${column.exchanges.length === 0 && html`<p class="empty">Nothing asked yet.</p>`}
      <ol class="pg-conversation">
        ${column.exchanges.map(({ prompt, answer }) => html`
          <li key=${answer.id} class="pg-turn user"><span class="pg-who">You</span>
            <div class="pg-text">${prompt}</div></li>
          <${Answer} key=${`a${answer.id}`} answer=${answer} />`)}
      </ol>
    </section>`;
}

function Answer({ answer }) {
  const running = isRunning(answer);
  return html`
    <li class="pg-turn assistant" data-state=${answer.state} aria-busy=${running ? 'true' : 'false'}>
      <span class="pg-who">${answer.model}</span>
      ${answer.reasoning && html`
        <details class="pg-reasoning" open=${running || !answer.content}>
          <summary>Reasoning</summary><div class="pg-text">${answer.reasoning}</div></details>`}
      ${answer.content && html`<div class="pg-text pg-answer">${answer.content}</div>`}
      ${answer.state === 'waiting' && html`<p class="pg-waiting">${answer.note || 'Waiting for the first token…'}</p>`}
      ${answer.error && html`<p class="pg-error error-text" role="alert">${answer.error}</p>`}
      <${Stats} answer=${answer} />
    </li>`;
}

const ENDINGS = { streaming: 'streaming…', stopped: 'stopped', error: 'failed' };

function Stats({ answer }) {
  if (answer.state === 'waiting' || (answer.state === 'error' && !answer.chunks)) return null;
  const { ttft, perSecond, tokens } = statsOf(answer);
  const ending = answer.state === 'done' && answer.finish === 'length' ? 'max_tokens reached' : ENDINGS[answer.state];
  return html`
    <p class="pg-stats" role=${answer.state === 'streaming' ? null : 'status'}>
      <span class="pg-ttft" title="Time to first token: from Send to the answer's first word">TTFT ${seconds(ttft)}</span>
      <span class="pg-rate" title="Tokens a second after the first one">${perSecond === null ? '–' : perSecond.toFixed(1)} tokens/s</span>
      <span class="pg-tokens">${tokens} token${tokens === 1 ? '' : 's'}</span>
      ${ending && html`<span class="pg-ending" data-state=${answer.state}>${ending}</span>`}
    </p>`;
}

function seconds(value) {
  if (value === null) return '–';
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}
