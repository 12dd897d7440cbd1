import type { Broker, BrokerEvent, Json } from "./index.js";

/** The newest data of event `name` (the replay's, then each new one); `initial` until then. */
export declare function useLatest<T = Json>(broker: Broker, name: string, initial?: T): T | undefined;
/** The events `filter` selects, oldest first, the last `limit` (1,000) kept. */
export declare function useEvents<T = Json>(broker: Broker, filter: string, options?: { limit?: number }): Array<BrokerEvent<T>>;
/** The tenant's users with an open stream, sorted. */
export declare function usePresence(broker: Broker): string[];
