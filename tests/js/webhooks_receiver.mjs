// A webhook receiver that verifies every delivery with the official Node SDK
// (`workos.webhooks.constructEvent`), as an app would. Used two ways:
// - imported by webhooks.test.mjs (`startReceiver()`), in-process;
// - run as a process by tests/tests/webhooks_e2e.rs (`node webhooks_receiver.mjs`): it prints
//   `LISTENING <port>` and is steered over HTTP:
//     POST /control {"secret": "...", "refuse": true|false}   set the secret / answer 503s
//     GET  /deliveries                                        every accepted delivery so far
//     POST /hook                                              the webhook endpoint itself
import http from 'node:http';
import { pathToFileURL } from 'node:url';

import { WorkOS } from '@workos-inc/node';

// Verification needs no API key; the SDK only requires one to construct a client.
const workos = new WorkOS('sk_test_receiver_only_no_api_calls');

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/**
 * Verifies one delivery twice: with the raw body string, and with the parsed object (the SDK
 * re-serializes it with JSON.stringify, which only verifies if our bytes are exactly that).
 */
async function verify(raw, sigHeader, secret) {
  const text = raw.toString('utf8');
  const fromString = await workos.webhooks.constructEvent({ payload: text, sigHeader, secret });
  const fromObject = await workos.webhooks.constructEvent({
    payload: JSON.parse(text),
    sigHeader,
    secret,
  });
  if (fromString.id !== fromObject.id) throw new Error('string and object payloads disagree');
  return fromString;
}

/** Starts a receiver on 127.0.0.1:<free port>. */
export async function startReceiver({ secret = null, refuse = false } = {}) {
  const state = {
    secret,
    refuse,
    deliveries: [], // {id, event, verified, error, sigHeader, body, contentType, userAgent}
    refused: 0,
  };
  const server = http.createServer(async (req, res) => {
    try {
      const body = await readBody(req);
      if (req.method === 'POST' && req.url === '/control') {
        const cmd = JSON.parse(body.toString('utf8') || '{}');
        if ('secret' in cmd) state.secret = cmd.secret;
        if ('refuse' in cmd) state.refuse = Boolean(cmd.refuse);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ok: true }));
        return;
      }
      if (req.method === 'GET' && req.url === '/deliveries') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ deliveries: state.deliveries, refused: state.refused }));
        return;
      }
      if (req.method === 'POST' && req.url === '/hook') {
        if (state.refuse) {
          state.refused += 1;
          res.writeHead(503);
          res.end();
          return;
        }
        const sigHeader = req.headers['workos-signature'] ?? '';
        const record = {
          id: null,
          event: null,
          verified: false,
          error: null,
          sigHeader,
          body: body.toString('utf8'),
          contentType: req.headers['content-type'] ?? null,
          userAgent: req.headers['user-agent'] ?? null,
        };
        try {
          const event = await verify(body, sigHeader, state.secret);
          record.id = event.id;
          record.event = event.event;
          record.verified = true;
        } catch (e) {
          record.error = String(e?.message ?? e);
          try {
            record.id = JSON.parse(record.body).id ?? null;
          } catch {
            // not JSON: the id stays null and the test reports the error
          }
        }
        state.deliveries.push(record);
        // 200 even when verification failed: the test reports it instead of timing out on
        // retries of a delivery that can never verify.
        res.writeHead(200);
        res.end();
        return;
      }
      res.writeHead(404);
      res.end();
    } catch (e) {
      res.writeHead(500);
      res.end(String(e));
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    state,
    port,
    url: `http://127.0.0.1:${port}/hook`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await startReceiver({ secret: process.env.WEBHOOK_SECRET ?? null });
  console.log(`LISTENING ${r.port}`);
}
