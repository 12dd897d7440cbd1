// Broker's JavaScript client, for browsers and Node 20+.
//
// A stream is a fetch() of /sse read through eventsource-parser (npm): fetch carries the
// Authorization header, which a browser's EventSource cannot, and every event name reaches one
// handler, which EventSource (and the `eventsource` package) cannot without a listener per name.
// Reconnection is this file's: after a dropped connection or a restarted server the stream comes
// back with backoff and `last_event_id`, Broker resumes exactly after it, and an id already
// delivered is never delivered twice. So a subscriber gets every event once, in order.

import { createParser } from "eventsource-parser";

/** Broker's own frames, under the prefix no insert may use. */
export const PRESENCE_EVENT = "broker.presence";
export const JOIN_EVENT = "broker.presence.join";
export const LEAVE_EVENT = "broker.presence.leave";
export const HORIZON_EVENT = "broker.horizon";

/** An answer other than 2xx: `status` and Broker's `{"error": ...}` message. */
export class BrokerError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.name = "BrokerError";
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

async function errorOf(response) {
  const body = await response.json().catch(() => null);
  const retryAfter = Number(response.headers.get("retry-after")) || undefined;
  return new BrokerError(response.status, (body && body.error) || response.statusText, retryAfter);
}

export class Broker {
  /**
   * @param {object} options
   * @param {string} options.url Broker's base URL, e.g. "https://api.example.com".
   * @param {string} [options.jwt] a JWT from /login (or `Broker.login`).
   * @param {string} [options.username] with `password`: Basic authentication instead.
   * @param {string} [options.password]
   */
  constructor({ url, jwt, username, password }) {
    if (!url) throw new TypeError("url is required");
    this.url = url.replace(/\/+$/, "");
    this.jwt = jwt;
    this.basic = username === undefined ? undefined : btoa(unescape(encodeURIComponent(`${username}:${password ?? ""}`)));
  }

  /** Logs in (`totp` for two-factor users) and answers a client holding the JWT. */
  static async login(url, username, password, totp) {
    const base = url.replace(/\/+$/, "");
    const body = { username, password, ...(totp === undefined ? {} : { totp }) };
    const response = await fetch(`${base}/login`, { method: "POST", body: JSON.stringify(body) });
    if (!response.ok) throw await errorOf(response);
    const { jwt } = await response.json();
    return new Broker({ url: base, jwt });
  }

  /** Replaces the JWT (after a new login); open streams use it from their next connection. */
  setJwt(jwt) {
    this.jwt = jwt;
  }

  authorization() {
    if (this.jwt) return `Bearer ${this.jwt}`;
    if (this.basic) return `Basic ${this.basic}`;
    return undefined;
  }

  headers(extra = {}) {
    const authorization = this.authorization();
    return { ...(authorization ? { authorization } : {}), ...extra };
  }

  async request(path, init = {}) {
    const response = await fetch(`${this.url}${path}`, { ...init, headers: this.headers(init.headers) });
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  /** Inserts an event: answers `{id, seq}`. An `idempotencyKey` makes a retry safe. */
  insert(event, data, { idempotencyKey } = {}) {
    const headers = idempotencyKey ? { "idempotency-key": idempotencyKey } : {};
    return this.request("/insert", { method: "POST", headers, body: JSON.stringify({ event, data }) });
  }

  /**
   * A page of history: newest first below `before` (or the newest), or oldest first above
   * `after`. Answers `{events: [{id, event, data, timestamp}], next}`; pass `next` as the same
   * cursor for the following page (null: no more).
   */
  history({ events, before, after, limit } = {}) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries({ events, before, after, limit })) {
      if (value !== undefined && value !== null) query.set(key, String(value));
    }
    const text = query.toString();
    return this.request(`/events${text ? `?${text}` : ""}`);
  }

  /** The users of this tenant with an open stream. */
  async presence() {
    return (await this.request("/presence")).users;
  }

  /** Opens a stream; see `Subscription`. */
  subscribe(options = {}) {
    return new Subscription(this, options);
  }
}

/** The wait before reconnection attempt `attempt` (0 first): doubled each time, then jittered. */
function backoff(attempt, initial, max) {
  const full = Math.min(max, initial * 2 ** Math.min(attempt, 20));
  return full / 2 + (Math.random() * full) / 2;
}

/**
 * A stream of the caller's tenant that reconnects by itself.
 *
 * Options: `events` (the filter, e.g. "room.42.*,profile"), `presence` (true: who is online),
 * `lastEventId` (resume after it), `onEvent({id, event, data})`, `onPresence(users)`,
 * `onHorizon({last_event_id, horizon})` (retention removed events after the resume point: the
 * newest of each name follows), `onStatus(status, error)` with status "connecting", "open",
 * "reconnecting" or "closed", `backoff` (`{initial: 250, max: 30000}` ms), and `onUnauthorized`
 * (async; may return a new JWT to reconnect with, else the stream closes).
 */
export class Subscription {
  constructor(broker, options) {
    this.broker = broker;
    this.options = options;
    this.lastEventId = options.lastEventId ?? null;
    /** The tenant's present users, with `presence: true`. */
    this.users = new Set();
    this.status = "connecting";
    this.closed = false;
    this.abort = new AbortController();
    this.done = this.run();
  }

  /** Ends the stream; no reconnection follows. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    this.setStatus("closed");
  }

  setStatus(status, error) {
    this.status = status;
    this.call("onStatus", status, error);
  }

  /** Calls a handler of the caller's; what it throws is reported, never taken as the stream's. */
  call(handler, ...args) {
    try {
      this.options[handler]?.(...args);
    } catch (error) {
      console.error(`@broker/client: ${handler} threw`, error);
    }
  }

  url() {
    const query = new URLSearchParams();
    if (this.options.events) query.set("events", this.options.events);
    if (this.options.presence) query.set("presence", "true");
    if (this.lastEventId !== null) query.set("last_event_id", String(this.lastEventId));
    const text = query.toString();
    return `${this.broker.url}/sse${text ? `?${text}` : ""}`;
  }

  async run() {
    const { initial = 250, max = 30_000 } = this.options.backoff ?? {};
    let attempt = 0;
    while (!this.closed) {
      let wait;
      try {
        const response = await fetch(this.url(), {
          headers: this.broker.headers({ accept: "text/event-stream" }),
          signal: this.abort.signal,
          cache: "no-store",
        });
        if (!response.ok) {
          const error = await errorOf(response);
          // A new JWT is tried after the usual wait: one that is refused again cannot spin.
          const jwt = error.status === 401 ? await this.options.onUnauthorized?.(error) : undefined;
          if (jwt) {
            this.broker.setJwt(jwt);
            throw error;
          }
          // A request Broker will refuse again as it is (credentials, scopes, a bad filter).
          if ([400, 401, 403, 404].includes(error.status)) {
            this.closed = true;
            this.setStatus("closed", error);
            return;
          }
          throw error;
        }
        this.setStatus("open");
        this.delivered = false;
        await this.read(response.body);
        // The backoff starts again only once a connection delivered something: a server that
        // accepts and then ends every stream is not asked again at once, forever.
        if (this.delivered) attempt = 0;
        // The server ended the stream (a restart, a credential that expired): come back.
      } catch (error) {
        if (this.closed) return;
        wait = error instanceof BrokerError && error.retryAfter ? error.retryAfter * 1000 : undefined;
        this.setStatus("reconnecting", error);
      }
      if (this.closed) return;
      if (this.status !== "reconnecting") this.setStatus("reconnecting");
      await new Promise((resolve) => {
        const stop = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          this.abort.signal.removeEventListener("abort", stop);
          resolve();
        }, wait ?? backoff(attempt++, initial, max));
        this.abort.signal.addEventListener("abort", stop, { once: true });
      });
    }
  }

  async read(body) {
    const parser = createParser({ onEvent: (message) => this.dispatch(message) });
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        parser.feed(value);
      }
    } finally {
      // Whatever ended the read, this connection's stream ends with it on the server too.
      await reader.cancel().catch(() => {});
    }
  }

  dispatch({ event = "message", id, data }) {
    if (this.closed) return;
    this.delivered = true;
    const value = JSON.parse(data);
    switch (event) {
      case PRESENCE_EVENT:
        this.users = new Set(value.users);
        return this.presenceChanged();
      case JOIN_EVENT:
        for (const user of value.users) this.users.add(user);
        return this.presenceChanged();
      case LEAVE_EVENT:
        for (const user of value.users) this.users.delete(user);
        return this.presenceChanged();
      case HORIZON_EVENT:
        return this.call("onHorizon", value);
    }
    // Broker's event frames all have ids; a frame without one is not an event to resume after.
    if (id === undefined) return;
    const seq = Number(id);
    // After a reconnection Broker resumes after the last id: an id at or below it was delivered.
    if (this.lastEventId !== null && seq <= this.lastEventId) return;
    this.lastEventId = seq;
    this.call("onEvent", { id: seq, event, data: value });
  }

  presenceChanged() {
    this.call("onPresence", [...this.users].sort());
  }
}
