// Drives the demo page in headless Chromium (Debian's package) through
// playwright-core and prints what the page saw as JSON. The Go end-to-end
// test runs it; it never downloads a browser.
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
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await page.goto(url);
  await page.waitForFunction(
    () => ["done", "closed", "error"].includes(window.demoState.state),
    null,
    { timeout },
  );
  // A path is summed up, not dumped: its frames' audio stays in the page.
  const state = await page.evaluate(() => {
    const path = (p) => ({
      state: p.state, sent: p.sent, received: p.received, reordered: p.reordered, late: p.late,
      lost: p.lost, handshakeMs: p.handshakeMs, p50: p.p50, p99: p.p99, rtts: p.rtts.length,
      shown: [...document.querySelectorAll(`#${p.name === "rest" ? "rest-path" : "direct"} [data-k]`)]
        .map((el) => `${el.dataset.k}=${el.textContent}`),
    });
    const s = window.demoState;
    return { ...s, rtts: s.rtts.length, direct: path(s.direct), rest: path(s.rest) };
  });
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(state));
} finally {
  await browser.close();
}
