// Drives the demo page in headless Chromium (Debian's package) through
// playwright-core and prints what the page saw as JSON. The Go end-to-end
// test runs it; it never downloads a browser.
//
//   node envoy/e2e/testdata/browser_check.mjs <page url> <timeout ms>
import { createRequire } from "node:module";

// playwright-core lives in .tools/node (installed by the Makefile), which
// ES module resolution does not search: load it by path.
const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const [url, timeoutArg] = process.argv.slice(2);
const timeout = Number(timeoutArg || 15000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(
    () => ["done", "closed", "error"].includes(window.demoState.state),
    null,
    { timeout },
  );
  const state = await page.evaluate(() => ({ ...window.demoState, rtts: window.demoState.rtts.length }));
  console.log(JSON.stringify(state));
} finally {
  await browser.close();
}
