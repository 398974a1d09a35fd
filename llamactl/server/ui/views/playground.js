// The playground page.
import { html } from '../html.js';

export function PlaygroundView({ state }) {
  return html`<section><h2>Playground</h2><p>state: ${state.playground ? 'ready' : 'loading'}</p></section>`;
}
