import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { before, describe, it } from 'node:test';
import { clientTlsOptions } from '../../src/tls/options.js';
import { freePort, listen, testPki, until, type TestPki, credentialArgs } from '../helpers/endpoints.js';
import { BIN, ROOT, tempDir } from '../helpers/pki.js';
import { startProxy, trackServers } from '../helpers/process.js';

let pki: TestPki;
const servers = trackServers(() => pki.ca.close());
before(async () => {
  pki = await testPki();
});

/** A backend: /partial sends headers and half a body, then drops the connection; /hold never answers; else 200. */
async function backend(): Promise<number> {
  const s = http.createServer((req, res) => {
    req.resume();
    req.socket.on('error', () => undefined);
    if (req.url === '/partial') {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('x'.repeat(100));
      setTimeout(() => req.socket.destroy(), 50);
    } else if (req.url === '/upload') {
      req.on('end', () => res.end('got it'));
    } else if (req.url !== '/hold') {
      res.end('ok');
    }
  });
  servers.push(s);
  return listen(s);
}

async function httpProxy(target: number, extra: string[] = []) {
  const [port, admin] = await Promise.all([freePort(), freePort()]);
  await startProxy([
    'server',
    '--listen',
    `127.0.0.1:${port}`,
    '--target',
    `127.0.0.1:${target}`,
    ...credentialArgs(pki),
    '--http',
    '--allow',
    'trust-domain:test.example',
    '--admin',
    `127.0.0.1:${admin}`,
    ...extra,
  ]);
  return { port, metrics: async () => (await fetch(`http://127.0.0.1:${admin}/metrics`)).text() };
}

/** Writes `text` over mTLS as `who`; resolves with what came back and how long until the connection closed. */
function exchange(port: number, who: string, text: string, maxMs = 15_000): Promise<{ data: string; ms: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const c = tls.connect(
      { host: '127.0.0.1', port, ...clientTlsOptions(pki.creds(who), pki.bundle), servername: 'localhost' },
      () => c.write(text),
    );
    let data = '';
    c.setEncoding('latin1');
    c.on('data', (d: string) => (data += d));
    c.on('error', () => undefined);
    const stop = setTimeout(() => c.destroy(), maxMs);
    c.on('close', () => {
      clearTimeout(stop);
      resolve({ data, ms: Date.now() - t0 });
    });
  });
}

const get = (p: string) => `GET ${p} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n`;

describe('HTTP mode never waits for ever (issue 19.3, 19.4)', () => {
  it('a target that closes mid-body: the client connection is cut at once, counted', async () => {
    const p = await httpProxy(await backend());
    const r = await exchange(p.port, 'billing', get('/partial'));
    assert.match(r.data, /^HTTP\/1\.1 200 /);
    assert.ok(r.ms < 5000, `the client waited ${r.ms} ms`);
    assert.ok(r.data.length < 1000, 'the answer is visibly incomplete');
    assert.match(await p.metrics(), /mtls_proxy_http_refused_total\{listener="server",reason="backend_aborted"\} 1/);
  });

  it('head, body and target deadlines answer 408, 408 and 504, counted', async () => {
    const p = await httpProxy(await backend(), [
      '--request-head-timeout',
      '500ms',
      '--body-idle-timeout',
      '500ms',
      '--backend-timeout',
      '500ms',
    ]);
    const head = await exchange(p.port, 'billing', 'GET / HTTP/1.1\r\nHost: b\r\n');
    assert.match(head.data, /^HTTP\/1\.1 408 /);
    assert.ok(head.ms < 5000, `head: ${head.ms} ms`);
    const body = await exchange(p.port, 'billing', 'POST /upload HTTP/1.1\r\nHost: b\r\nContent-Length: 100\r\n\r\nx');
    assert.match(body.data, /^HTTP\/1\.1 408 [^]*request body sent nothing for 500 ms/);
    assert.ok(body.ms < 5000, `body: ${body.ms} ms`);
    const slow = await exchange(p.port, 'billing', get('/hold'));
    assert.match(slow.data, /^HTTP\/1\.1 504 [^]*did not answer within 500 ms/);
    const m = await p.metrics();
    for (const reason of ['head_timeout', 'body_timeout', 'backend_timeout'])
      assert.match(m, new RegExp(`mtls_proxy_http_refused_total\\{listener="server",reason="${reason}"\\} 1`));
  });
});

describe('one identity cannot take the target for itself (issue 19.5)', () => {
  it('past maxRequestsPerIdentity waiting requests it gets 503; another identity is still served', async () => {
    const p = await httpProxy(await backend(), ['--max-requests-per-identity', '4']);
    const held = Array.from({ length: 6 }, () => exchange(p.port, 'billing', get('/hold'), 4000));
    await new Promise((r) => setTimeout(r, 1000));
    const other = await exchange(p.port, 'web', get('/fast'));
    assert.match(other.data, /^HTTP\/1\.1 200 [^]*ok$/, 'web is served while billing waits');
    const results = await Promise.all(held);
    assert.equal(
      results.filter((r) => /^HTTP\/1\.1 503 /.test(r.data)).length,
      2,
      results.map((r) => r.data.slice(0, 20)).join(' | '),
    );
    assert.match(await p.metrics(), /mtls_proxy_http_refused_total\{listener="server",reason="identity_busy"\} 2/);
  });
});

describe('a unix socket path another process listens on is not taken over (issue 19.6)', () => {
  it('refused while live; a stale socket file of a dead process is replaced', async () => {
    const sock = path.join(tempDir('mtls-unix-listen-'), 'proxy.sock');
    const live = net.createServer((c) => {
      c.on('error', () => undefined);
      c.end('still mine\n');
    });
    servers.push(live);
    await new Promise<void>((r) => live.listen(sock, r));
    const args = [
      'proxy',
      'server',
      '--listen',
      `unix:${sock}`,
      '--target',
      '127.0.0.1:1',
      ...credentialArgs(pki),
      '--allow',
      'any',
    ];
    const r = await new Promise<{ code: number | null; err: string }>((resolve) => {
      const c = spawn(process.execPath, [BIN, ...args], { cwd: ROOT });
      let err = '';
      c.stderr.on('data', (d) => (err += d));
      const kill = setTimeout(() => c.kill('SIGKILL'), 20_000);
      c.on('exit', (code) => {
        clearTimeout(kill);
        resolve({ code, err });
      });
    });
    assert.notEqual(r.code, 0);
    assert.match(r.err, /another process is listening there/);
    const still = await new Promise<string>((resolve) => {
      const c = net.connect(sock);
      let d = '';
      c.on('data', (x) => (d += x));
      c.on('error', (e) => (d += `error ${e.message}`));
      c.on('close', () => resolve(d));
    });
    assert.equal(still, 'still mine\n', 'the other service keeps its socket');
    // A process that died leaves its socket file behind: that one is taken.
    const dead = path.join(path.dirname(sock), 'dead.sock');
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(dead)}, () => console.log('up'))`,
    ]);
    await new Promise((res) => child.stdout.once('data', res));
    child.kill('SIGKILL');
    await until(() => child.exitCode !== null || child.signalCode !== null, 5000, 'the child to die');
    assert.ok(fs.existsSync(dead));
    await startProxy([...args.slice(1, 3), `unix:${dead}`, ...args.slice(4)]);
  });
});

describe('proxy client: a failed upstream handshake is told by how far it got (issue 19)', () => {
  it('an upstream that closes after our ClientHello is not "rejected our certificate"', async () => {
    const upstream = net.createServer((s) => {
      s.once('data', () => s.destroy());
      s.on('error', () => undefined);
    });
    servers.push(upstream);
    const up = await listen(upstream);
    const port = await freePort();
    const p = await startProxy([
      'client',
      '--listen',
      `127.0.0.1:${port}`,
      '--target',
      `127.0.0.1:${up}`,
      ...credentialArgs(pki, 'billing'),
    ]);
    await new Promise<void>((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => c.write('hello'));
      c.on('error', () => undefined);
      c.on('close', () => resolve());
    });
    await until(() => /"event":"handshake-failed"/.test(p.output()), 5000, 'the failed upstream handshake');
    assert.doesNotMatch(p.output(), /PEER_CLOSED_AFTER_OUR_CERT/);
    assert.match(
      p.output(),
      /"code":"HANDSHAKE_FAILED"[^\n]*closed the connection after our ClientHello without answering it/,
    );
  });
});
