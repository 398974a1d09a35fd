// The keys page's actions: what it loads and changes, kept in state.keys.
import { set } from './store.js';

export function enterKeys() {
  set({ keys: {} });
}
