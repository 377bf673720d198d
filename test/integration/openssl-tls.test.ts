import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { writeIssued } from '../../src/ca/output.js';
import { tempDir } from '../helpers/pki.js';
import { freePort } from '../helpers/endpoints.js';

let dir: string;

/**
 * Runs `openssl s_server -Verify 1 -verify_return_error` for one connection and an `openssl s_client` against
 * it; returns what both printed. Readiness is read from s_server's "ACCEPT" line (a TCP probe would use up
 * its only connection).
 */
async function handshake(
  clientCert: string | undefined,
  version: '-tls1_3' | '-tls1_2',
): Promise<{ server: string; client: string; clientStatus: number }> {
  const port = await freePort();
  const file = (n: string) => path.join(dir, n);
  const server = spawn('openssl', [
    's_server',
    '-accept',
    `127.0.0.1:${port}`,
    '-naccept',
    '1',
    '-cert',
    file('server.crt'),
    '-cert_chain',
    file('server.crt'),
    '-key',
    file('server.key'),
    '-CAfile',
    file('ca.crt'),
    '-Verify',
    '1',
    '-verify_return_error',
    version,
    '-purpose',
    'sslclient',
  ]);
  let serverOut = '';
  server.stdout.on('data', (d) => {
    serverOut += d;
  });
  server.stderr.on('data', (d) => {
    serverOut += d;
  });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`s_server did not start: ${serverOut}`)), 10_000);
    const check = () => (serverOut.includes('ACCEPT') ? (clearTimeout(t), resolve()) : setTimeout(check, 20));
    check();
  });
  const args = [
    's_client',
    '-connect',
    `127.0.0.1:${port}`,
    '-servername',
    'localhost',
    '-verify_hostname',
    'localhost',
    '-CAfile',
    file('ca.crt'),
    '-verify_return_error',
    version,
    '-brief',
  ];
  if (clientCert)
    args.push(
      '-cert',
      file(`${clientCert}.crt`),
      '-cert_chain',
      file(`${clientCert}.crt`),
      '-key',
      file(`${clientCert}.key`),
    );
  const client = spawnSync('openssl', args, { input: 'ping\n', encoding: 'utf8', timeout: 15_000 });
  await new Promise<void>((resolve) => {
    if (server.exitCode !== null) return resolve();
    const t = setTimeout(() => {
      server.kill();
      resolve();
    }, 5_000);
    server.on('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
  return { server: serverOut, client: client.stdout + client.stderr, clientStatus: client.status ?? -1 };
}

describe('mtls certificates in real openssl handshakes', () => {
  before(async () => {
    dir = tempDir();
    const ca = await CertificateAuthority.init({ home: path.join(dir, 'ca'), name: 'Interop' });
    const write = (name: string) => (i: Parameters<typeof writeIssued>[0]) => {
      writeIssued(i, { outDir: dir, name, bundlePem: ca.bundlePem });
    };
    await ca.issue(
      { profile: 'server', name: 'server', names: { dns: ['localhost'], ip: ['127.0.0.1'] } },
      write('server'),
    );
    await ca.issue(
      { profile: 'client', name: 'client', names: { spiffeId: 'spiffe://interop.test/ns/a/sa/client' } },
      write('client'),
    );
    await ca.issue(
      { profile: 'spiffe', name: 'svid', names: { spiffeId: 'spiffe://interop.test/ns/a/sa/svid' } },
      write('svid'),
    );
    await ca.close();
  });

  for (const version of ['-tls1_3', '-tls1_2'] as const) {
    it(`s_server -Verify 1 accepts an mtls client certificate (${version})`, async () => {
      const r = await handshake('client', version);
      assert.equal(r.clientStatus, 0, r.client);
      assert.match(r.client, /Verification: OK/);
      assert.match(r.server, /CN=client|CN = client/);
      assert.match(r.server, /Client certificate/i);
    });

    it(`s_server -Verify 1 rejects a server certificate offered as a client certificate (${version})`, async () => {
      const r = await handshake('server', version);
      assert.match(r.server, /verify error:num=26:unsuitable certificate purpose/);
      assert.doesNotMatch(r.server, /Shared ciphers|CIPHER is/);
    });
  }

  it('accepts an X.509-SVID as a client certificate, and refuses a client with no certificate', async () => {
    const svid = await handshake('svid', '-tls1_3');
    assert.equal(svid.clientStatus, 0, svid.client);
    const none = await handshake(undefined, '-tls1_3');
    assert.match(none.server, /peer did not return a certificate|certificate required/i);
  });
});
