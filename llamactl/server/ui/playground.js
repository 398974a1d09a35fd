// The playground page's actions: what it loads and changes, kept in state.playground.
import { set } from './store.js';

export function enterPlayground() {
  set({ playground: {} });
}
