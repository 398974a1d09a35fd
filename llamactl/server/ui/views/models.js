// The models page.
import { html } from '../html.js';

export function ModelsView({ state }) {
  return html`<section><h2>Models</h2><p>state: ${state.models ? 'ready' : 'loading'}</p></section>`;
}
