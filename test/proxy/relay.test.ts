import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, describe, it } from 'node:test';
import { relay, type RelayStats } from '../../src/proxy/relay.js';
import { clientTlsOptions, serverTlsOptions } from '../../src/tls/options.js';
import { close, listen, testPki, until, type TestPki } from '../helpers/endpoints.js';
import { startProcess, stopAll } from '../helpers/process.js';
import { tempDir } from '../helpers/pki.js';

/** A connected pair of TCP sockets over loopback. */
async function pair(): Promise<[net.Socket, net.Socket, net.Server]> {
  let accepted!: net.Socket;
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    accepted = s;
  });
  const port = await listen(server);
  const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise((r) => c.once('connect', r));
  while (!accepted) await new Promise((r) => setTimeout(r, 5));
  return [c, accepted, server];
}

/** A connected mTLS pair over loopback (allowHalfOpen both sides): the client and the server's socket. */
async function tlsPair(pki: TestPki): Promise<[tls.TLSSocket, tls.TLSSocket, tls.Server]> {
  let accepted: tls.TLSSocket | undefined;
  const server = tls.createServer({ ...serverTlsOptions(pki.creds('server')), allowHalfOpen: true }, (s) => {
    accepted = s;
  });
  const port = await listen(server);
  const client = tls.connect({
    ...clientTlsOptions(pki.creds('billing'), pki.bundle),
    host: '127.0.0.1',
    port,
    servername: 'localhost',
    allowHalfOpen: true,
  } as tls.ConnectionOptions);
  await new Promise((r) => client.once('secureConnect', r));
  await until(() => accepted !== undefined, 5000, 'the TLS connection');
  return [client, accepted!, server];
}

/** Reads everything, pausing 20 ms after every `every` bytes; resolves with the SHA-256 and length. */
function slowSink(s: net.Socket, every: number): Promise<[string, number]> {
  return new Promise((resolve) => {
    const h = crypto.createHash('sha256');
    let n = 0;
    let mark = 0;
    s.on('data', (d: Buffer) => {
      h.update(d);
      n += d.length;
      if (n - mark >= every) {
        mark = n;
        s.pause();
        setTimeout(() => s.resume(), 20);
      }
    });
    s.on('end', () => resolve([h.digest('hex'), n]));
  });
}

/** Writes `data` in pieces of odd sizes (so that reads do not line up with writes), then half-closes. */
function send(s: net.Socket, data: Buffer, size = 50_000): void {
  let off = 0;
  const pump = () => {
    while (off < data.length) {
      const piece = data.subarray(off, off + size + ((off % 7_919) % size));
      off += piece.length;
      if (!s.write(piece)) return void s.once('drain', pump);
    }
    s.end();
  };
  pump();
}

const sha = (d: Buffer) => crypto.createHash('sha256').update(d).digest('hex');

after(stopAll);

describe('relay', () => {
  it('counts bytes each way and reports once when both sides are closed', async () => {
    const [clientA, a, s1] = await pair();
    const [b, targetB, s2] = await pair();
    const done = new Promise<[RelayStats, string]>((resolve) =>
      relay(a, b, { idleTimeoutMs: 60_000, maxLifetimeMs: 0 }, (st, why) => resolve([st, why])),
    );
    targetB.on('data', (d) => targetB.write(d));
    targetB.on('end', () => targetB.end());
    const payload = crypto.randomBytes(100_000);
    let echoed = 0;
    clientA.on('data', (d: Buffer) => {
      echoed += d.length;
    });
    clientA.end(payload);
    const [stats, why] = await done;
    assert.equal(stats.up, payload.length);
    assert.equal(stats.down, payload.length);
    assert.equal(echoed, payload.length);
    assert.equal(why, 'closed');
    await Promise.all([close(s1), close(s2)]);
  });

  it(
    'a side that closed before the relay started still completes it (no leaked ' + 'relay, the other side is closed)',
    async () => {
      const [clientA, a, s1] = await pair();
      const [b, targetB, s2] = await pair();
      a.destroy();
      await new Promise((r) => a.once('close', r));
      // allowHalfOpen: the target sees the end of the proxy's side as 'end' (it may still write).
      const targetClosed = new Promise((r) => targetB.once('end', r));
      targetB.resume();
      const [, why] = await new Promise<[RelayStats, string]>((resolve) =>
        relay(a, b, { idleTimeoutMs: 60_000, maxLifetimeMs: 0 }, (st, w) => resolve([st, w])),
      );
      assert.equal(why, 'peer closed');
      await targetClosed;
      clientA.destroy();
      targetB.destroy();
      await Promise.all([close(s1), close(s2)]);
    },
  );

  it(
    'bulk transfers both ways at once, from a TLS socket, with slow readers on ' + 'both ends, arrive byte-exact',
    async () => {
      // A slow reader makes the relay's writes wait in the socket's queue: the bulk reads must then not reuse a
      // buffer a pending write still points into (without that rule the hashes differ).
      const pki = await testPki();
      const [client, a, server] = await tlsPair(pki);
      const [b, target, s2] = await pair();
      const done = new Promise<[RelayStats, string]>((resolve) =>
        relay(a, b, { idleTimeoutMs: 60_000, maxLifetimeMs: 0 }, (st, why) => resolve([st, why])),
      );

      const SIZE = 12 * 1024 * 1024;
      const up = crypto.randomBytes(SIZE);
      const down = crypto.randomBytes(SIZE);
      const atTarget = slowSink(target, 512 * 1024);
      const atClient = slowSink(client, 512 * 1024);
      send(client, up);
      send(target, down);
      assert.deepEqual(await atTarget, [sha(up), SIZE]);
      assert.deepEqual(await atClient, [sha(down), SIZE]);
      const [stats, why] = await done;
      assert.deepEqual([stats.up, stats.down, why], [SIZE, SIZE, 'closed']);
      assert.equal(stats.bulk, 2, 'both directions switched to bulk reads');
      await Promise.all([close(server), close(s2), pki.ca.close()]);
    },
  );

  it(
    'a connection below the bulk threshold shares a read buffer, yet a write ' + 'that waits keeps its own bytes',
    async () => {
      // Reads land in one buffer shared by all relays still under the threshold, so each is copied out at once.
      // The target here is a python3 process on a unix socket that starts reading late: past the ~200 KiB the
      // kernel holds, writes to it wait, pointing at the bytes they were given, while more (small) TLS records
      // of the same TCP read arrive. Handed a view of the shared buffer instead of a copy, it would send their bytes.
      const pki = await testPki();
      const [client, a, server] = await tlsPair(pki);
      const sinkPath = path.join(tempDir('mtls-relay-'), 'sink.sock');
      const sink = await startProcess('python3', ['-c', SLOW_SINK, sinkPath], /^listening/m);
      const b = net.connect({ path: sinkPath, allowHalfOpen: true });
      await new Promise((r) => b.once('connect', r));
      const done = new Promise<[RelayStats, string]>((resolve) =>
        relay(a, b, { idleTimeoutMs: 60_000, maxLifetimeMs: 0 }, (st, why) => resolve([st, why])),
      );
      const SIZE = 240 * 1024;
      const up = crypto.randomBytes(SIZE);
      client.on('data', () => undefined);
      send(client, up, 1000); // small TLS records: many arrive in one TCP read

      await until(() => /^sha256 /m.test(sink.output()), 60_000, 'the sink to finish');
      assert.equal(/^sha256 (\w+) (\d+)/m.exec(sink.output())!.slice(1).join(' '), `${sha(up)} ${SIZE}`);
      client.end();
      const [stats] = await done;
      assert.equal(stats.bulk, 0, 'still below the bulk threshold');
      await close(server);
      await pki.ca.close();
    },
  );
});

/**
 * One connection on a unix socket (argv[1]; its kernel buffer holds about 200 KiB), read only after 300 ms;
 * prints the SHA-256 and length of what it got.
 */
const SLOW_SINK = `
import hashlib, socket, sys, time
l = socket.socket(socket.AF_UNIX)
l.bind(sys.argv[1]); l.listen(1)
print("listening", flush=True)
c, _ = l.accept()
time.sleep(0.3)
h = hashlib.sha256(); n = 0
while True:
    d = c.recv(65536)
    if not d: break
    h.update(d); n += len(d)
print("sha256", h.hexdigest(), n, flush=True)
c.close()
`;
