// Drives the demo page in headless Chromium (Debian's package) through
// playwright-core and prints what the page saw as JSON: its state object
// and, per path, the numbers it shows. The Go end-to-end test runs it; it
// never downloads a browser.
//
//   node envoy/e2e/testdata/browser_check.mjs <page url> <timeout ms> [screenshot.png]
import { createRequire } from "node:module";

// playwright-core lives in .tools/node (installed by the Makefile), which
// ES module resolution does not search: load it by path.
const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const [url, timeoutArg, screenshot] = process.argv.slice(2);
const timeout = Number(timeoutArg || 15000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  await page.goto(url);
  await page.waitForFunction(
    () => ["done", "closed", "error"].includes(window.demoState.state),
    null,
    { timeout },
  );
  // The page draws on the next animation frame: let it.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  const state = await page.evaluate(() => {
    const paths = {};
    for (const [name, p] of Object.entries(window.demoState.paths)) {
      const shown = {};
      for (const el of p.el.querySelectorAll("[data-k]")) shown[el.dataset.k] = el.textContent;
      paths[name] = { ...p, el: undefined, rtts: p.rtts.length, pcm: p.pcm.length, arrival: p.arrival, shown };
    }
    return { ...window.demoState, paths };
  });
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(state));
} finally {
  await browser.close();
}
