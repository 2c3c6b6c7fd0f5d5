//! The one way the console talks to the manager: a typed client generated from the
//! committed OpenAPI document (`npm run gen`), the session token, and the API's errors.
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Vm = Schemas["Vm"];
export type Fn = Schemas["Function"];

const TOKEN_KEY = "hearth.token";

export function getToken(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string | null) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  window.dispatchEvent(new Event("hearth-auth"));
}

/** An error answered by the API: its status and the message of its `{"error": …}` body. */
export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public code?: string,
  ) {
    super(message);
  }
}

const auth: Middleware = {
  onRequest({ request }) {
    const token = getToken();
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
};

export const client = createClient<paths>({ baseUrl: window.location.origin });
client.use(auth);

/** Unwraps an openapi-fetch answer: the data, or an [`ApiError`] with the server's message. */
export async function unwrap<T>(
  p: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  let r;
  try {
    r = await p;
  } catch (e) {
    throw new ApiError(0, `the manager did not answer (${(e as Error).message}); is it running?`);
  }
  if (r.response.ok) return r.data as T;
  const body = r.error as { error?: { code?: string; message?: string } } | string | undefined;
  const message =
    typeof body === "object" && body?.error?.message
      ? body.error.message
      : `${r.response.status} ${r.response.statusText}`;
  if (r.response.status === 401 && getToken()) setToken(null);
  throw new ApiError(
    r.response.status,
    message,
    typeof body === "object" ? body?.error?.code : undefined,
  );
}

/** The WebSocket URL of an API path; the token rides in the subprotocol list, never the URL. */
export function openSocket(path: string): WebSocket {
  const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
  const token = getToken() ?? "";
  const ws = new WebSocket(`${proto}//${window.location.host}${path}`, [
    "hearth",
    `bearer.${token}`,
  ]);
  ws.binaryType = "arraybuffer";
  return ws;
}
