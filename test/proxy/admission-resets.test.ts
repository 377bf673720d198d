/**
 * A client that finishes its handshake and resets at once, while the proxy is still connecting to the target, must
 * end only its own connection. On the node engine such a reset once crashed the whole proxy (the target's
 * 'connect' arrived after the client socket was destroyed but before its 'close', and reading the destroyed
 * socket's cipher threw): any client could take the proxy down, and a CRL reload that closed a connection at that
 * moment did (issue 14's "a non-revoked client is refused after the reload").
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { before, describe, it } from 'node:test';
import { nativeUnavailable } from '../../src/proxy/native.js';
import { clientTlsOptions } from '../../src/tls/options.js';
import { credentialArgs, echoTarget, freePort, testPki, until, type TestPki } from '../helpers/endpoints.js';
import { startProxy, trackServers } from '../helpers/process.js';

let pki: TestPki;
const servers = trackServers(() => pki.ca.close());
before(async () => {
  pki = await testPki();
});

/** One mTLS handshake through the proxy, then a TCP reset the moment it is done or up to `delayUs` µs later. */
function handshakeThenReset(port: number, delayUs: number): Promise<void> {
  return new Promise((resolve) => {
    const raw = net.connect({ port, host: '127.0.0.1' });
    raw.on('error', () => undefined);
    const c = tls.connect({
      socket: raw,
      ...clientTlsOptions(pki.creds('billing'), pki.bundle),
      servername: 'localhost',
    });
    c.on('error', () => undefined);
    c.once('secureConnect', () => {
      const reset = () => {
        raw.resetAndDestroy();
        resolve();
      };
      if (delayUs === 0) reset();
      else {
        const until = process.hrtime.bigint() + BigInt(delayUs * 1000);
        while (process.hrtime.bigint() < until);
        setImmediate(reset);
      }
    });
    raw.once('close', () => resolve());
  });
}

/** A full echo through the proxy: the proxy is alive and relays. */
function echo(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = tls.connect(
      { host: '127.0.0.1', port, ...clientTlsOptions(pki.creds('billing'), pki.bundle), servername: 'localhost' },
      () => c.write('ping'),
    );
    c.on('error', () => undefined);
    c.on('data', (d) => {
      if (String(d) === 'ping') {
        c.destroy();
        resolve(true);
      }
    });
    c.on('close', () => resolve(false));
  });
}

for (const engine of ['node', 'native'] as const)
  describe(
    `${engine} engine: clients that reset right after their handshake`,
    {
      skip: engine === 'native' ? nativeUnavailable() : undefined,
    },
    () => {
      it('end only their own connection: the proxy keeps running and relaying', async (t) => {
        // The echo target's accept races the client's reset, which comes 0-400 µs after the handshake.
        // Its open connections are counted: none may outlive the clients that caused them.
        const { port: target, open } = await echoTarget(servers);
        const port = await freePort();
        const p = await startProxy([
          'server',
          '--listen',
          `127.0.0.1:${port}`,
          '--target',
          `127.0.0.1:${target}`,
          ...credentialArgs(pki),
          '--allow',
          'any',
          '--engine',
          engine,
        ]);
        for (let round = 0; round < 40; round++) {
          await Promise.all(Array.from({ length: 20 }, (_, i) => handshakeThenReset(port, (round % 8) * 50 + i)));
          assert.equal(p.child.exitCode, null, `the proxy died after round ${round}: ${p.output().slice(-2000)}`);
        }
        assert.equal(await echo(port), true, `the proxy no longer relays: ${p.output().slice(-2000)}`);
        assert.equal(p.child.exitCode, null, p.output().slice(-2000));
        // Every target connection of a client that reset is closed by the proxy. On the node engine a client whose
        // end came before the target connected left its target connection open until the idle timeout (5 min).
        await t.test('the target connection of every client that reset is closed', async () => {
          try {
            await until(
              () => open.size === 0,
              10_000,
              `the target connections of the reset clients to close (${open.size} open)`,
            );
          } finally {
            for (const sock of open) sock.destroy(); // so that closing the backend never waits on a leak
          }
        });
        for (const sock of open) sock.destroy();
      });
    },
  );
