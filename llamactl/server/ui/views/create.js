// Create or edit an instance: paste a command, see it parsed into options, change them, save.
// A validation error from llamactl is shown beside the field it names.
import { addOption, editCreate, editOption, parseCommand, removeOption, saveInstance } from '../actions.js';
import { searchFlags } from '../format.js';
import { html } from '../html.js';
import { Field } from './field.js';

const BACKENDS = [['llama_cpp', 'llama.cpp (llama-server)'], ['mlx_lm', 'MLX (mlx_lm.server)'], ['vllm', 'vLLM']];

export function CreateView({ create, spec }) {
  if (create.declared) {
    return html`<section><h2>Edit ${create.name}</h2>
      <p class="notice info" role="status">${create.name} is declared in the config file: edit
      <code>models.${create.name}</code> there, then reload (SIGHUP or POST /api/v1/config/reload).</p></section>`;
  }
  const errors = create.errors;
  const submit = (event) => {
    event.preventDefault();
    saveInstance();
  };
  const parse = (event) => {
    event.preventDefault();
    parseCommand();
  };
  return html`
    <section>
      <h2>${create.editing ? `Edit ${create.editing}` : 'Create an instance'}</h2>
      ${!create.editing && html`
        <form class="paste" onSubmit=${parse}>
          <${Field} id="backend" label="Backend">
            <select id="backend" value=${create.backend} onChange=${(e) => editCreate({ backend: e.currentTarget.value })}>
              ${BACKENDS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
            </select>
          <//>
          <${Field} id="command" label="Command" error=${errors.command}
              help="Paste the command you would run, for example: llama-server -m ~/models/qwen.gguf -c 8192">
            <textarea id="command" rows="3" spellcheck=${false} value=${create.command}
              onInput=${(e) => editCreate({ command: e.currentTarget.value })}></textarea>
          <//>
          <button type="submit" disabled=${create.busy || !create.command.trim()}>Parse</button>
        </form>`}
      ${create.parsed && html`
        <form class="options" onSubmit=${submit}>
          ${errors.form && html`<p class="field-error" role="alert">${errors.form}</p>`}
          <${Field} id="name" label="Name" error=${errors.name}>
            <input id="name" value=${create.name} disabled=${Boolean(create.editing)} autocomplete="off"
              onInput=${(e) => editCreate({ name: e.currentTarget.value })} />
          <//>
          <fieldset>
            <legend>Options of ${create.parsed.backend_type}</legend>
            ${create.options.length === 0 && html`<p class="help">No options were given.</p>`}
            ${create.options.map((row, index) => html`
              <${OptionRow} key=${row.key} row=${row} index=${index} flag=${spec && spec.byKey.get(row.key)}
                error=${errors[`backend_options.${row.key}`]} />`)}
            <${AddOption} spec=${spec} query=${create.optionSearch} />
          </fieldset>
          <${Field} id="environment" label="Environment" error=${errors.environment} help="One NAME=value per line">
            <textarea id="environment" rows="2" spellcheck=${false} value=${create.environment}
              onInput=${(e) => editCreate({ environment: e.currentTarget.value })}></textarea>
          <//>
          <${Field} id="command_override" label="Executable" error=${errors.command_override}
              help="Leave empty to use the backend's configured command">
            <input id="command_override" value=${create.commandOverride} spellcheck=${false}
              onInput=${(e) => editCreate({ commandOverride: e.currentTarget.value })} />
          <//>
          <${InstanceOptions} values=${create.instanceOptions} errors=${errors} />
          <button type="submit" disabled=${create.busy}>${create.editing ? 'Save' : 'Create'}</button>
          <a href="#/instances">Cancel</a>
        </form>`}
    </section>`;
}

function OptionRow({ row, index, flag, error }) {
  const id = `option-${row.key}`;
  const flags = flag ? flag.spellings.join(', ') : '';
  return html`
    <div class=${`field option${error ? ' invalid' : ''}`}>
      <label for=${id}>${row.key} ${flags && html`<code class="flags">${flags}</code>`}</label>
      <div class="with-action">
        <input id=${id} value=${row.text} spellcheck=${false} aria-describedby=${`${id}-help`}
          onInput=${(e) => editOption(index, e.currentTarget.value)} />
        <button type="button" class="quiet" onClick=${() => removeOption(index)} aria-label=${`Remove ${row.key}`}>Remove</button>
      </div>
      <p class="help" id=${`${id}-help`}>${flag ? flag.help : ''}</p>
      ${error && html`<p class="field-error" role="alert">${error}</p>`}
    </div>`;
}

// Search every option of the backend by key, flag or help, and add one.
function AddOption({ spec, query }) {
  if (!spec) return html`<p class="help">Loading the backend's options…</p>`;
  const found = searchFlags(spec.flags, query);
  return html`
    <div class="field add-option">
      <label for="option-search">Add an option (${spec.flags.length} in ${spec.program} ${spec.version})</label>
      <input id="option-search" type="search" value=${query} autocomplete="off" placeholder="ctx, threads, --port…"
        onInput=${(e) => editCreate({ optionSearch: e.currentTarget.value })} />
      ${found.length > 0 && html`
        <ul class="found" aria-label="Matching options">
          ${found.map((flag) => html`<li key=${flag.key}>
            <button type="button" class="quiet" onClick=${() => addOption(flag)}>
              <strong>${flag.key}</strong> <code>${flag.spellings.join(', ')}</code></button>
            <span class="help">${flag.help}</span></li>`)}
        </ul>`}
      ${query.trim() && found.length === 0 && html`<p class="help">No option matches ${query}.</p>`}
    </div>`;
}

const NUMBERS = [
  ['idle_timeout', 'Idle timeout (minutes; 0 never stops)'],
  ['max_concurrent', 'Requests at once'],
  ['max_queue', 'Queue limit'],
];
const SWITCHES = [['auto_restart', 'Restart after a crash'], ['on_demand_start', 'Start on the first request']];

function InstanceOptions({ values, errors }) {
  const change = (field, value) => {
    const next = { ...values };
    if (value === '' || value === null) delete next[field];
    else next[field] = value;
    editCreate({ instanceOptions: next });
  };
  return html`
    <fieldset>
      <legend>Instance</legend>
      ${NUMBERS.map(([field, label]) => html`
        <${Field} key=${field} id=${field} label=${label} error=${errors[field]}>
          <input id=${field} type="number" min="0" value=${values[field] ?? ''}
            onInput=${(e) => change(field, e.currentTarget.value === '' ? '' : Number(e.currentTarget.value))} />
        <//>`)}
      <${Field} id="group" label="Group" error=${errors.group}>
        <input id="group" value=${values.group ?? ''} onInput=${(e) => change('group', e.currentTarget.value)} />
      <//>
      ${SWITCHES.map(([field, label]) => html`
        <${Field} key=${field} id=${field} label=${label} error=${errors[field]}>
          <select id=${field} value=${values[field] === undefined ? '' : String(values[field])}
              onChange=${(e) => change(field, e.currentTarget.value === '' ? '' : e.currentTarget.value === 'true')}>
            <option value="">default</option><option value="true">yes</option><option value="false">no</option>
          </select>
        <//>`)}
    </fieldset>`;
}

