// React hooks over `Broker`: what the original broker-hook did for reactive forms (the newest event
// of a name is the state), plus reconnection without loss. Each hook holds one stream while its
// component is mounted; components that share a `Broker` share its credentials, not its streams.

import { useEffect, useState } from "react";

/** The newest data of event `name`, or `initial` until one arrives; re-renders on each new one. */
export function useLatest(broker, name, initial = undefined) {
  const [data, setData] = useState(initial);
  useEffect(() => {
    // Another name: its own newest, not the last name's.
    setData(initial);
    const subscription = broker.subscribe({
      events: name,
      onEvent: (event) => {
        if (event.event === name) setData(event.data);
      },
    });
    return () => subscription.close();
  }, [broker, name]);
  return data;
}

/**
 * The events `filter` selects as they arrive (the replay's newest of each name first), oldest
 * first, the last `limit` of them kept.
 */
export function useEvents(broker, filter, { limit = 1000 } = {}) {
  const [events, setEvents] = useState([]);
  useEffect(() => {
    setEvents([]);
    const subscription = broker.subscribe({
      events: filter,
      onEvent: (event) => setEvents((kept) => [...kept, event].slice(-limit)),
    });
    return () => subscription.close();
  }, [broker, filter, limit]);
  return events;
}

/** The tenant's users with an open stream, sorted; re-renders as they come and go. */
export function usePresence(broker) {
  const [users, setUsers] = useState([]);
  useEffect(() => {
    // A filter that matches no event: only the presence frames.
    const subscription = broker.subscribe({ events: "broker.none", presence: true, onPresence: setUsers });
    return () => subscription.close();
  }, [broker]);
  return users;
}
