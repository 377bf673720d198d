import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { CertificateAuthority, type Issued } from '../ca/authority.js';
import { parseCertificate } from '../pki/certificate.js';
import { exportPrivateKey } from '../pki/keys.js';
import { formatDn } from '../pki/names.js';
import { oidName } from '../pki/oid.js';
import { verifyChain } from '../pki/verify.js';
import { certLabel } from '../pki/path-rules.js';
import { loadCredentials } from '../tls/credentials.js';
import { dial, DialError } from '../tls/dial.js';
import { traceConnection } from '../trace/connect.js';
import { renderTrace } from '../trace/render.js';
import { useColor } from '../text/style.js';

const TRUST_DOMAIN = 'demo.mtlskit.dev';

/** The secure defaults every demo endpoint uses: TLS 1.2 minimum, ECDHE suites only. */
const CIPHERS = 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305';

interface Outcome {
  ok: boolean;
  lines: string[];
}

/**
 * `mtls demo`: a throwaway CA, a server and clients, real mTLS handshakes over loopback with Node's tls, and
 * what each side proved and saw. Returns the exit status (0 when every handshake ended as expected).
 */
export async function runDemo(print: (line: string) => void = console.log): Promise<number> {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'mtls-demo-'));
  try {
    print(`1. A certificate authority (throwaway, in ${home})`);
    const ca = await CertificateAuthority.init({
      home: path.join(home, 'ca'),
      name: 'Demo',
      trustDomain: TRUST_DOMAIN,
      permitDns: ['localhost'],
      permitIp: ['127.0.0.0/8'],
    });
    print(`   root         '${certLabel(ca.root)}' (self-signed, CA:TRUE; its key could now go offline)`);
    print(
      `   intermediate '${certLabel(ca.intermediate)}' (CA:TRUE, pathlen:0, name ` +
        `constraints: localhost, 127.0.0.0/8, spiffe://${TRUST_DOMAIN})`,
    );

    print('2. Certificates');
    const server = await ca.issue({
      profile: 'server',
      name: 'demo-server',
      names: { dns: ['localhost'], ip: ['127.0.0.1'] },
    });
    const alice = await ca.issue({
      profile: 'client',
      name: 'payments-api',
      names: { spiffeId: `spiffe://${TRUST_DOMAIN}/ns/payments/sa/api` },
    });
    const bob = await ca.issue({
      profile: 'client',
      name: 'web-frontend',
      names: { spiffeId: `spiffe://${TRUST_DOMAIN}/ns/web/sa/frontend` },
    });
    for (const i of [server, alice, bob]) {
      print(
        `   ${i.record.profile.padEnd(6)} '${certLabel(i.certificate)}' ${i.record.sans.join(', ')} ` +
          `(EKU ${(i.certificate.extKeyUsage ?? []).map(oidName).join(', ')})`,
      );
    }

    const ctx = (i: Issued) => ({ cert: i.chainPem, key: exportPrivateKey(i.privateKey!), ca: ca.bundlePem });
    const seen: string[] = [];
    const srv = tls.createServer(
      {
        // We judge the client ourselves (rejectUnauthorized: false) so the reason for a refusal is not lost:
        // Node's own rejection destroys the socket and reports only "socket hang up".
        ...ctx(server),
        requestCert: true,
        rejectUnauthorized: false,
        minVersion: 'TLSv1.2',
        ciphers: CIPHERS,
        ecdhCurve: 'X25519:P-256',
      },
      (socket) => {
        // Never getPeerX509Certificate(): see docs/endpoints.md, Node pitfalls.
        const raw = socket.getPeerCertificate().raw;
        if (!raw) {
          seen.push('server refused the client: it sent no certificate (TLS alert certificate_required)');
          socket.destroy();
          return;
        }
        const leaf = parseCertificate(raw);
        const verdict = verifyChain(leaf, {
          trustAnchors: [ca.root],
          intermediates: [ca.intermediate],
          at: new Date(),
          purpose: 'client',
          spiffeId: `spiffe://${TRUST_DOMAIN}/**`,
        });
        if (!socket.authorized || !verdict.valid) {
          const why = verdict.problems.map((p) => p.message).join('; ') || 'no reason from mtlskit';
          seen.push(
            `server refused '${certLabel(leaf)}': ${why} (OpenSSL: ${String(socket.authorizationError ?? 'ok')})`,
          );
          socket.destroy();
          return;
        }
        seen.push(
          `server saw '${certLabel(leaf)}' ${verdict.spiffeId?.uri ?? ''} issued by ` +
            `'${formatDn(leaf.issuer)}': chain, validity, clientAuth EKU and SPIFFE ID verified`,
        );
        socket.end(`hello ${verdict.spiffeId?.uri ?? 'stranger'}\n`);
      },
    );
    srv.on('tlsClientError', (err) =>
      seen.push(`server refused the handshake: ${(err as { reason?: string }).reason ?? err.message}`),
    );
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;

    let failures = 0;
    const run = async (title: string, opts: tls.ConnectionOptions, expectOk: boolean) => {
      seen.length = 0;
      const o = await handshake(port, opts);
      print(title);
      for (const l of o.lines) print(`   ${l}`);
      for (const l of seen) print(`   ${l}`);
      const asExpected = o.ok === expectOk;
      if (!asExpected) failures++;
      print(
        `   => ${o.ok ? 'mutual TLS established' : 'no connection'} (${asExpected ? 'as expected' : 'NOT as expected'})`,
      );
    };
    const client = (i: Issued) => ({ ...ctx(i), servername: 'localhost', minVersion: 'TLSv1.2' as const });
    await run(`3. Handshake: payments-api -> server`, client(alice), true);
    await showTrace(print, port, ca.bundlePem, client(alice));
    await run(`4. Handshake: web-frontend -> server`, client(bob), true);
    await run('5. Handshake without a client certificate', { ca: ca.bundlePem, servername: 'localhost' }, false);
    await run(
      '6. Handshake with the server certificate used as a client certificate (wrong EKU)',
      client(server),
      false,
    );
    srv.close();
    await ca.close();
    print(
      failures === 0
        ? 'demo finished: every handshake ended as expected'
        : `demo finished with ${failures} unexpected result(s)`,
    );
    return failures === 0 ? 0 : 1;
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
}

/** The first handshake again, decrypted and told step by step by `mtls trace` (secrets masked). */
async function showTrace(
  print: (line: string) => void,
  port: number,
  ca: string,
  c: { cert: string; key: string },
): Promise<void> {
  const report = await traceConnection({
    host: '127.0.0.1',
    port,
    ca,
    expect: { servername: 'localhost' },
    credentials: loadCredentials({ cert: c.cert, key: c.key, ca }),
  });
  print(
    '   The same handshake, decrypted by mtls trace (our own decoder and RFC 8446 key schedule, fed by the key log):',
  );
  for (const l of renderTrace(report, { color: useColor('auto') }))
    print(`     ${l.length > 160 ? l.slice(0, 157) + '...' : l}`);
}

/** One client handshake, reporting each step; TLS 1.3 rejections arrive after secureConnect, so wait for data or close. */
async function handshake(port: number, opts: tls.ConnectionOptions): Promise<Outcome> {
  const lines: string[] = [];
  let socket: tls.TLSSocket;
  try {
    const d = await dial({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      verify: 'strict',
      tls: opts,
      timeoutMs: 10_000,
    });
    socket = d.socket;
    const subject = d.chain[0] ? formatDn(d.chain[0].subject) : '?';
    const eph = socket.getEphemeralKeyInfo() as { type?: string; name?: string; size?: number } | null;
    lines.push(
      `client: ClientHello sent (TLS 1.2-1.3, ECDHE suites); server answered with ` +
        `${socket.getProtocol()} ${socket.getCipher().standardName}`,
    );
    lines.push(
      `client: server proved '${subject}' (chain to our CA verified, name 'localhost' ` +
        `matches, CertificateVerify signed by its key)`,
    );
    lines.push(
      `client: key exchange ${eph?.name ?? eph?.type ?? '?'} (${eph?.size ?? '?'} ` +
        `bits); traffic keys derived with HKDF from the shared secret`,
    );
    lines.push(
      `client: ${opts.cert ? 'sent our certificate and a CertificateVerify signature over the handshake' : 'had no certificate to send'}`,
    );
  } catch (err) {
    const cause = (err instanceof DialError ? err.cause : err) as NodeJS.ErrnoException & { reason?: string };
    lines.push(`client: connection failed: ${cause.reason ?? cause.code ?? cause.message}`);
    return { ok: false, lines };
  }
  return new Promise((resolve) => {
    let data = '';
    let settled = false;
    const done = (ok: boolean) => {
      if (!settled) {
        settled = true;
        resolve({ ok, lines });
      }
    };
    socket.on('data', (d: Buffer) => {
      data += d.toString();
    });
    socket.on('end', () => {
      if (data) lines.push(`client: server said "${data.trim()}"`);
      done(data.length > 0);
    });
    socket.on('error', (err) => {
      const reason = (err as { reason?: string }).reason ?? (err as NodeJS.ErrnoException).code ?? err.message;
      lines.push(`client: connection failed: ${reason}`);
      done(false);
    });
    socket.on('close', () => {
      if (!data)
        lines.push(
          'client: the server closed the connection without a word (TLS 1.3: the rejection ' +
            'comes after our handshake looked done)',
        );
      done(data.length > 0);
    });
  });
}
