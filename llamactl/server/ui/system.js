// The system page's actions: what it loads and changes, kept in state.system.
import { set } from './store.js';

export function enterSystem() {
  set({ system: {} });
}
