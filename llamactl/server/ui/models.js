// The models page's actions: what it loads and changes, kept in state.models.
import { set } from './store.js';

export function enterModels() {
  set({ models: {} });
}
