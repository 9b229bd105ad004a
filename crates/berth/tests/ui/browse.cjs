// Drives berth's web UI in headless Chromium (Debian's /usr/bin/chromium)
// with Playwright: as an anonymous visitor, then signed in with the
// browser's own Basic login. Every check that fails is collected; the
// process exits 1 if any did, and prints one JSON line of what it saw.
//
// Arguments: BASE_URL OUT_DIR USER PASSWORD PRIVATE_REPO
// Environment: PLAYWRIGHT_CORE = path of the playwright-core package.
'use strict';
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const [base, outDir, user, password, privateRepo] = process.argv.slice(2);
const failures = [];
const shots = [];
const check = (ok, what) => { if (!ok) failures.push(what); };

async function shot(page, name) {
  const path = `${outDir}/${name}.png`;
  await page.screenshot({ path, fullPage: true });
  shots.push(path);
}

// Console errors and CSP violations fail the run: the pages need no script.
// (A page answered 404 on purpose logs its status; that is not a fault.)
function watch(page, label) {
  page.on('console', (m) => {
    if (m.type() === 'error' && !/^Failed to load resource: the server responded with a status of 40[34]/.test(m.text())) {
      failures.push(`${label}: console error: ${m.text()}`);
    }
  });
  page.on('pageerror', (e) => failures.push(`${label}: page error: ${e.message}`));
}

(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    // --- anonymous
    const anon = await browser.newContext();
    const a = await anon.newPage();
    watch(a, 'anonymous');
    let r = await a.goto(`${base}/ui`);
    check(r.status() === 200, `anonymous /ui status ${r.status()}`);
    check((await a.locator('#user').innerText()) === 'anonymous', 'anonymous is shown as anonymous');
    const anonLocal = await a.locator('#local').innerText();
    check(!anonLocal.includes('team/'), `anonymous sees local repositories: ${anonLocal}`);
    const anonMirrors = await a.locator('#mirrors').innerText();
    check(anonMirrors.includes('docker.io') && anonMirrors.includes('docker.io/library/busybox'),
      `anonymous does not see the public mirror: ${anonMirrors}`);
    check(await a.locator('a', { hasText: 'Sign in' }).count() > 0, 'no sign-in link for anonymous');
    // The embedded style sheet applied (no outside resource was needed).
    const headerColour = await a.locator('header.top').evaluate((e) => getComputedStyle(e).backgroundColor);
    check(headerColour === 'rgb(20, 33, 61)', `style sheet not applied: header ${headerColour}`);
    await shot(a, 'anonymous-repositories');
    r = await a.goto(`${base}/ui/repo/${privateRepo}`);
    check(r.status() === 404, `anonymous reads ${privateRepo}: ${r.status()}`);
    // A browser without credentials gets the Basic prompt (headless has no
    // one to answer it, so ask as its request client does).
    r = await anon.request.get(`${base}/ui/cache`);
    check(r.status() === 401 && (r.headers()['www-authenticate'] || '').startsWith('Basic'),
      `anonymous cache page: ${r.status()} ${r.headers()['www-authenticate']}`);
    await anon.close();

    // --- signed in (the browser answers the Basic challenge)
    const ctx = await browser.newContext({ httpCredentials: { username: user, password } });
    const p = await ctx.newPage();
    watch(p, user);
    r = await p.goto(`${base}/ui/login`);
    check(p.url() === `${base}/ui/`, `login did not land on /ui/: ${p.url()}`);
    check((await p.locator('#user').innerText()) === user, 'the signed-in user is not shown');
    const local = await p.locator('#local').innerText();
    check(local.includes('team/web'), `team/web not listed: ${local}`);
    check(!local.includes(privateRepo), `${privateRepo} listed to ${user}`);
    await shot(p, 'repositories');

    await p.locator('#local a', { hasText: 'team/web' }).click();
    check(p.url() === `${base}/ui/repo/team/web`, `repository link went to ${p.url()}`);
    const tags = await p.locator('table.tags').innerText();
    check(tags.includes('multi') && tags.includes('v1'), `tags missing: ${tags}`);
    check(tags.includes('multi-platform index') && tags.includes('linux/amd64, linux/arm64'),
      `index row lacks kind or platforms: ${tags}`);
    check(tags.includes('signature (cosign)'), `the cosign signature tag is not named so: ${tags}`);
    const host = new URL(base).host;
    const pull = await p.locator('table.pull').first().innerText();
    for (const cmd of [`docker pull ${host}/team/web:`, `podman pull --tls-verify=false ${host}/team/web:`,
      `ctr images pull --plain-http --user ${user} ${host}/team/web:`, `crictl pull --creds ${user} ${host}/team/web:`]) {
      check(pull.includes(cmd), `pull commands lack "${cmd}": ${pull}`);
    }
    await shot(p, 'repository');

    await p.locator('table.tags a', { hasText: 'multi' }).click();
    const platforms = await p.locator('#platforms').innerText();
    check(platforms.includes('linux/amd64') && platforms.includes('linux/arm64'), `platforms: ${platforms}`);
    await shot(p, 'index');
    await p.locator('#platforms tr', { hasText: 'linux/arm64' }).locator('a').click();
    const layers = await p.locator('#layers').innerText();
    check(layers.includes('config') && (layers.match(/application\/vnd\.oci\.image\.layer/g) || []).length === 2,
      `layers of the arm64 image: ${layers}`);
    check((await p.locator('table.facts').innerText()).includes('linux/arm64'), 'platform of the arm64 image');
    await shot(p, 'image');

    r = await p.goto(`${base}/ui/repo/team/web/-/manifest/v1`);
    check(r.status() === 200, `v1 status ${r.status()}`);
    const referrers = await p.locator('#referrers').innerText();
    check(referrers.includes('SBOM') && referrers.includes('signature'), `referrers: ${referrers}`);
    const notes = await p.locator('#annotations').innerText();
    check(notes.includes('<script>alert(1)</script>'), `the hostile annotation is not shown as text: ${notes}`);
    check(await p.locator('script').count() === 0, 'a script element is on the page');
    await shot(p, 'manifest-with-referrers');

    r = await p.goto(`${base}/ui/cache`);
    check(r.status() === 200, `cache page status ${r.status()}`);
    const ratio = await p.locator('#hit-ratio .value').innerText();
    check(/^\d+\.\d %$/.test(ratio) && ratio !== '0.0 %', `hit ratio: ${ratio}`);
    const fromCache = await p.locator('#bytes-from-cache .value').innerText();
    check(fromCache !== '0 B', `bytes from cache: ${fromCache}`);
    const fromUp = await p.locator('#bytes-from-upstreams .value').innerText();
    check(fromUp !== '0 B', `bytes from upstreams: ${fromUp}`);
    const ups = await p.locator('#upstreams').innerText();
    check(ups.includes('docker.io') && ups.includes('ok'), `upstream health: ${ups}`);
    check(await p.locator('#stale-serves .value').count() === 1, 'no stale serves figure');
    check(await p.locator('#evictions .value').count() === 1, 'no evictions figure');
    const storage = await p.locator('#storage').innerText();
    check(storage.includes('local') && storage.includes('docker.io'), `storage by upstream: ${storage}`);
    await shot(p, 'cache');
    await ctx.close();
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify({ failures, screenshots: shots }));
  process.exit(failures.length ? 1 : 0);
})().catch((e) => { console.log(JSON.stringify({ failures: [...failures, String(e)], screenshots: shots })); process.exit(1); });
