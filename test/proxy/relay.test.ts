import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { describe, it } from 'node:test';
import { relay, type RelayStats } from '../../src/proxy/relay.js';
import { clientTlsOptions, serverTlsOptions } from '../../src/tls/options.js';
import { close, listen, testPki } from '../helpers/endpoints.js';

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

  it('bulk transfers both ways at once, from a TLS socket, with slow readers on both ends, arrive byte-exact', async () => {
    // A slow reader makes the relay's writes wait in the socket's queue: the bulk reads must then not reuse a
    // buffer a pending write still points into (without that rule the hashes differ).
    const pki = await testPki();
    let a!: tls.TLSSocket;
    const server = tls.createServer({ ...serverTlsOptions(pki.creds('server')), allowHalfOpen: true }, (s) => { a = s; });
    const port = await listen(server);
    const client = tls.connect({ ...clientTlsOptions(pki.creds('billing'), pki.bundle), host: '127.0.0.1', port, servername: 'localhost', allowHalfOpen: true } as tls.ConnectionOptions);
    await new Promise((r) => client.once('secureConnect', r));
    while (!a) await new Promise((r) => setTimeout(r, 5));
    const [b, target, s2] = await pair();
    const done = new Promise<[RelayStats, string]>((resolve) => relay(a, b, { idleTimeoutMs: 60_000, maxLifetimeMs: 0 }, (st, why) => resolve([st, why])));

    const SIZE = 12 * 1024 * 1024;
    const up = crypto.randomBytes(SIZE);
    const down = crypto.randomBytes(SIZE);
    /** Reads everything, pausing 20 ms after every 512 KiB; resolves with the SHA-256 and length. */
    const slowSink = (s: net.Socket) => new Promise<[string, number]>((resolve) => {
      const h = crypto.createHash('sha256');
      let n = 0;
      let mark = 0;
      s.on('data', (d: Buffer) => {
        h.update(d);
        n += d.length;
        if (n - mark >= 512 * 1024) {
          mark = n;
          s.pause();
          setTimeout(() => s.resume(), 20);
        }
      });
      s.on('end', () => resolve([h.digest('hex'), n]));
    });
    const atTarget = slowSink(target);
    const atClient = slowSink(client);
    // Writes in pieces of odd sizes, so that reads do not line up with writes.
    const send = (s: net.Socket, data: Buffer) => {
      let off = 0;
      const pump = () => {
        while (off < data.length) {
          const piece = data.subarray(off, off + 50_000 + (off % 7_919));
          off += piece.length;
          if (!s.write(piece)) return void s.once('drain', pump);
        }
        s.end();
      };
      pump();
    };
    send(client, up);
    send(target, down);
    const sha = (d: Buffer) => crypto.createHash('sha256').update(d).digest('hex');
    assert.deepEqual(await atTarget, [sha(up), SIZE]);
    assert.deepEqual(await atClient, [sha(down), SIZE]);
    const [stats, why] = await done;
    assert.deepEqual([stats.up, stats.down, why], [SIZE, SIZE, 'closed']);
    assert.equal(stats.bulk, 2, 'both directions switched to bulk reads');
    await Promise.all([close(server), close(s2)]);
  });
});
