// The console in a real browser (Chromium, driven by puppeteer-core), as a person uses it.
// Run by fsm-cli/tests/cli.rs, which starts the store, a worker and `fsm console --actions`,
// and checks the store afterwards. Environment: FSM_CONSOLE_URL, FSM_CONSOLE_TOKEN,
// FSM_CHROMIUM, FSM_SHOTS (where screenshots go), FSM_IDS (JSON: errored, waiting).
const puppeteer = require("puppeteer-core");
const path = require("path");

const url = process.env.FSM_CONSOLE_URL;
const ids = JSON.parse(process.env.FSM_IDS);
const shots = process.env.FSM_SHOTS;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function submit(page, selector) {
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click(selector)]);
}

async function text(page, selector) {
  return page.$eval(selector, (e) => e.textContent.trim());
}

(async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.FSM_CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 800 });
    page.setDefaultTimeout(15000);
    if (process.env.FSM_DEBUG) {
      page.on("request", (r) => console.log("request " + r.method() + " " + r.url()));
      page.on("response", (r) => console.log("response " + r.status() + " " + r.url()));
      page.on("requestfailed", (r) => console.log("failed " + r.url() + " " + r.failure().errorText));
      page.on("console", (m) => console.log("page: " + m.text()));
    }

    // The list, filtered to the errored ones.
    await page.goto(url + "/", { waitUntil: "load" });
    await page.waitForSelector("#live-status.on");
    await page.screenshot({ path: path.join(shots, "executions.png") });
    await page.select("select[name=status]", "errored");
    await submit(page, "form.filters button[type=submit]");
    const rows = await page.$$eval("#executions tbody tr", (trs) => trs.map((t) => t.dataset.id));
    check(rows.length === 1 && rows[0] === ids.errored, "the errored filter shows " + rows);

    // Its page: the path on the diagram.
    await submit(page, `a[href="/executions/${ids.errored}"]`);
    const failed = await page.$$eval("svg.fsm-diagram g.state.failed", (g) => g.map((e) => e.dataset.state));
    check(failed.length === 1 && failed[0] === "Ordered", "the failed state marked: " + failed);
    const visited = await page.$$eval("svg.fsm-diagram g.state.visited", (g) => g.map((e) => e.dataset.state));
    check(visited.includes("Ordered"), "visited: " + visited);
    check((await page.$$("svg.timeline rect.bar")).length >= 1, "a timeline bar");
    await page.screenshot({ path: path.join(shots, "execution.png") });

    // Log in, and redrive it; its status changes on the page without a reload.
    await page.goto(url + "/login", { waitUntil: "load" });
    await page.type("input[name=name]", "tester");
    await page.type("input[name=token]", process.env.FSM_CONSOLE_TOKEN);
    await submit(page, "form.login button[type=submit]");
    await page.goto(url + `/executions/${ids.errored}`, { waitUntil: "load" });
    await submit(page, "#redrive");
    check((await text(page, "p.confirm")).startsWith("Really redrive"), "a confirmation");
    await page.screenshot({ path: path.join(shots, "confirm.png") });
    await submit(page, "#confirm");
    await page.evaluate(() => { window.__stayed = true; });
    await page.waitForSelector("#live-status.on");
    await page.waitForFunction(() => document.querySelector("dd[data-state]").textContent === "Packed"
      && document.querySelector("[data-status]").textContent === "waiting");
    check(await page.evaluate(() => window.__stayed === true), "the page was not reloaded");

    // Complete its wait through the form, checked by the server.
    await page.goto(url + `/executions/${ids.errored}`, { waitUntil: "load" });
    await page.type("#next", JSON.stringify({ Delivered: { id: 13, by: "browser" } }));
    await submit(page, "#complete");
    await submit(page, "#confirm");
    await page.waitForFunction(() => document.querySelector("[data-status]").textContent === "succeeded");
    await page.screenshot({ path: path.join(shots, "execution-after.png") });

    // Cancel a waiting one.
    await page.goto(url + `/executions/${ids.waiting}`, { waitUntil: "load" });
    check((await text(page, "[data-token-status]")) === "open", "its open token shown");
    await page.screenshot({ path: path.join(shots, "waiting.png") });
    await submit(page, "#cancel");
    await submit(page, "#confirm");
    check((await text(page, "[data-status]")) === "cancelled", "cancelled");

    await page.goto(url + "/machines", { waitUntil: "load" });
    await page.screenshot({ path: path.join(shots, "machines.png") });
    console.log("browser: ok");
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error("browser: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
