// Drives headless Chromium through the dashboard for tests/tests/browser.rs:
//   node dashboard.cjs <dashboard url> <queue> <task id> <screenshot dir>
// with TIGER_NODE_MODULES (where playwright-core is) and TIGER_CHROMIUM set.
//
// It opens the overview and checks the queue's counts, follows the error count to the queue
// and the task, presses retry and checks the task is queued, then prints "retried" and
// waits for "go" on stdin (the test starts a worker meanwhile). It then watches the
// overview, without reloading, until the queue is empty (checking the link of a queue named
// "a/b?c#d" that the test adds meanwhile), finds the task gone and the worker listed, and exits 0. Any failure exits 1 with the reason on stderr.
"use strict";
const path = require("node:path");
const readline = require("node:readline");
const { chromium } = require(path.join(process.env.TIGER_NODE_MODULES, "playwright-core"));

const [base, queue, id, shots] = process.argv.slice(2);
const say = (line) => process.stderr.write(`browser: ${line}\n`);

// The counts the overview's table shows for `queue` (by state), or null without a row.
async function counts(page) {
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

async function nextLine() {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    lines.close();
    return line.trim();
  }
  return "";
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

    await page.goto(`${base}/`);
    const before = await counts(page);
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
    const queued = await counts(page);
    expect("the overview to count it queued", queued && queued.queued === 1 && queued.error === 0);
    process.stdout.write("retried\n");
    const go = await nextLine();
    if (go !== "go") throw new Error(`the test said ${JSON.stringify(go)}, not go`);

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
    expect(errors.length ? `no script errors, not: ${errors.join("; ")}` : "no script errors on the pages", errors.length === 0);
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    say(`FAILED: ${err.message}`);
    process.exit(1);
  },
);
