// A Broker guest in JavaScript: implements the `validator` world of wit/broker.wit
// (package broker:guest@0.1.2), built into a component by componentize-js.
//
// How componentize-js maps the WIT to JS values:
// - imports are ES modules named by the interface id, version included:
//   `broker:guest/log@0.1.2` exports `log(level, message)`, where the enum `level` is a string
//   ('debug' | 'info' | 'warn' | 'error'); `broker:guest/state@0.1.2` exports
//   `latest(name)`, which returns a string or `undefined` (option<string>).
// - `validate` receives the record `event` as a plain object with camelCase fields:
//   { tenant, username, scopes: string[], name, data: string (JSON text), timestamp: bigint (u64) }.
// - it returns the variant `verdict` as { tag: 'accept' } | { tag: 'replace', val: string }
//   | { tag: 'reject', val: string }.
// An exception thrown out of `validate` traps the guest: the insert fails with a 500.
import { log } from 'broker:guest/log@0.1.2';

const accept = () => ({ tag: 'accept' });
const replace = (value) => ({ tag: 'replace', val: JSON.stringify(value) });
const reject = (message) => ({ tag: 'reject', val: message });

export function validate(event) {
  log('debug', `validating "${event.name}" from ${event.username} (${event.data.length} bytes of data)`);

  if (event.name === 'reject-me') {
    return reject(`rejected by JavaScript: ${event.data}`);
  }

  const data = JSON.parse(event.data); // the host always hands over valid JSON

  if (event.name === 'shout' && typeof data === 'string') {
    return replace(data.toUpperCase());
  }

  if (event.name.startsWith('order')) {
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      return reject(`"${event.name}" needs an object as data`);
    }
    if (!('amount' in data)) {
      return reject(`"${event.name}" needs a numeric "amount" > 0: "amount" is missing`);
    }
    if (typeof data.amount !== 'number' || !(data.amount > 0)) {
      return reject(`"${event.name}" needs a numeric "amount" > 0: got ${JSON.stringify(data.amount)}`);
    }
  }

  return accept();
}
