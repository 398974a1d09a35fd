// The page's start: render the state on every change, follow the hash, restore the session.
import { restoreSession, route } from './actions.js';
import { html, render } from './html.js';
import { set, subscribe } from './store.js';
import { App } from './views/app.js';

const root = document.getElementById('app');
root.textContent = ''; // the loading note, until the first render
subscribe((state) => render(html`<${App} state=${state} />`, root));
addEventListener('hashchange', () => route(location.hash));
restoreSession();
setInterval(() => set({ now: Date.now() }), 10000); // uptimes move on without a refetch
