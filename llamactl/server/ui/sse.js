// Server-Sent Events read with fetch, so the key travels as a header.
//
// EventSource cannot send headers. The alternative, a session cookie, is an ambient credential
// that the browser attaches to every request to this origin, cross-site ones included; with fetch
// the key stays in this tab and nothing rides along on a forged request. Resuming after a drop is
// ours to do then: the last id seen goes back as Last-Event-ID, as EventSource would send it.

export class SseParser {
  constructor() {
    this.pending = '';
    this.data = [];
    this.event = '';
    this.lastId = null;
  }

  // Feed decoded text; returns the events completed by it, as {id, event, data}.
  feed(chunk) {
    let text = this.pending + chunk;
    // A CR at the end may be the first half of a CRLF: keep it until the next chunk says.
    const heldCr = text.endsWith('\r');
    if (heldCr) text = text.slice(0, -1);
    const lines = text.split(/\r\n|\r|\n/);
    this.pending = lines.pop() + (heldCr ? '\r' : '');
    const events = [];
    for (const line of lines) {
      if (line === '') {
        if (this.data.length) {
          events.push({ id: this.lastId, event: this.event || 'message', data: this.data.join('\n') });
        }
        this.data = [];
        this.event = '';
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'data') this.data.push(value);
        else if (field === 'event') this.event = value;
        else if (field === 'id' && !value.includes('\0')) this.lastId = value;
      }
    }
    return events;
  }
}

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 10000;

// Follow `url` until `signal` aborts: onEvent(event) for each event, onState('open'|'retrying', error)
// as the connection comes and goes. `resume` sends the last id back after a drop; onOpen(reconnect)
// lets a stream without ids (a log) start over. `shouldStop(error)` ends it for good (a refused key).
export async function follow(url, { headers, signal, onEvent, onState = () => {}, onOpen = () => {},
  resume = true, shouldStop = () => false }) {
  let lastId = null;
  let delay = RETRY_FIRST_MS;
  let opened = 0;
  while (!signal.aborted) {
    try {
      const sent = { ...headers };
      if (resume && lastId !== null) sent['Last-Event-ID'] = lastId;
      const response = await fetch(url, { headers: sent, signal, cache: 'no-store' });
      if (!response.ok) {
        const error = new Error(`${response.status} ${response.statusText}`);
        error.status = response.status;
        throw error;
      }
      onOpen(opened++ > 0);
      onState('open');
      delay = RETRY_FIRST_MS;
      const parser = new SseParser();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const event of parser.feed(value)) {
          if (event.id !== null) lastId = event.id;
          onEvent(event);
        }
      }
      onState('retrying', new Error('the stream ended'));
    } catch (error) {
      if (signal.aborted) return;
      if (shouldStop(error)) {
        onState('stopped', error);
        return;
      }
      onState('retrying', error);
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, RETRY_MAX_MS);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}
