import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { describe, it } from 'node:test';
import { relay, type RelayStats } from '../../src/proxy/relay.js';
import { close, listen } from '../helpers/endpoints.js';

/** A connected pair of TCP sockets over loopback. */
async function pair(): Promise<[net.Socket, net.Socket, net.Server]> {
  let accepted!: net.Socket;
  const server = net.createServer({ allowHalfOpen: true }, (s) => { accepted = s; });
  const port = await listen(server);
  const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise((r) => c.once('connect', r));
  while (!accepted) await new Promise((r) => setTimeout(r, 5));
  return [c, accepted, server];
}

describe('relay', () => {
  it('counts bytes each way and reports once when both sides are closed', async () => {
    const [clientA, a, s1] = await pair();
    const [b, targetB, s2] = await pair();
    const done = new Promise<[RelayStats, string]>((resolve) => relay(a, b, { idleTimeoutMs: 60_000, maxLifetimeMs: 0 }, (st, why) => resolve([st, why])));
    targetB.on('data', (d) => targetB.write(d));
    targetB.on('end', () => targetB.end());
    const payload = crypto.randomBytes(100_000);
    let echoed = 0;
    clientA.on('data', (d: Buffer) => { echoed += d.length; });
    clientA.end(payload);
    const [stats, why] = await done;
    assert.equal(stats.up, payload.length);
    assert.equal(stats.down, payload.length);
    assert.equal(echoed, payload.length);
    assert.equal(why, 'closed');
    await Promise.all([close(s1), close(s2)]);
  });

  it('a side that closed before the relay started still completes it (no leaked relay, the other side is closed)', async () => {
    const [clientA, a, s1] = await pair();
    const [b, targetB, s2] = await pair();
    a.destroy();
    await new Promise((r) => a.once('close', r));
    // allowHalfOpen: the target sees the end of the proxy's side as 'end' (it may still write).
    const targetClosed = new Promise((r) => targetB.once('end', r));
    targetB.resume();
    const [, why] = await new Promise<[RelayStats, string]>((resolve) => relay(a, b, { idleTimeoutMs: 60_000, maxLifetimeMs: 0 }, (st, w) => resolve([st, w])));
    assert.equal(why, 'peer closed');
    await targetClosed;
    clientA.destroy();
    targetB.destroy();
    await Promise.all([close(s1), close(s2)]);
  });
});
