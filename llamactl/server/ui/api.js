// Requests to llamactl with the signed-in key as a header; errors as ApiError with the field they name.
import { savedKey } from './session.js';

export class ApiError extends Error {
  constructor(status, message, code, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export function authHeaders(key = savedKey()) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function request(path, { method = 'GET', body, key, signal } = {}) {
  const headers = authHeaders(key);
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, `llamactl did not answer (${error.message})`, 'unreachable');
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

export async function sendJson(method, path, body) {
  const response = await request(path, { method, body });
  return response.status === 204 ? null : response.json();
}

// Management errors are {"error": code, "details", "field"}; inference errors are OpenAI's
// {"error": {"message", "code", "param"}}.
export async function errorOf(response) {
  const text = await response.text();
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    return new ApiError(response.status, text || response.statusText, 'http_error');
  }
  const error = parsed && parsed.error;
  if (error && typeof error === 'object') {
    return new ApiError(response.status, error.message || text, error.code || error.type, error.param);
  }
  return new ApiError(response.status, parsed.details || String(error), String(error), parsed.field);
}
