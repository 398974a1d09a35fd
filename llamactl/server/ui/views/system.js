// The system page.
import { html } from '../html.js';

export function SystemView({ state }) {
  return html`<section><h2>System</h2><p>state: ${state.system ? 'ready' : 'loading'}</p></section>`;
}
