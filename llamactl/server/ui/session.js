// The key the user signed in with, kept for this tab only (sessionStorage), never in a URL or cookie.
const STORAGE_KEY = 'llamactl.key';

export function savedKey() {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function saveKey(key) {
  sessionStorage.setItem(STORAGE_KEY, key);
}

export function forgetKey() {
  sessionStorage.removeItem(STORAGE_KEY);
}
