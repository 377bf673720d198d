/**
 * The native engine under resets and repeated start/stop (issue 18): a side that hangs up or resets must end that
 * side, never stay armed in the epoll set (it would spin a core until the idle timeout); an engine started and
 * destroyed again and again gives back its descriptors and memory.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { nativeUnavailable } from '../../src/proxy/native.js';
import { clientTlsOptions } from '../../src/tls/options.js';
import { close, freePort, listen, testPki, until, type TestPki, credentialArgs } from '../helpers/endpoints.js';
import { startProxy, stopAll } from '../helpers/process.js';

let pki: TestPki;
const servers: net.Server[] = [];
const skip = nativeUnavailable();

before(async () => {
  pki = await testPki();
});
after(async () => {
  stopAll();
  await Promise.all(servers.map(close));
  await pki.ca.close();
});

/** CPU ticks (1/100 s) a process used, user and system. */
function cpuTicks(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** An mTLS connection through the proxy on a raw TCP socket of our own (so that it can be reset). */
async function through(port: number): Promise<{ raw: net.Socket; tls: tls.TLSSocket }> {
  const raw = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  raw.on('error', () => undefined);
  const c = tls.connect({
    socket: raw,
    ...clientTlsOptions(pki.creds('billing'), pki.bundle),
    servername: 'localhost',
  });
  c.on('error', () => undefined);
  await new Promise((r) => c.once('secureConnect', r));
  return { raw, tls: c };
}

describe('native engine: resets and hang-ups end their side (issue 18.2)', { skip }, () => {
  it(
    'client half-close then reset, target silent; and target FIN then reset, ' + 'client silent: the engine stays idle',
    async () => {
      const received: net.Socket[] = [];
      let mode: 'silent' | 'fin-then-rst' = 'silent';
      const backend = net.createServer({ allowHalfOpen: true }, (s) => {
        s.on('error', () => undefined);
        received.push(s);
        s.once('data', () => {
          if (mode === 'fin-then-rst') {
            s.end();
            setTimeout(() => s.resetAndDestroy(), 100);
          }
        });
      });
      servers.push(backend);
      const target = await listen(backend);
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
        'native',
      ]);
      const pid = p.child.pid!;
      // Client: data, half-close (FIN passed on to the silent target), then a reset.
      for (let i = 0; i < 2; i++) {
        const c = await through(port);
        c.tls.end('data then half-close');
        await until(() => received.length > i, 5000, 'the target connection');
        await new Promise((r) => setTimeout(r, 100));
        c.raw.resetAndDestroy();
      }
      await new Promise((r) => setTimeout(r, 300));
      let t0 = cpuTicks(pid);
      await new Promise((r) => setTimeout(r, 2000));
      const clientReset = cpuTicks(pid) - t0;
      // Target: FIN, then a reset, while the client stays silent and open.
      mode = 'fin-then-rst';
      const held = [await through(port), await through(port)];
      for (const c of held) c.tls.write('hello');
      await new Promise((r) => setTimeout(r, 500));
      t0 = cpuTicks(pid);
      await new Promise((r) => setTimeout(r, 2000));
      const targetReset = cpuTicks(pid) - t0;
      for (const c of held) c.raw.destroy();
      // Before the fix both cases spun a core each: about 200 ticks per connection in 2 s.
      assert.ok(clientReset < 40, `client reset: ${clientReset} CPU ticks in 2 s`);
      assert.ok(targetReset < 40, `target reset: ${targetReset} CPU ticks in 2 s`);
      await until(
        () => (p.output().match(/"event":"connection"/g) ?? []).length >= 4,
        5000,
        'all four connections to end',
      );
    },
  );
});
