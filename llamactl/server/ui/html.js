// Preact's h bound to htm's tagged templates: components as functions of their props, no build.
import { h, render } from './vendor/preact.module.js';
import htm from './vendor/htm.module.js';

export const html = htm.bind(h);
export { render };
