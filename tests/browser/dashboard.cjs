// Drives headless Chromium through the dashboard for tests/tests/browser.rs:
//   node dashboard.cjs retry <dashboard url> <screenshot dir> <queue> <task id>
//   node dashboard.cjs outage <dashboard url> <screenshot dir> <queue names in order>
// with TIGER_NODE_MODULES (where playwright-core is) and TIGER_CHROMIUM set.
//
// retry: it opens the overview and checks the queue's counts, follows the error count to the queue
// and the task, presses retry and checks the task is queued, then prints "retried" and
// waits for "go" on stdin (the test starts a worker meanwhile). It then watches the
// overview, without reloading, until the queue is empty (checking the link of a queue named
// "a/b?c#d" that the test adds meanwhile), finds the task gone and the worker listed, and
// exits 0.
//
// outage: it checks the overview's rows are in the given order before and after a refresh,
// prints "opened" and waits for "frozen" (the test stops Redis); it waits for the counts to
// be marked stale and the worker count unknown, with the last chart kept, prints "stale" and
// waits for "thawed" (Redis answers again, the queues emptied); it waits for the stale word
// to go and "No tasks in any queue." to show, and exits 0.
//
// Any failure exits 1 with the reason on stderr.
"use strict";
const path = require("node:path");
const readline = require("node:readline");
const { chromium } = require(path.join(process.env.TIGER_NODE_MODULES, "playwright-core"));

const [scenario, base, shots, ...rest] = process.argv.slice(2);
const say = (line) => process.stderr.write(`browser: ${line}\n`);

// The counts the overview's table shows for `queue` (by state), or null without a row.
async function counts(page, queue) {
  return page.evaluate((queue) => {
    const table = document.getElementById("stats");
    const states = [...table.rows[0].cells].slice(1).map((c) => c.textContent);
    for (const row of [...table.rows].slice(1)) {
      if (row.cells[0].textContent === queue) {
        const counts = {};
        states.forEach((s, i) => (counts[s] = Number(row.cells[i + 1].textContent)));
        return counts;
      }
    }
    return null;
  }, queue);
}

function expect(what, ok) {
  if (!ok) throw new Error(`expected ${what}`);
  say(`ok: ${what}`);
}

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function nextLine() {
  const { value, done } = await lines.next();
  return done ? "" : value.trim();
}

// Waits for the test to say `word` on stdin.
async function heard(word) {
  const line = await nextLine();
  if (line !== word) throw new Error(`the test said ${JSON.stringify(line)}, not ${word}`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.TIGER_CHROMIUM,
    headless: true,
    args: ["--no-sandbox"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 430 } });
    page.setDefaultTimeout(15000);
    const errors = [];
    page.on("pageerror", (err) => errors.push(String(err)));
    await (scenario === "outage" ? outage : retry)(page, rest);
    expect(errors.length ? `no script errors, not: ${errors.join("; ")}` : "no script errors on the pages", errors.length === 0);
  } finally {
    await browser.close();
  }
}

async function retry(page, [queue, id]) {
    await page.goto(`${base}/`);
    const before = await counts(page, queue);
    expect(`the overview to show ${queue} with 1 task in error`, before && before.error === 1);
    await page.waitForFunction(() => document.getElementById("chart").complete);
    const chartWidth = await page.evaluate(() => document.getElementById("chart").naturalWidth);
    expect("the chart to load as a picture", chartWidth > 0);
    await page.screenshot({ path: path.join(shots, "overview.png") });

    await page
      .locator("#stats tr", { has: page.locator("td", { hasText: new RegExp(`^${queue}$`) }) })
      .locator("a")
      .nth(3)
      .click();
    expect("the error count to lead to the queue's errored tasks", page.url().endsWith(`/queue/${queue}/error`));
    await page.locator(`a[href$="/task/${id}"]`).click();
    expect("the task page to open", page.url().endsWith(`/task/${id}`));
    const heading = await page.locator("h2").first().textContent();
    expect(`the task page to say it is in error (${heading})`, heading === `${queue} · error`);
    const traceback = await page.locator("pre").nth(1).textContent();
    expect("the task page to show the failure's traceback", traceback.includes("card declined"));
    await page.screenshot({ path: path.join(shots, "task.png"), fullPage: true });

    await page.getByRole("button", { name: "retry" }).click();
    await page.waitForURL((url) => url.pathname.endsWith(`/task/${id}`) && url.search === "?done=retried");
    const requeued = await page.locator("h2").first().textContent();
    expect(`retry to put the task back in its queue (${requeued})`, requeued === `${queue} · queued`);
    const notice = await page.locator("#notice").textContent();
    expect(`the page to say the task was retried (${notice})`, notice.startsWith("Retried"));

    await page.goto(`${base}/`);
    const queued = await counts(page, queue);
    expect("the overview to count it queued", queued && queued.queued === 1 && queued.error === 0);
    process.stdout.write("retried\n");
    await heard("go");

    // The overview refreshes itself: no reload here.
    await page.waitForFunction(
      (queue) => {
        const rows = [...document.getElementById("stats").rows].slice(1);
        return !rows.some((row) => row.cells[0].textContent === queue);
      },
      queue,
      { timeout: 20000 },
    );
    say("ok: the overview, refreshing by itself, shows the queue emptied");
    // The test added a queue named "a/b?c#d" meanwhile: the refreshed row's link keeps the
    // name whole.
    const odd = await page.evaluate(() => {
      const row = [...document.getElementById("stats").rows].find((r) => r.cells[0].textContent === "a/b?c#d");
      return row ? row.cells[3].querySelector("a").href : null;
    });
    expect(`the refreshed link of queue "a/b?c#d" to lead to it (${odd})`, odd !== null && odd.endsWith("/queue/a%2Fb%3Fc%23d/scheduled"));
    const response = await page.goto(`${base}/task/${id}`);
    expect("the task to be gone once the worker ran it", response.status() === 404);
    await page.goto(`${base}/workers`);
    const served = await page.locator("#workers td", { hasText: queue }).count();
    expect("the workers page to list the worker serving the queue", served > 0);
    await page.screenshot({ path: path.join(shots, "workers.png") });
}

async function outage(page, [order]) {
  const names = () =>
    page.evaluate(() => [...document.getElementById("stats").rows].slice(1).map((r) => r.cells[0].textContent).join(" "));
  await page.goto(`${base}/`);
  const served = await names();
  expect(`the server to list the queues in order (${served})`, served === order);
  // Mark the rows, then wait for a refresh to have replaced them.
  await page.evaluate(() => (document.getElementById("stats").rows[1].dataset.old = "1"));
  await page.waitForFunction(() => {
    const row = document.getElementById("stats").rows[1];
    return row && !row.dataset.old;
  });
  const refreshed = await names();
  expect(`a refresh to keep the server's order (${refreshed})`, refreshed === order);
  await page.waitForFunction(() => document.getElementById("chart").complete && document.getElementById("chart").naturalWidth > 0);
  process.stdout.write("opened\n");

  await heard("frozen");
  await page.waitForFunction(() => !document.getElementById("stale").hidden, null, { timeout: 30000 });
  const stale = await page.locator("#stale").textContent();
  expect(`the counts to be marked stale (${stale})`, stale.startsWith("Cannot read the counts now"));
  const unknown = await page.locator("#workers").textContent();
  expect(`the worker count to be unknown (${unknown})`, unknown.startsWith("? "));
  const chartKept = await page.evaluate(() => document.getElementById("chart").naturalWidth > 0);
  expect("the last chart to stay while Redis hangs", chartKept);
  process.stdout.write("stale\n");

  await heard("thawed");
  await page.waitForFunction(
    () =>
      document.getElementById("stale").hidden &&
      !document.getElementById("empty").hidden &&
      document.getElementById("stats").rows.length === 1,
    null,
    { timeout: 30000 },
  );
  say("ok: once Redis answers, the stale word goes and the emptied queues say so");
  const counted = await page.locator("#workers").textContent();
  expect(`the worker count to be known again (${counted})`, !counted.startsWith("? "));
}

main().then(
  () => process.exit(0),
  (err) => {
    say(`FAILED: ${err.message}`);
    process.exit(1);
  },
);
