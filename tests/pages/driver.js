// driver.js — drives Debian's Chromium (/usr/bin/chromium, headless; playwright-core, never a
// downloaded browser) for the black-box page tests, one JSON command per stdin line, one JSON
// answer per stdout line ({"ok": true, ...} or {"ok": false, "error": "..."}):
//   {"op": "open", "url": U, "user": u, "password": p}   new page (HTTP Basic when given)
//   {"op": "wait", "js": EXPR, "timeout": ms}           until EXPR (in the page) is truthy
//   {"op": "eval", "js": EXPR}                          {"value": EXPR's JSON value}
//   {"op": "click", "selector": S}
//   {"op": "screenshot", "path": P}
//   {"op": "errors"}                                    console errors, page errors, failed requests
//   {"op": "close"}
'use strict';
const readline = require('readline');
const {chromium} = require('playwright-core');

let browser, context, page;
const problems = [];

function watch(p) {
  p.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  p.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  p.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
}

async function run(cmd) {
  switch (cmd.op) {
    case 'open':
      if (!browser) {
        browser = await chromium.launch({
          executablePath: '/usr/bin/chromium', headless: true,
          args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync'],
        });
      }
      if (context) await context.close();
      context = await browser.newContext({
        viewport: {width: 1280, height: 900},
        bypassCSP: true, // the tests' own expressions are evaluated as strings
        httpCredentials: cmd.user ? {username: cmd.user, password: cmd.password} : undefined,
      });
      page = await context.newPage();
      watch(page);
      problems.length = 0;
      await page.goto(cmd.url, {waitUntil: 'load'});
      return {};
    case 'wait':
      await page.waitForFunction(cmd.js, null, {timeout: cmd.timeout || 10000, polling: 100});
      return {};
    case 'eval':
      return {value: await page.evaluate(cmd.js)};
    case 'click':
      await page.click(cmd.selector);
      return {};
    case 'screenshot':
      await page.screenshot({path: cmd.path, fullPage: true});
      return {};
    case 'errors':
      return {errors: problems.slice()};
    case 'close':
      if (browser) await browser.close();
      browser = null;
      return {};
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

const rl = readline.createInterface({input: process.stdin});
let chain = Promise.resolve();
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let answer;
    try {
      answer = {ok: true, ...(await run(JSON.parse(line)))};
    } catch (e) {
      answer = {ok: false, error: String(e && e.message || e)};
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  });
});
rl.on('close', () => chain.then(async () => { if (browser) await browser.close(); process.exit(0); }));
