// Usage: node react-hook.mjs <broker base URL> <jwt>
// The npm broker-hook in a real React app in Debian's Chromium (driven by playwright-core): the app
// is bundled with esbuild and served from another origin (so CORS is exercised too); it must show
// the replayed profile, then each profile and todo inserted while it runs. Prints "ok" at the end.
import { createServer } from "node:http";
import { build } from "esbuild";
import { chromium } from "playwright-core";

const [base, jwt] = process.argv.slice(2);

const bundle = await build({
  entryPoints: ["react-app.jsx"],
  bundle: true,
  write: false,
  format: "iife",
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "error",
});
const script = bundle.outputFiles[0].text;

async function insert(event, data) {
  const response = await fetch(`${base}/insert`, {
    method: "POST",
    headers: { authorization: `Bearer ${jwt}` },
    body: JSON.stringify({ event, data }),
  });
  if (!response.ok) throw new Error(`insert ${event}: ${response.status}`);
}

// The page, served for real from loopback (Chromium lets only a loopback page call a loopback
// server) at another origin than Broker's: localhost and a port of its own.
const pageHtml = `<!doctype html><div id="root"></div><script>window.BROKER = ${JSON.stringify({ endpoint: `${base}/sse`, jwt })};</script><script>${script.replace(/<\/script/g, "<\\/script")}</script>`;
const app = createServer((_, response) => {
  response.writeHead(200, { "content-type": "text/html" });
  response.end(pageHtml);
});
await new Promise((listening) => app.listen(0, "127.0.0.1", listening));
const APP = `http://localhost:${app.address().port}/`;

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => console.error(`page: ${message.text()}`));
  await page.goto(APP);
  // The replay: the newest profile, inserted before the page opened.
  await page.waitForSelector("#profile:text-is('Ada')", { timeout: 20_000 });
  await insert("profile", { name: "Grace" });
  await page.waitForSelector("#profile:text-is('Grace')", { timeout: 20_000 });
  await insert("todo", ["write tests", "ship"]);
  await page.waitForSelector("#todos li:text-is('ship')", { timeout: 20_000 });
  const todos = await page.locator("#todos li").allTextContents();
  if (todos.join("|") !== "write tests|ship") throw new Error(`todos shown: ${todos}`);
  if (errors.length) throw new Error(`errors in the page: ${errors.join("; ")}`);
  console.log("ok");
} catch (error) {
  console.error(`react hook test failed: ${error.stack || error}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  app.close();
}
