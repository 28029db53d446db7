// Drives the explorer in headless Chromium (Debian's /usr/bin/chromium) against a running
// node: the page must show blocks, jobs with audit status, providers with stake, models with
// lineage, and verify a receipt (valid when opened from the job list, invalid when edited).
// Usage: node tests/explorer.mjs <node url> <screenshot dir> [invented receipt file]
import { chromium } from "playwright-core";
import { readFileSync, statSync } from "node:fs";

const [url, outDir, inventedPath] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
const checks = {};
try {
  await page.goto(url, { waitUntil: "domcontentloaded" });
  await page.waitForSelector("tr.block", { timeout: 20000 });
  await page.waitForSelector("tr.job", { timeout: 20000 });
  await page.waitForSelector("tr.provider", { timeout: 20000 });
  await page.waitForSelector("li.model", { timeout: 20000 });
  checks.chain = await page.textContent("#chain");
  checks.blocks = await page.locator("tr.block").count();
  checks.jobs = await page.locator("tr.job").count();
  checks.providerRow = await page.locator("tr.provider").first().innerText();
  checks.models = await page.locator("li.model").allInnerTexts();
  checks.jobRow = await page.locator("tr.job").first().innerText();
  await page.screenshot({ path: `${outDir}/explorer.png`, fullPage: true });

  // Open the newest job's receipt from the table: verified by the node.
  await page.locator("a[data-receipt]").first().click();
  await page.waitForSelector(".result.valid", { timeout: 20000 });
  checks.valid = await page.textContent("#verify-result");
  // The seed as the page parsed it (a string: exact even above 2^53).
  checks.seed = JSON.parse(await page.inputValue("#receipt-json")).sampling.seed;
  await page.screenshot({ path: `${outDir}/receipt-valid.png`, fullPage: false });

  // A receipt invented and signed by a random key: signed only, never valid.
  if (inventedPath) {
    await page.fill("#receipt-json", readFileSync(inventedPath, "utf8"));
    await page.click("#verify");
    await page.waitForSelector(".result.unverified", { timeout: 20000 });
    checks.invented = await page.textContent("#verify-result");
    checks.inventedShownValid = (await page.locator(".result.valid").count()) > 0;
  }

  // Edit the output in the pasted receipt: the same page says INVALID and why.
  const text = await page.inputValue("#receipt-json");
  const r = JSON.parse(text);
  r.output = r.output + " (edited)";
  await page.fill("#receipt-json", JSON.stringify(r));
  await page.click("#verify");
  await page.waitForSelector(".result.invalid", { timeout: 20000 });
  checks.invalid = await page.textContent("#verify-result");
  await page.fill("#receipt-json", "{ not json");
  await page.click("#verify");
  await page.waitForFunction(() => document.querySelector("#verify-result").textContent.includes("not JSON"));
  checks.notJson = await page.textContent("#verify-result");
  await page.screenshot({ path: `${outDir}/receipt-invalid.png`, fullPage: false });
  checks.screenshotBytes = statSync(`${outDir}/explorer.png`).size;
  checks.pageErrors = errors;
  console.log(JSON.stringify(checks));
} finally {
  await browser.close();
}
