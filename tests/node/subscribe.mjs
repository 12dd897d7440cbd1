// Usage: node --import ./loader.mjs subscribe.mjs <sse-url> <jwt> <count> <event-name>...
// Subscribes with broker-client, prints each received message as one JSON line
// {"event","id","data"} for the listed event names, and exits after <count> messages.
import BrokerClient from 'broker-client';

const [url, jwt, count, ...names] = process.argv.slice(2);
const wanted = Number(count);
let seen = 0;

const client = new BrokerClient(url, { headers: { authorization: `Bearer ${jwt}` } });
client.onopen = () => {
  if (seen === 0) console.log(JSON.stringify({ open: true }));
};
for (const name of names) {
  client.addEventListener(name, (message) => {
    console.log(JSON.stringify({ event: message.type, id: message.lastEventId, data: JSON.parse(message.data) }));
    seen += 1;
    if (seen >= wanted) process.exit(0);
  });
}
setTimeout(() => {
  console.error(`timed out after ${seen} of ${wanted} messages`);
  process.exit(2);
}, 30000);
