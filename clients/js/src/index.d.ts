export declare const PRESENCE_EVENT: "broker.presence";
export declare const JOIN_EVENT: "broker.presence.join";
export declare const LEAVE_EVENT: "broker.presence.leave";
export declare const HORIZON_EVENT: "broker.horizon";

/** JSON as Broker stores it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One event as a stream or a history page delivers it. */
export interface BrokerEvent<T = Json> {
  /** The tenant's sequence number: the SSE id, and the cursor of history pages. */
  id: number;
  event: string;
  data: T;
  /** Milliseconds since the epoch (history pages only). */
  timestamp?: number;
}

export declare class BrokerError extends Error {
  status: number;
  /** Seconds, from a 429's or 503's Retry-After. */
  retryAfter?: number;
}

export interface BrokerOptions {
  url: string;
  jwt?: string;
  username?: string;
  password?: string;
}

export interface HistoryQuery {
  /** A filter: exact names and prefixes ending in `*`, comma-separated. */
  events?: string;
  before?: number;
  after?: number;
  /** 1 to 500 (100 by default). */
  limit?: number;
}

export interface HistoryPage {
  events: Array<Required<BrokerEvent>>;
  /** The cursor of the next page in the same direction; null at the end. */
  next: number | null;
}

export type Status = "connecting" | "open" | "reconnecting" | "closed";

export interface SubscribeOptions<T = Json> {
  events?: string;
  presence?: boolean;
  lastEventId?: number;
  onEvent?: (event: BrokerEvent<T>) => void;
  onPresence?: (users: string[]) => void;
  onHorizon?: (horizon: { last_event_id: number; horizon: number }) => void;
  onStatus?: (status: Status, error?: unknown) => void;
  /** Reconnection waits, in ms: doubled after each failure up to `max`, jittered. */
  backoff?: { initial?: number; max?: number };
  /** A 401: answer a new JWT to reconnect with, or nothing to close the stream. */
  onUnauthorized?: (error: BrokerError) => Promise<string | undefined | null>;
}

export declare class Subscription<T = Json> {
  /** The id of the last event delivered: a new subscription may resume after it. */
  readonly lastEventId: number | null;
  readonly users: Set<string>;
  readonly status: Status;
  /** Settles when the stream is closed for good. */
  readonly done: Promise<void>;
  close(): void;
}

export declare class Broker {
  constructor(options: BrokerOptions);
  static login(url: string, username: string, password: string, totp?: string): Promise<Broker>;
  readonly url: string;
  setJwt(jwt: string): void;
  insert(event: string, data: Json, options?: { idempotencyKey?: string }): Promise<{ id: string; seq: number }>;
  history(query?: HistoryQuery): Promise<HistoryPage>;
  presence(): Promise<string[]>;
  subscribe<T = Json>(options?: SubscribeOptions<T>): Subscription<T>;
}
