// Runs big.html in Debian's Chromium for each device given, one fresh browser each, and prints a
// JSON row per load. Usage: node big.mjs BASE_URL DEVICES(cpu,webgpu) MODEL_URL[,MODEL_URL...]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, devices, models] = process.argv.slice(2);
const rows = [];
for (const device of devices.split(",")) {
  // A profile on disk, as a user's: Playwright's default context is a private one, whose Cache
  // Storage and Blobs live in memory and gave out (NotReadableError) past one 1.7 GB model.
  const profile = mkdtempSync(join(tmpdir(), "hearth-big-"));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--enable-unsafe-webgpu", "--no-sandbox", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => console.error(`${device} pageerror: ${e.message}`));
    await page.goto(`${base}/tests/bench/big.html?device=${device}&models=${encodeURIComponent(models)}`);
    try {
      await page.waitForFunction(() => document.getElementById("result")?.textContent !== "running", null, { timeout: 3_000_000 });
      rows.push(...JSON.parse(await page.textContent("#result")));
    } catch (e) {
      const partial = await page.evaluate(() => document.getElementById("result").dataset.partial ?? "[]");
      rows.push(...JSON.parse(partial), { device, error: `timed out: ${e.message}` });
    }
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
console.log(JSON.stringify(rows, null, 2));
