// Drives @broker/client against a running Broker, for tests/e2e/js_client.rs, in Node or in Debian's
// Chromium (playwright-core; the client and a React app using its hooks bundled with esbuild):
//
//   node drive.mjs node|browser <broker url> <jwt>
//   node drive.mjs features <broker url> - <username> <password>
//
// Subscribes to every event, prints {"ready": true} once the stream is open, then collects events
// (the test meanwhile inserts ticks, kills Broker with kill -9 and starts it again on the same
// port) until an event named "end"; then prints {"ids": [...], "statuses": [...], ...} and exits.
// In the browser it also reports what the React hooks rendered: useLatest("profile") and
// useEvents("tick").
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { Broker } from "../src/index.js";

const [mode, base, jwt] = process.argv.slice(2);
const WAIT = 120_000;
const print = (value) => console.log(JSON.stringify(value));

async function inNode() {
  const broker = new Broker({ url: base, jwt });
  const ids = [];
  const statuses = [];
  await new Promise((resolve, reject) => {
    const subscription = broker.subscribe({
      backoff: { initial: 100, max: 1000 },
      onStatus: (status) => {
        statuses.push(status);
        if (status === "open" && statuses.filter((s) => s === "open").length === 1) print({ ready: true });
      },
      onEvent: (event) => {
        ids.push(event.id);
        if (event.event === "end") {
          subscription.close();
          resolve();
        }
      },
    });
    // unref: once "end" came, this timer must not keep Node running.
    setTimeout(() => reject(new Error(`no end within ${WAIT} ms; ids ${ids}`)), WAIT).unref();
  });
  print({ ids, statuses });
}

/** Basic auth, history pages, presence, a filtered stream and the horizon, each as a value. */
async function features(username, password) {
  const broker = new Broker({ url: base, username, password });
  const inserted = await broker.insert("other", { via: "basic" }, { idempotencyKey: "features-1" });
  const again = await broker.insert("other", { via: "basic" }, { idempotencyKey: "features-1" });
  const pages = [];
  let page = await broker.history({ events: "note,other", limit: 1 });
  pages.push(page.events.map((event) => [event.id, event.event]));
  while (page.next !== null) {
    page = await broker.history({ events: "note,other", limit: 1, before: page.next });
    pages.push(page.events.map((event) => [event.id, event.event]));
  }
  let badFilter;
  try {
    await broker.history({ events: "a,,b" });
  } catch (error) {
    badFilter = { status: error.status, message: error.message };
  }
  // Resuming from id 1, below what retention removed: the horizon, then the newest note.
  let subscription;
  const stream = await new Promise((resolve) => {
    const seen = { events: [], horizon: null, users: null };
    subscription = broker.subscribe({
      events: "note",
      presence: true,
      lastEventId: 1,
      onHorizon: (horizon) => (seen.horizon = horizon),
      onPresence: (users) => {
        seen.users = users;
        resolve(seen);
      },
      onEvent: (event) => seen.events.push([event.id, event.event]),
    });
  });
  // While the stream is open, its user is present.
  const present = await broker.presence();
  subscription.close();
  // A JWT from Broker.login works the same.
  const loggedIn = await Broker.login(base, username, password);
  const viaJwt = await loggedIn.history({ events: "other", limit: 1 });
  print({ inserted: inserted.seq, repeated: again.seq, pages, badFilter, stream, present, viaJwt: viaJwt.events.map((e) => e.id) });
}

async function inBrowser() {
  const { build } = await import("esbuild");
  const { chromium } = await import("playwright-core");
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL("app.jsx", import.meta.url))],
    bundle: true,
    write: false,
    format: "iife",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "error",
  });
  const script = bundle.outputFiles[0].text.replace(/<\/script/g, "<\\/script");
  const html = `<!doctype html><div id="root"></div><script>window.BROKER = ${JSON.stringify({ base, jwt })};</script><script>${script}</script>`;
  // Served from loopback at another origin than Broker's: CORS is exercised too.
  const app = createServer((_, response) => {
    response.writeHead(200, { "content-type": "text/html" });
    response.end(html);
  });
  await new Promise((listening) => app.listen(0, "127.0.0.1", listening));
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    await page.goto(`http://localhost:${app.address().port}/`);
    await page.waitForFunction(() => window.statuses?.includes("open"), null, { timeout: 20_000 });
    print({ ready: true });
    await page.waitForFunction(() => window.ended, null, { timeout: WAIT });
    // The hooks render after the core delivered "end": wait for the last tick to show.
    const ticks = await page.evaluate(() => window.ids.length);
    await page.waitForFunction(() => document.querySelectorAll("#ticks li").length >= window.tickCount, null, { timeout: 20_000 });
    const result = await page.evaluate(() => ({
      ids: window.ids,
      statuses: window.statuses,
      profile: document.querySelector("#profile").textContent,
      ticksShown: [...document.querySelectorAll("#ticks li")].map((li) => Number(li.dataset.id)),
    }));
    if (errors.length) throw new Error(`errors in the page: ${errors.join("; ")}`);
    print({ ...result, delivered: ticks });
  } finally {
    await browser.close();
    app.close();
  }
}

try {
  if (mode === "features") await features(process.argv[5], process.argv[6]);
  else await (mode === "browser" ? inBrowser() : inNode());
} catch (error) {
  console.error(`client test failed: ${error.stack || error}`);
  process.exitCode = 1;
}
