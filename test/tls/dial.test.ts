/**
 * The one client dialer (issue 17) and what rides on it: SNI by default (issue 16: connect and trace sent none),
 * one deadline, the answered/handshook facts a verdict needs, and the TLS 1.3 confirm window.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { dial, DialError } from '../../src/tls/dial.js';
import { clientTlsOptions, serverTlsOptions } from '../../src/tls/options.js';
import { close, freePort, listen, testPki, type TestPki } from '../helpers/endpoints.js';
import { mtls } from '../helpers/pki.js';
import { startProcess, stopAll } from '../helpers/process.js';

let pki: TestPki;
const servers: net.Server[] = [];
before(async () => {
  pki = await testPki();
  await pki.issue({ profile: 'server', name: 'default', names: { dns: ['default.example'] } });
});
after(async () => {
  stopAll();
  await Promise.all(servers.map(close));
  await pki.ca.close();
});

/** A TLS server that records the SNI of each connection, then does `then` with it. */
async function sniServer(
  then: (s: tls.TLSSocket) => void = (s) => s.end('hello\n'),
): Promise<{ port: number; names: (string | false | null)[] }> {
  const names: (string | false | null)[] = [];
  const srv = tls.createServer(
    { ...serverTlsOptions(pki.creds('server')), requestCert: false, rejectUnauthorized: false },
    (s) => {
      names.push(s.servername);
      then(s);
    },
  );
  servers.push(srv);
  return { port: await listen(srv), names };
}

describe('dial', () => {
  it('sends the host as SNI, and no SNI for an IP literal (RFC 6066 3)', async () => {
    const s = await sniServer();
    const opts = clientTlsOptions(undefined, pki.bundle);
    // Read the greeting before closing: the server has then seen the whole handshake.
    const greeted = async (servername?: string, host = '127.0.0.1') => {
      const d = await dial({
        host,
        port: s.port,
        ...(servername ? { servername } : {}),
        verify: 'strict',
        tls: opts,
        timeoutMs: 5000,
      });
      await once(d.socket, 'data');
      d.socket.destroy();
    };
    await greeted(undefined, 'localhost');
    await greeted();
    await greeted('localhost');
    assert.deepEqual(s.names, ['localhost', false, 'localhost']);
  });

  it('a server that accepts TCP and never answers fails at the deadline, unanswered', async () => {
    const silent = net.createServer((c) => c.on('error', () => undefined));
    servers.push(silent);
    const port = await listen(silent);
    const t0 = Date.now();
    const err = await dial({ host: '127.0.0.1', port, verify: 'observe', tls: {}, timeoutMs: 300 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof DialError);
    assert.equal(err.code, 'ETIMEDOUT');
    assert.equal(err.answered, false);
    assert.equal(err.handshook, false);
    assert.ok(Date.now() - t0 < 3000);
  });

  it('TLS 1.3: a close inside the confirm window fails the dial after our handshake, with the chain seen', async () => {
    const s = await sniServer((sock) => setTimeout(() => sock.destroy(), 50));
    const err = await dial({
      host: 'localhost',
      port: s.port,
      verify: 'strict',
      tls: clientTlsOptions(undefined, pki.bundle),
      timeoutMs: 5000,
      confirmMs: 400,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof DialError, String(err));
    assert.equal(err.handshook, true);
    assert.equal(err.answered, true);
    assert.equal(err.protocol, 'TLSv1.3');
    assert.equal(err.chain.length > 0, true);
    // Without the window the same server looks fine: that is why connect waits.
    (
      await dial({
        host: 'localhost',
        port: s.port,
        verify: 'strict',
        tls: clientTlsOptions(undefined, pki.bundle),
        timeoutMs: 5000,
      })
    ).socket.destroy();
  });
});

describe('connect and trace send SNI (issue 16)', () => {
  it('against openssl s_server that picks its certificate by SNI, they see the one for the name', async () => {
    const port = await freePort();
    // s_server sends no intermediate with -cert2: trust it directly (what is tested here is the name).
    const trust = path.join(pki.dir, 'trust-with-intermediate.pem');
    fs.writeFileSync(trust, fs.readFileSync(pki.file('ca.crt'), 'utf8') + pki.ca.intermediatePem);
    // Default certificate for default.example; the one for localhost only when the client asks for localhost.
    await startProcess(
      'openssl',
      [
        's_server',
        '-accept',
        String(port),
        '-naccept',
        '4',
        '-cert',
        pki.file('default.crt'),
        '-key',
        pki.file('default.key'),
        '-servername',
        'localhost',
        '-cert2',
        pki.file('server.crt'),
        '-key2',
        pki.file('server.key'),
        '-ign_eof',
      ],
      /ACCEPT/,
    );
    const connect = mtls(['connect', `localhost:${port}`, '--ca', trust]);
    assert.equal(connect.status, 0, connect.stdout + connect.stderr);
    assert.match(connect.stdout, /DNS:localhost/);
    const trace = mtls(['trace', `localhost:${port}`, '--ca', trust, '--color', 'never']);
    assert.match(trace.stdout, /SNI: localhost/);
    assert.match(trace.stdout, /verdict: trusted, valid now, valid for 'localhost'/);
  });
});
