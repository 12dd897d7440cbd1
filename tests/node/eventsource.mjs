// Usage: node eventsource.mjs <sse-url> <jwt> <count>
// Subscribes with the npm `eventsource` package (a WhatWG EventSource; its fetch carries the
// Authorization header a browser's would not), prints each message of any name as one JSON line
// {"event","id","data"}, and exits after <count> messages.
import { EventSource } from 'eventsource';

const [url, jwt, count] = process.argv.slice(2);
const wanted = Number(count);
let seen = 0;

const source = new EventSource(url, {
  fetch: (input, init) =>
    fetch(input, { ...init, headers: { ...init.headers, authorization: `Bearer ${jwt}` } }),
});
// Named events reach listeners of their name only: the names come from the frames themselves.
const names = ['profile', 'todo', 'room.42.msg', 'room.43.msg'];
for (const name of names) {
  source.addEventListener(name, (message) => {
    console.log(JSON.stringify({ event: message.type, id: message.lastEventId, data: JSON.parse(message.data) }));
    seen += 1;
    if (seen >= wanted) process.exit(0);
  });
}
source.onerror = (error) => {
  console.error(`eventsource error: ${error.message ?? error}`);
};
setTimeout(() => {
  console.error(`timed out after ${seen} of ${wanted} messages`);
  process.exit(2);
}, 30000);
