// A React app as the original's README describes one: broker-hook's SSEProvider around components
// that read events with useSSE. Bundled by react-hook.mjs with esbuild and run in Chromium.
import { createRoot } from "react-dom/client";
import { SSEProvider, useSSE } from "broker-hook";

function Profile() {
  const profile = useSSE("profile");
  return <p id="profile">{profile ? profile.data.name : "loading"}</p>;
}

function Todos() {
  const todos = useSSE("todo", { initialState: { data: [] } });
  return <ul id="todos">{todos.data.map((todo) => <li key={todo}>{todo}</li>)}</ul>;
}

const { endpoint, jwt } = window.BROKER;
createRoot(document.getElementById("root")).render(
  <SSEProvider endpoint={endpoint} options={{ headers: { authorization: `Bearer ${jwt}` } }}>
    <Profile />
    <Todos />
  </SSEProvider>,
);
