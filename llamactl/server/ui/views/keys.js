// The keys page.
import { html } from '../html.js';

export function KeysView({ state }) {
  return html`<section><h2>Keys</h2><p>state: ${state.keys ? 'ready' : 'loading'}</p></section>`;
}
