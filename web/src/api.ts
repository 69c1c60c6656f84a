/**
 * The dashboard's client of the REST API: bearer token handling, JSON calls with the API's error shape,
 * and the SSE stream read with fetch (EventSource cannot send an Authorization header).
 */

/** `{error: {code, message, field?, reason?}}` as an exception. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

const KEY = 'dvs.token';

/**
 * The token from the URL fragment `#token=...` (what `dvs dashboard` prints), moved to sessionStorage and
 * removed from the address bar; else the one kept in sessionStorage.
 */
export function takeToken(): string | null {
  const m = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (m?.[1]) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem(KEY);
}

export function saveToken(t: string | null): void {
  if (t === null) sessionStorage.removeItem(KEY);
  else sessionStorage.setItem(KEY, t);
}

export async function api<T>(token: string, method: string, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (e) {
    throw new ApiError(0, 'ENOTCONN', `the node serving this page is not answering (${String(e)})`);
  }
  const data = (await res.json().catch(() => ({}))) as {
    error?: { code?: string; message?: string; field?: string };
  };
  if (!res.ok) {
    const e = data.error ?? {};
    throw new ApiError(res.status, e.code ?? 'EINTERNAL', e.message ?? `HTTP ${res.status}`, e.field);
  }
  return data as T;
}

/** One message of the SSE stream. */
export interface SseMessage {
  event: string;
  id?: string;
  data: unknown;
}

/**
 * Read `/api/v1/events/stream` until `signal` aborts, calling `onMessage` per message. Resolves when the
 * stream ends (the server went away); rejects with ApiError for an error answer.
 */
export async function stream(
  token: string,
  query: string,
  signal: AbortSignal,
  onMessage: (m: SseMessage) => void,
): Promise<void> {
  const res = await fetch(`/api/v1/events/stream${query}`, {
    headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
    signal,
  });
  if (!res.ok || res.body === null) {
    const data = (await res.json().catch(() => ({}))) as { error?: { code?: string; message?: string } };
    throw new ApiError(
      res.status,
      data.error?.code ?? 'EINTERNAL',
      data.error?.message ?? `HTTP ${res.status}`,
    );
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut = buf.indexOf('\n\n');
    while (cut >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      cut = buf.indexOf('\n\n');
      let event = 'message';
      let id: string | undefined;
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('id: ')) id = line.slice(4);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length === 0) continue;
      try {
        onMessage({ event, ...(id !== undefined ? { id } : {}), data: JSON.parse(data.join('\n')) });
      } catch {
        // a malformed message is skipped, not fatal
      }
    }
  }
}
