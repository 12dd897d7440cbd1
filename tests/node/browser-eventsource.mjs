// A browser's own EventSource on /sse with an `events` filter, in Debian's Chromium driven by
// playwright-core: the page is on Broker's origin, the browser is given the user's Basic
// credentials (as a user typing them into the browser's prompt would), and the EventSource, which
// cannot send a header, is asked for them by /sse's 401. Used by tests/e2e/filters.rs.
//
//   node browser-eventsource.mjs <broker url> <username> <password> <filter> <names> <count>
//
// <names>: the event names to listen for, comma-separated (an EventSource hands a named event only
// to listeners of its name). Prints {"open": true} once the stream is open, then one JSON line per
// event {"event","id","data"}, and exits after <count> of them; non-zero on an error or after 20 s.

import { launchChromium } from "./chromium.mjs";

const [base, username, password, filter, names, count] = process.argv.slice(2);

let timer;
const browser = await launchChromium();
try {
  const context = await browser.newContext({ httpCredentials: { username, password, origin: base } });
  const page = await context.newPage();
  // The page tells the test what it sees through its console.
  const done = new Promise((resolve) => {
    let seen = 0;
    page.on("console", (message) => {
      // Only the page's own JSON lines: the browser logs other things (a missing favicon).
      if (!message.text().startsWith("{")) return;
      console.log(message.text());
      if (message.text().startsWith('{"event"')) {
        seen += 1;
        if (seen >= Number(count)) resolve();
      }
    });
  });
  page.on("pageerror", (error) => {
    console.error(`page error: ${error}`);
    process.exit(1);
  });
  await page.goto(`${base}/`);
  await page.evaluate(
    ({ filter, names }) => {
      const source = new EventSource(`/sse?events=${encodeURIComponent(filter)}`);
      source.onopen = () => console.log(JSON.stringify({ open: true }));
      source.onerror = () => console.log(JSON.stringify({ error: `readyState ${source.readyState}` }));
      for (const name of names.split(",")) {
        source.addEventListener(name, (message) => {
          console.log(JSON.stringify({ event: message.type, id: message.lastEventId, data: JSON.parse(message.data) }));
        });
      }
    },
    { filter, names },
  );
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("timed out")), 20_000);
  });
  await Promise.race([done, timeout]);
} catch (error) {
  console.error(String(error));
  process.exitCode = 2;
} finally {
  clearTimeout(timer);
  await browser.close();
}
