// Drives Hookline's Mailgun-compatible webhooks API with Mailgun's own Node client,
// mailgun.js, exactly as a Mailgun user's code would: create, list, get, update, destroy,
// the webhook test call, and requests the API must refuse.
//
//   node tests/mailgun-js/roundtrip.mjs BASE_URL API_KEY DOMAIN RECEIVER_URL
//
// RECEIVER_URL is a receiver that answers 200 with the body `ok`; the test call sends to
// RECEIVER_URL/saved (after saving it as the permanent_fail webhook, so the caller can
// check the signature with that endpoint's key).
//
// Prints "mailgun.js: N passed, N failed" and exits non-zero on any failure.
// tests/api/mailgun_js.rs runs it against a local Hookline.

import assert from 'node:assert/strict';
import FormData from 'form-data';
import Mailgun from 'mailgun.js';

const [base, key, domain, receiver] = process.argv.slice(2);
if (!base || !key || !domain || !receiver) {
  console.error('usage: node roundtrip.mjs BASE_URL API_KEY DOMAIN RECEIVER_URL');
  process.exit(2);
}

const mg = new Mailgun(FormData).client({ username: 'api', key, url: base });
const hook = (path) => `https://hooks.example.com/mailgun/${path}`;

let passed = 0;
let failed = 0;

async function step(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`not ok - ${name}`);
    console.log(err);
  }
}

/** Asserts that a call is refused with this HTTP status. */
async function refused(promise, status) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.status, status, `expected HTTP ${status}, got ${err.status}`);
    // mailgun.js puts Mailgun's {"message"} into `details`.
    assert.equal(typeof err.details, 'string');
    assert.ok(err.details.length > 0, 'the error carries a message');
    assert.equal(typeof err.message, 'string', 'the client shows a text message');
    return true;
  });
}

const sorted = (urls) => [...urls].sort();

await step('create delivered with one url', async () => {
  const res = await mg.webhooks.create(domain, 'delivered', hook('delivered'));
  assert.equal(res.id, 'delivered');
  assert.deepEqual(res.urls, [hook('delivered')]);
  assert.equal(res.url, hook('delivered'));
});

await step('create clicked with two urls (array form)', async () => {
  const res = await mg.webhooks.create(domain, 'clicked', [hook('c1'), hook('c2')]);
  assert.equal(res.id, 'clicked');
  assert.deepEqual(sorted(res.urls), [hook('c1'), hook('c2')]);
});

await step('list shows both webhooks and nothing else', async () => {
  const list = await mg.webhooks.list(domain, {});
  assert.deepEqual(Object.keys(list).sort(), ['clicked', 'delivered']);
  assert.deepEqual(list.delivered.urls, [hook('delivered')]);
  assert.deepEqual(sorted(list.clicked.urls), [hook('c1'), hook('c2')]);
});

await step('get clicked', async () => {
  const res = await mg.webhooks.get(domain, 'clicked');
  assert.equal(res.id, 'clicked');
  assert.deepEqual(sorted(res.urls), [hook('c1'), hook('c2')]);
});

await step('update clicked replaces its urls', async () => {
  const res = await mg.webhooks.update(domain, 'clicked', [hook('c2'), hook('c3')]);
  assert.deepEqual(sorted(res.urls), [hook('c2'), hook('c3')]);
  const again = await mg.webhooks.get(domain, 'clicked');
  assert.deepEqual(sorted(again.urls), [hook('c2'), hook('c3')]);
});

await step('update with a single url string', async () => {
  const res = await mg.webhooks.update(domain, 'delivered', hook('delivered-2'));
  assert.deepEqual(res.urls, [hook('delivered-2')]);
});

await step('four urls are refused', async () => {
  const four = [1, 2, 3, 4].map((n) => hook(`o${n}`));
  await refused(mg.webhooks.create(domain, 'opened', four), 400);
  await refused(mg.webhooks.update(domain, 'clicked', four), 400);
});

await step('an unknown webhook name is refused', async () => {
  await refused(mg.webhooks.create(domain, 'state_change', hook('x')), 400);
  await refused(mg.webhooks.get(domain, 'state_change'), 404);
});

await step('creating a webhook that exists is refused', async () => {
  await refused(mg.webhooks.create(domain, 'clicked', hook('c4')), 400);
});

await step('an unknown domain is not found', async () => {
  await refused(mg.webhooks.list(`nope.${domain}`, {}), 404);
});

await step('destroy delivered returns its urls, and it is gone', async () => {
  const res = await mg.webhooks.destroy(domain, 'delivered');
  assert.equal(res.id, 'delivered');
  assert.deepEqual(res.urls, [hook('delivered-2')]);
  await refused(mg.webhooks.get(domain, 'delivered'), 404);
  await refused(mg.webhooks.destroy(domain, 'delivered'), 404);
});

await step('list after destroy shows clicked only', async () => {
  const list = await mg.webhooks.list(domain, {});
  assert.deepEqual(Object.keys(list), ['clicked']);
  assert.deepEqual(sorted(list.clicked.urls), [hook('c2'), hook('c3')]);
});

await step('the test call sends a test event and tells what the receiver answered', async () => {
  const saved = `${receiver.replace(/\/$/, '')}/saved`;
  const created = await mg.webhooks.create(domain, 'permanent_fail', saved);
  assert.deepEqual(created.urls, [saved]);
  // `create` with test = true is the test call, under the alias Mailgun also takes.
  const res = await mg.webhooks.create(domain, 'bounce', saved, true);
  assert.deepEqual(res, { code: 200, message: 'ok' });
});

await step('the test call refuses a bad name, a private address and an unknown domain', async () => {
  await refused(mg.webhooks.create(domain, 'state_change', hook('t'), true), 400);
  await refused(mg.webhooks.create(domain, 'delivered', 'http://10.0.0.1/hook', true), 400);
  await refused(mg.webhooks.create(`nope.${domain}`, 'delivered', hook('t'), true), 404);
});

await step('a wrong key is unauthorized', async () => {
  const bad = new Mailgun(FormData).client({ username: 'api', key: `${key}-wrong`, url: base });
  await refused(bad.webhooks.list(domain, {}), 401);
  await refused(bad.webhooks.create(domain, 'delivered', hook('t'), true), 401);
});

console.log(`mailgun.js: ${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
