// The direct-messages guest again, in JavaScript: implements the `reader` world of wit/broker.wit
// (package broker:guest@0.1.2), built into a component by componentize-js, as guests/direct-messages
// does in Rust. An event named `dm.<a>.<b>` is a message between users `a` and `b`: only they may
// send it (`validate`) and only they receive it, on streams and in history pages (`canRead`, the
// WIT's `can-read`). Every other name is open to the tenant.
//
// `canRead(viewer, name)` gets the record `viewer` as { username, tenant, scopes: string[] } and
// returns a boolean. An exception thrown out of it denies (the host fails closed).

/** The two parties of a direct-message name, or null. */
function parties(name) {
  if (!name.startsWith('dm.')) return null;
  const [a, b, ...rest] = name.slice(3).split('.');
  return a && b && rest.length === 0 ? [a, b] : null;
}

export function validate(event) {
  if (!event.name.startsWith('dm.')) return { tag: 'accept' };
  const pair = parties(event.name);
  if (!pair) return { tag: 'reject', val: 'a direct message is named dm.<one party>.<the other>' };
  if (!pair.includes(event.username)) return { tag: 'reject', val: 'only its two parties may send a direct message' };
  return { tag: 'accept' };
}

export function canRead(viewer, name) {
  const pair = parties(name);
  return pair ? pair.includes(viewer.username) : !name.startsWith('dm.');
}
