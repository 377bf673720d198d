import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { before, describe, it } from 'node:test';
import { createMtlsHttpsServer } from '../../src/adapters/http.js';
import { compilePolicy } from '../../src/identity/policy.js';
import { createMtlsServer } from '../../src/tls/server.js';
import { freePort, listen, testPki, type TestPki, credentialArgs } from '../helpers/endpoints.js';
import { startProxy, trackServers } from '../helpers/process.js';

let pki: TestPki;
const servers = trackServers(() => pki.ca.close());
before(async () => {
  pki = await testPki();
});

/**
 * `openssl s_client -tls1_2` connects with the billing client certificate, then asks for a renegotiation ('R').
 * Resolves with what it printed after asking.
 */
function renegotiate(port: number): Promise<string> {
  return new Promise((resolve) => {
    const c = spawn('openssl', [
      's_client',
      '-connect',
      `127.0.0.1:${port}`,
      '-tls1_2',
      '-servername',
      'localhost',
      '-cert',
      pki.file('billing.crt'),
      '-cert_chain',
      pki.file('billing.crt'),
      '-key',
      pki.file('billing.key'),
      '-CAfile',
      pki.file('ca.crt'),
    ]);
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (out += d));
    const ask = setInterval(() => {
      if (!/Verify return code: 0/.test(out)) return;
      clearInterval(ask);
      c.stdin.write('R\n');
      setTimeout(() => c.kill(), 1000);
    }, 50);
    c.on('exit', () => {
      clearInterval(ask);
      resolve(out.slice(out.indexOf('RENEGOTIATING')));
    });
  });
}

describe('TLS 1.2 client-initiated renegotiation is refused by every server we build (issues 12.9, 19.7)', () => {
  const policy = compilePolicy({ allow: ['any'] });
  const echo = async () => {
    const s = net.createServer((c) => {
      c.on('error', () => undefined);
      c.pipe(c);
    });
    servers.push(s);
    return listen(s);
  };
  const cases: [string, () => Promise<number>][] = [
    [
      'createMtlsServer',
      async () => {
        const s = createMtlsServer({ credentials: pki.creds('server'), policy }, (c) => {
          c.on('error', () => undefined);
          c.pipe(c);
        });
        servers.push(s);
        return listen(s);
      },
    ],
    [
      'createMtlsHttpsServer (mtls serve)',
      async () => {
        const s = createMtlsHttpsServer({ credentials: pki.creds('server'), policy }, (_q, r) => r.end('ok'));
        servers.push(s);
        return listen(s);
      },
    ],
    ...(['node', 'native', 'http'] as const).map((engine): [string, () => Promise<number>] => [
      `mtls proxy server (${engine})`,
      async () => {
        const port = await freePort();
        await startProxy([
          'server',
          '--listen',
          `127.0.0.1:${port}`,
          '--target',
          `127.0.0.1:${await echo()}`,
          ...credentialArgs(pki),
          '--allow',
          'any',
          ...(engine === 'http' ? ['--http'] : ['--engine', engine]),
        ]);
        return port;
      },
    ]),
  ];
  for (const [what, start] of cases) {
    it(what, async () => {
      const after = await renegotiate(await start());
      assert.match(after, /^RENEGOTIATING/, 'the handshake finished and the renegotiation was asked for');
      assert.match(after, /no renegotiation/, `refused with the no_renegotiation alert:\n${after}`);
      assert.doesNotMatch(after, /verify return/, 'no second handshake took place');
    });
  }
});
