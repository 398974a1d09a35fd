// Sign-in: the key goes in sessionStorage for this tab, and in a header with every request.
import { signIn } from '../actions.js';
import { html } from '../html.js';

export function SignIn({ signIn: status }) {
  const submit = (event) => {
    event.preventDefault();
    const key = new FormData(event.currentTarget).get('key').trim();
    if (key) signIn(key);
  };
  return html`
    <main class="signin">
      <h1>llamactl</h1>
      <form onSubmit=${submit}>
        <label for="key">API key</label>
        <input id="key" name="key" type="password" autocomplete="current-password" required
          aria-describedby="key-help ${status.error ? 'key-error' : ''}" />
        <p id="key-help" class="help">A management key manages instances; an inference key gets a
          read-only view. It is kept for this tab only.</p>
        ${status.error && html`<p id="key-error" class="field-error" role="alert">${status.error}</p>`}
        <button type="submit" disabled=${status.busy}>${status.busy ? 'Signing in…' : 'Sign in'}</button>
      </form>
    </main>`;
}
