/**
 * The native engine's lifetime and its contract with TypeScript (issue 17): destroy() gives back the epoll and
 * eventfd descriptors and the TLS context, an engine that is only dropped is freed by its finalizer, and the
 * close reasons are one list on both sides of the binding.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { CLOSE_REASONS, nativeBinding, nativeUnavailable, NativeEngine } from '../../src/proxy/native.js';
import { serverTlsOptions } from '../../src/tls/options.js';
import { testPki, type TestPki } from '../helpers/endpoints.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** This process's epoll and eventfd descriptors (each engine loop holds one of each). */
function engineFds(): number {
  let n = 0;
  for (const f of fs.readdirSync('/proc/self/fd')) {
    try {
      if (/eventpoll|eventfd/.test(fs.readlinkSync(`/proc/self/fd/${f}`))) n++;
    } catch {
      // closed while listing
    }
  }
  return n;
}

const rssMiB = () => process.memoryUsage().rss / 2 ** 20;
const settle = async () => {
  for (let i = 0; i < 5; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
};

const skip = nativeUnavailable();
let pki: TestPki;
before(async () => {
  pki = await testPki();
});
after(async () => {
  await pki.ca.close();
});

describe(
  'native engine lifetime (issues 17, 18.3)',
  { skip: skip && `${skip} (the native engine is not built: npm ci with make and g++)` },
  () => {
    it('the addon and TypeScript name the same close reasons, in the same order', () => {
      assert.deepEqual(nativeBinding()!.closeReasons, [...CLOSE_REASONS]);
    });

    it(
      'refuses TLS options without the policy (ciphers, groups, minimum version): ' +
        'the addon has no default of its own',
      () => {
        const e = new NativeEngine(() => undefined, 1);
        try {
          const o = serverTlsOptions(pki.creds('server'));
          assert.throws(() => e.setSecureContext({ ...o, ciphers: undefined }), /ciphers, ecdhCurve and minVersion/);
          assert.throws(
            () => e.setSecureContext({ ...o, minVersion: 'TLSv1' }),
            /minimum version must be TLSv1.2 or TLSv1.3/,
          );
          assert.throws(() => e.setSecureContext({ ...o, ciphers: 'NO-SUCH-CIPHER' }), /cipher suites or groups/);
          e.setSecureContext(o);
        } finally {
          e.destroy();
        }
      },
    );

    it('destroy() returns descriptors and memory to the baseline over 300 engines', async () => {
      const opts = serverTlsOptions(pki.creds('server'));
      const cycle = (threads: number) => {
        const e = new NativeEngine(() => undefined, threads);
        e.setSecureContext(opts);
        e.destroy();
      };
      for (let i = 0; i < 20; i++) cycle(2); // warm-up: allocator arenas, OpenSSL's lazy tables
      await settle();
      const fds = engineFds();
      const rss = rssMiB();
      for (let i = 0; i < 300; i++) cycle(1 + (i % 3));
      await settle();
      assert.equal(engineFds(), fds, 'every epoll and eventfd descriptor closed');
      // A leaked SSL_CTX with its certificate and trust bundle is tens of KiB; 300 of them would show.
      assert.ok(rssMiB() - rss < 24, `RSS grew ${(rssMiB() - rss).toFixed(1)} MiB over 300 engines`);
    });

    it('an engine that is only dropped is stopped and freed by its finalizer', async () => {
      const opts = serverTlsOptions(pki.creds('server'));
      await settle();
      const fds = engineFds();
      (() => {
        for (let i = 0; i < 50; i++) new NativeEngine(() => undefined, 2).setSecureContext(opts);
      })();
      assert.equal(engineFds(), fds + 50 * 2 * 2, 'each live loop holds an epoll and an eventfd');
      for (let i = 0; i < 40 && engineFds() !== fds; i++) await settle();
      assert.equal(engineFds(), fds, 'the finalizers closed every descriptor');
    });
  },
);
