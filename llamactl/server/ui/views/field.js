// One labelled form field: its control, its help, and the error llamactl gave for it.
// The help and the error have ids (`${id}-help`, `${id}-error`) for the control's aria-describedby.
import { html } from '../html.js';

export function Field({ id, label, error, help, children }) {
  return html`
    <div class=${`field${error ? ' invalid' : ''}`}>
      <label for=${id}>${label}</label>
      ${children}
      ${help && html`<p class="help" id=${`${id}-help`}>${help}</p>`}
      ${error && html`<p class="field-error" id=${`${id}-error`} role="alert">${error}</p>`}
    </div>`;
}
