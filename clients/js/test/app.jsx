// The page tests/e2e/js_client.rs drives in Chromium: the client's own subscription recording every
// event it delivers, and a React 19 app using the hooks.
import { createRoot } from "react-dom/client";
import { Broker } from "../src/index.js";
import { useEvents, useLatest } from "../src/react.js";

const { base, jwt } = window.BROKER;
const broker = new Broker({ url: base, jwt });
window.ids = [];
window.statuses = [];
window.tickCount = 0;
const subscription = broker.subscribe({
  backoff: { initial: 100, max: 1000 },
  onStatus: (status) => window.statuses.push(status),
  onEvent: (event) => {
    window.ids.push(event.id);
    if (event.event === "tick") window.tickCount += 1;
    if (event.event === "end") {
      window.ended = true;
      subscription.close();
    }
  },
});

function Profile() {
  const profile = useLatest(broker, "profile");
  return <p id="profile">{profile ? profile.name : "loading"}</p>;
}

function Ticks() {
  const ticks = useEvents(broker, "tick", { limit: 10_000 });
  return <ul id="ticks">{ticks.map((tick) => <li key={tick.id} data-id={tick.id}>{tick.data.n}</li>)}</ul>;
}

createRoot(document.getElementById("root")).render(
  <>
    <Profile />
    <Ticks />
  </>,
);
