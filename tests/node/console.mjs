// Drives Broker's admin console in Debian's Chromium with playwright-core, as an operator would:
// sign in, create a user, watch an event inserted through the API arrive live, revoke the user,
// see a guest dropped into the guests directory listed, set a tenant's limits, and register a
// webhook, see it paused by a failing receiver and resume it. Used by tests/e2e/console.rs.
//
//   node console.mjs <broker url> <admin token> <guest .wasm> <guests dir> <screenshot .png> \
//     <webhook receiver url> <webhook secret>
//
// Prints one line per step; exits non-zero (with the reason) on the first step that fails.

import { copyFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { launchChromium } from "./chromium.mjs";

const [base, adminToken, guestFile, guestsDir, screenshot, receiver, webhookSecret] = process.argv.slice(2);
const PASSWORD = "correct horse battery staple";
const STEP_TIMEOUT = 15_000;

const step = (name) => console.log(`step: ${name}`);

const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  page.setDefaultTimeout(STEP_TIMEOUT);
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));

  await page.goto(`${base}/console`);
  step("wrong token refused");
  await page.fill("#token", "not the token");
  await page.click("#sign-in button[type=submit]");
  await page.waitForSelector("#sign-in-error:has-text('admin_token is incorrect')");

  step("sign in");
  await page.fill("#token", adminToken);
  await page.click("#sign-in button[type=submit]");
  await page.waitForSelector("#app:not([hidden])");
  if (page.url().includes(adminToken)) throw new Error("the admin token is in the URL");

  step("create a user");
  await page.fill("#create-user [name=username]", "console-user");
  await page.fill("#create-user [name=password]", PASSWORD);
  await page.fill("#create-user [name=tenant_name]", "acme");
  await page.fill("#create-user [name=scopes]", "news:get, *:post");
  await page.click("#create-user button[type=submit]");
  const userRow = page.locator("#users tr[data-username='console-user']");
  await userRow.waitFor();
  await userRow.locator("text=news:get, *:post").waitFor();

  step("watch tenant acme live");
  await page.fill("#watch [name=tenant]", "acme");
  await page.click("#watch button[type=submit]");
  await page.waitForSelector("#watching:has-text('watching acme')");

  step("an event inserted through the API appears live");
  const login = await fetch(`${base}/login`, {
    method: "POST",
    body: JSON.stringify({ username: "console-user", password: PASSWORD }),
  });
  const { jwt } = await login.json();
  // Give the console's stream a moment to be joined before the insert.
  await page.waitForTimeout(300);
  const insert = await fetch(`${base}/insert`, {
    method: "POST",
    headers: { authorization: `Bearer ${jwt}` },
    body: JSON.stringify({ event: "news", data: { title: "<b>hello</b> from the API" } }),
  });
  const { seq } = await insert.json();
  const eventRow = page.locator(`#events tr[data-id='${seq}']`);
  await eventRow.waitFor();
  const shown = await eventRow.locator("code").textContent();
  if (!shown.includes("<b>hello</b> from the API")) throw new Error(`event shown as ${shown}`);

  step("insert from the console");
  await page.fill("#insert [name=tenant_name]", "acme");
  await page.fill("#insert [name=event]", "note");
  await page.fill("#insert [name=data]", '{"from": "console"}');
  await page.click("#insert button[type=submit]");
  await page.locator("#events td:text-is('note')").waitFor();

  step("watch with a filter: only matching events appear");
  await page.fill("#watch [name=events]", "note");
  await page.click("#watch button[type=submit]");
  await page.waitForSelector("#watching:has-text('watching acme: note')");
  // The replay is the newest note only; the news event is not shown.
  await page.locator("#events td:text-is('note')").waitFor();
  await page.waitForTimeout(300);
  const filtered = await fetch(`${base}/insert`, {
    method: "POST",
    headers: { authorization: `Bearer ${jwt}` },
    body: JSON.stringify({ event: "news", data: { title: "filtered out" } }),
  });
  const after = await fetch(`${base}/insert`, {
    method: "POST",
    headers: { authorization: `Bearer ${jwt}` },
    body: JSON.stringify({ event: "note", data: { title: "passes the filter" } }),
  });
  const { seq: noteSeq } = await after.json();
  await page.locator(`#events tr[data-id='${noteSeq}']`).waitFor();
  const filteredSeq = (await filtered.json()).seq;
  if (await page.locator(`#events tr[data-id='${filteredSeq}']`).count()) throw new Error("a filtered-out event was shown");
  if (await page.locator("#events td:text-is('news')").count()) throw new Error("news shown through a note filter");

  step("load older: pages of history below the oldest row, through the same filter");
  // Twelve more notes and a news event, committed before a new watch, so they are history.
  const older = [];
  for (let n = 0; n < 12; n++) {
    const response = await fetch(`${base}/insert`, {
      method: "POST",
      headers: { authorization: `Bearer ${jwt}` },
      body: JSON.stringify({ event: n === 6 ? "news" : "note", data: { n } }),
    });
    const { seq } = await response.json();
    if (n !== 6) older.push(seq);
  }
  await page.click("#watch button[type=submit]");
  // The replay is the newest note only; every older one comes from "load older".
  await page.locator(`#events tr[data-id='${older.at(-1)}']`).waitFor();
  await page.waitForSelector("#load-older:not([hidden])");
  await page.click("#load-older");
  await page.locator(`#events tr[data-id='${noteSeq}']`).waitFor();
  for (const seq of older) await page.locator(`#events tr[data-id='${seq}']`).waitFor();
  if (await page.locator("#events td:text-is('news')").count()) throw new Error("news loaded through a note filter");
  const ids = await page.locator("#events tbody tr").evaluateAll((rows) => rows.map((row) => Number(row.dataset.id)));
  if (ids.some((id, i) => i > 0 && id >= ids[i - 1])) throw new Error(`rows not newest first: ${ids}`);
  // Fewer than a page of notes: "load older" reached the start, and goes.
  await page.waitForSelector("#load-older", { state: "hidden" });

  step("a dropped guest is listed");
  copyFileSync(guestFile, join(guestsDir, "acme.wasm.partial"));
  renameSync(join(guestsDir, "acme.wasm.partial"), join(guestsDir, "acme.wasm"));
  await page.locator("#guests tr[data-file='acme.wasm']").waitFor({ timeout: 20_000 });
  await page.locator("#guests tr[data-file='acme.wasm'] >> text=tenant acme").waitFor();

  step("a tenant's limits are shown and an override set");
  await page.locator("#limits tr[data-limit='user_insert_rate'] >> text=200").first().waitFor();
  await page.fill("#limits-tenant input[name=tenant]", "acme");
  await page.click("#limits-tenant button[type=submit]");
  await page.fill("#limits tr[data-limit='tenant_streams'] input", "7");
  await page.click("#limits-save");
  await page.locator("#limits tr[data-limit='tenant_streams'] td:nth-child(4):text-is('7')").waitFor();
  const limits = await (await fetch(`${base}/admin/tenant_limits?tenant=acme`, { headers: { "x-admin-token": adminToken } })).json();
  if (limits.tenant.in_force.tenant_streams !== 7) throw new Error(`override not stored: ${JSON.stringify(limits)}`);

  step("register a webhook; a failing receiver pauses it; resume it once the receiver answers");
  // The receiver answers 500 until told otherwise (tests/e2e/console.rs), and the server pauses a
  // webhook after 2 failed attempts.
  await page.fill("#register-webhook [name=tenant]", "acme");
  await page.fill("#register-webhook [name=url]", `${receiver}/hook`);
  await page.fill("#register-webhook [name=events]", "news");
  await page.fill("#register-webhook [name=secret]", webhookSecret);
  await page.click("#register-webhook button[type=submit]");
  const hookRow = page.locator("#webhooks tbody tr");
  await hookRow.locator("td:text-is('news')").waitFor();
  if ((await page.content()).includes(webhookSecret)) throw new Error("the webhook secret is shown");
  const hooked = await fetch(`${base}/insert`, {
    method: "POST",
    headers: { authorization: `Bearer ${jwt}` },
    body: JSON.stringify({ event: "news", data: { title: "for the webhook" } }),
  });
  const { seq: hookedSeq } = await hooked.json();
  await page.locator("#webhooks tr[data-state='paused']").waitFor();
  await hookRow.locator(".last-error:has-text('500')").waitFor();
  await fetch(`${receiver}/status/200`, { method: "POST" });
  await hookRow.locator("button:text-is('Resume')").click();
  await page.locator(`#webhooks tr[data-state='active'] td.cursor:text-is('${hookedSeq}')`).waitFor();
  await hookRow.locator("td.delivered:text-is('1')").waitFor();

  step("revoke the user and see it marked");
  await userRow.locator("button:text-is('Revoke')").click();
  await userRow.locator(".badge.revoked").waitFor();
  await page.locator("#users tr.revoked[data-username='console-user']").waitFor();

  await page.screenshot({ path: screenshot, fullPage: true });
  step("screenshot");

  step("delete the webhook");
  page.once("dialog", (dialog) => dialog.accept());
  await hookRow.locator("button:text-is('Delete')").click();
  await hookRow.waitFor({ state: "detached" });
  const { webhooks } = await (await fetch(`${base}/admin/webhooks`, { headers: { "x-admin-token": adminToken } })).json();
  if (webhooks.length) throw new Error(`the webhook is still registered: ${JSON.stringify(webhooks)}`);
  if (pageErrors.length) throw new Error(`errors in the page: ${pageErrors.join("; ")}`);
  const stored = await page.evaluate(() => Object.keys(sessionStorage));
  if (!stored.includes("broker-admin-token")) throw new Error("the token is not in sessionStorage");
  console.log("ok");
} catch (error) {
  console.error(`console test failed: ${error.stack || error}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
