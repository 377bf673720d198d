import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MtlsError, messageOf, type MtlsErrorCode } from '../errors.js';
import { exchange } from '../io/http-exchange.js';
import { checkPrivateFile, readInput, stageFiles } from '../io/files.js';
import { readCertificates, type Certificate } from '../pki/certificate.js';
import { createCsr } from '../pki/csr.js';
import { buildName } from '../pki/names.js';
import { generateKeyPair } from '../pki/keys.js';
import { OID } from '../pki/oid.js';
import { encodePem } from '../pki/pem.js';
import { checkCertName } from '../ca/authority.js';
import { loadCredentials, type Credentials } from '../tls/credentials.js';
import { verifyChain } from '../pki/verify.js';
import { clientTlsOptions } from '../tls/options.js';

/**
 * `mtls agent` (issue 15): obtains a certificate from `mtls ca serve` and keeps it fresh. It renews at about two
 * thirds of the certificate's lifetime (with jitter), re-reads its files every cycle (someone may have replaced
 * them), writes key, chain and bundle atomically, then runs the hook. When the CA is down it retries with capped
 * back-off and keeps the working certificate; it never deletes it. A refusal that retrying cannot mend (expired
 * past the grace window, revoked, a spent token) ends it with an error instead of a silent loop.
 */

export type AgentHealth = 'ok' | 'expiring' | 'expired';

export interface AgentOptions {
  /** https://host:port of `mtls ca serve`. */
  caUrl: string;
  /** PEM of the CA's root bundle (e.g. from `mtls ca bootstrap`). */
  root: string;
  /** Directory for NAME.crt (leaf then intermediate), NAME.key (0600) and ca.crt. Give this or `keeper`. */
  outDir?: string;
  /** Where the certificate is kept instead of outDir (RenewingCredentials keeps it in memory). */
  keeper?: AgentKeeper;
  /** File name; default the token's subject, else the current certificate's CN. */
  name?: string;
  /** An enrollment token, used when there is no certificate yet. */
  token?: string;
  /** A current certificate and key to renew with, when NAME.crt/NAME.key are not in outDir yet. */
  certFile?: string;
  keyFile?: string;
  /** Shell command run after each new certificate is written (e.g. `systemctl reload nginx`). */
  exec?: string;
  /** Signal sent to `pid` after each new certificate is written. */
  signal?: { name: NodeJS.Signals; pid: number };
  /** Renew now, whatever the certificate's age (`--force`). */
  force?: boolean;
  /** Where in the lifetime to renew (default 2/3). */
  renewAt?: number;
  log?: (event: Record<string, unknown>) => void;
  /** Longest wait between attempts while the CA is unreachable. Default 5 minutes. */
  maxBackoffMs?: number;
  /** Its timers do not keep the process alive (an agent inside another program, which decides when to exit). */
  unref?: boolean;
}

/** Credentials an agent holds, and since when (the lifetime that counts for renewal starts there). */
export type Held = Credentials & { since: Date };

/** Where an agent keeps its certificate and key: files (FileKeeper, `mtls agent`) or memory (RenewingCredentials). */
export interface AgentKeeper {
  /** The credentials kept now, read again each cycle (someone may have replaced them), trusting `root`. */
  load(name: string, root: string): Held | undefined;
  /** Keeps new credentials, checked by the agent (the chain is for this key and verifies against the root). */
  save(name: string, fresh: Credentials, root: string): void;
  /** The name when neither --name nor a token gives one (e.g. the current certificate's CN). */
  defaultName?(): string | undefined;
  /** Where it keeps them, for messages. */
  readonly where: string;
}

/** The last CN of `leaf`, or undefined. */
function commonName(leaf: Certificate): string | undefined {
  return leaf.subject.filter((a) => a.oid === OID.commonName).at(-1)?.value;
}

/**
 * Files in a directory, as `issue` writes them: NAME.crt (leaf then intermediate), NAME.key (0600) and ca.crt,
 * written atomically. Before the first renewal, a certificate and key from elsewhere (--cert/--key) may be used.
 */
export class FileKeeper implements AgentKeeper {
  constructor(
    private readonly dir: string,
    private readonly given?: { certFile: string; keyFile: string },
  ) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  }

  get where(): string {
    return this.dir;
  }

  private files(name: string) {
    return {
      cert: path.join(this.dir, `${name}.crt`),
      key: path.join(this.dir, `${name}.key`),
      ca: path.join(this.dir, 'ca.crt'),
    };
  }

  load(name: string, root: string): Held | undefined {
    const f = this.files(name);
    for (const s of [{ certFile: f.cert, keyFile: f.key }, ...(this.given ? [this.given] : [])]) {
      if (!fs.existsSync(s.certFile) || !fs.existsSync(s.keyFile)) continue;
      checkPrivateFile(s.keyFile, 'key');
      const creds = loadCredentials({
        cert: readInput(s.certFile, 'certificate'),
        key: readInput(s.keyFile, 'key'),
        ca: root,
      });
      return { ...creds, since: fs.statSync(s.certFile).mtime };
    }
    return undefined;
  }

  save(name: string, fresh: Credentials, root: string): void {
    const f = this.files(name);
    stageFiles(
      [
        { path: f.key, data: fresh.key, mode: 0o600 },
        { path: f.cert, data: fresh.cert, mode: 0o644 },
        { path: f.ca, data: root, mode: 0o644 },
      ],
      { overwrite: true },
    ).commit();
  }

  defaultName(): string | undefined {
    if (!this.given) return undefined;
    return commonName(readCertificates(fs.readFileSync(this.given.certFile), this.given.certFile)[0]!);
  }
}

/** Credentials kept in this process only: nothing is written anywhere. */
export class MemoryKeeper implements AgentKeeper {
  readonly where = 'memory';
  constructor(
    private held: Held | undefined,
    private readonly onSave: (fresh: Credentials) => void = () => {},
  ) {}

  load(): Held | undefined {
    return this.held;
  }

  save(_name: string, fresh: Credentials): void {
    this.held = { ...fresh, since: new Date() };
    this.onSave(fresh);
  }

  defaultName(): string | undefined {
    return this.held && commonName(this.held.leaf);
  }
}

export interface AgentState {
  health: AgentHealth;
  serial?: string;
  notAfter?: Date;
  renewAt?: Date;
  lastError?: string;
}

/** Codes of a refusal the CA will repeat however often it is asked: the agent stops on them. */
const FINAL: ReadonlySet<string> = new Set<MtlsErrorCode>([
  'CERT_EXPIRED',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'RENEWAL_REFUSED',
  'TOKEN_INVALID',
  'TOKEN_EXPIRED',
  'TOKEN_SPENT',
  'NAME_NOT_GRANTED',
  'CSR_REFUSED',
  'NAME_NOT_PERMITTED',
]);

const REQUEST_TIMEOUT_MS = 15_000;
const MAX_ANSWER_BYTES = 256 * 1024;

export class Agent {
  private state: AgentState = { health: 'expired' };
  private readonly log: (e: Record<string, unknown>) => void;
  private tokenUsed = false;
  private stopped = false;
  private wake?: () => void;
  private timer?: NodeJS.Timeout;
  private readonly keeper: AgentKeeper;

  constructor(private readonly o: AgentOptions) {
    this.log = o.log ?? (() => {});
    readCertificates(Buffer.from(o.root), 'the CA root bundle (--root)');
    const given = o.certFile && o.keyFile ? { certFile: o.certFile, keyFile: o.keyFile } : undefined;
    if (o.keeper) this.keeper = o.keeper;
    else if (o.outDir) this.keeper = new FileKeeper(o.outDir, given);
    else throw new MtlsError('USAGE', 'an agent needs --out DIR: where it writes the certificate and key');
  }

  get status(): AgentState {
    const s = { ...this.state };
    const now = Date.now();
    if (s.notAfter && s.renewAt)
      s.health = now >= s.notAfter.getTime() ? 'expired' : now >= s.renewAt.getTime() ? 'expiring' : 'ok';
    return s;
  }

  /** The name the files carry: --name, else the token's subject, else the given certificate's CN. */
  private nameOf(): string {
    if (this.o.name) return checkCertName(this.o.name);
    if (this.o.token) {
      const sub = tokenSubject(this.o.token);
      if (sub) return checkCertName(sub);
    }
    const cn = this.keeper.defaultName?.();
    if (cn) return checkCertName(cn);
    throw new MtlsError('USAGE', 'give --name NAME: the files are written as NAME.crt and NAME.key');
  }

  /**
   * When `leaf` is due for renewal: at `renewAt` (2/3) of its lifetime, less up to 5% of it (fixed per certificate).
   * The lifetime counts from when the certificate came (`since`, its file's time) if that is after its notBefore:
   * the CA backdates notBefore for clock skew, which would otherwise eat a short certificate's life.
   */
  renewTime(leaf: Certificate, since?: Date): Date {
    const start = Math.max(leaf.notBefore.getTime(), Math.min(since?.getTime() ?? 0, leaf.notAfter.getTime()));
    const life = leaf.notAfter.getTime() - start;
    const jitter = (crypto.createHash('sha256').update(leaf.der).digest().readUInt16BE(0) / 65535) * 0.05 * life;
    return new Date(start + life * (this.o.renewAt ?? 2 / 3) - jitter);
  }

  /**
   * One cycle: enroll when there is no certificate, renew when it is due (or forced). Returns what it did. Throws
   * an MtlsError when the CA refused for good, a plain Error when it could not be reached.
   */
  async cycle(force = this.o.force ?? false): Promise<'enrolled' | 'renewed' | 'fresh'> {
    const name = this.nameOf();
    const creds = this.keeper.load(name, this.o.root);
    if (creds) this.track(creds.leaf, creds.since);
    if (!creds) {
      if (!this.o.token || this.tokenUsed)
        throw new MtlsError(
          'USAGE',
          `no certificate in ${this.keeper.where} (${name}.crt) and no enrollment token; pass --token (mtls ca token ${name})`,
        );
      await this.obtain(name, '/v1/sign', undefined);
      this.tokenUsed = true;
      return 'enrolled';
    }
    if (!force && Date.now() < this.renewTime(creds.leaf, creds.since).getTime()) return 'fresh';
    await this.obtain(name, '/v1/renew', creds);
    return 'renewed';
  }

  private track(leaf: Certificate, since: Date): void {
    this.state = {
      ...this.state,
      serial: leaf.serialHex,
      notAfter: leaf.notAfter,
      renewAt: this.renewTime(leaf, since),
    };
  }

  /** Asks the CA for a certificate for a new key (sign with the token, or renew over mTLS), then installs it. */
  private async obtain(name: string, route: '/v1/sign' | '/v1/renew', creds: Credentials | undefined): Promise<void> {
    const { privateKey } = generateKeyPair('ec-p256');
    const subject = buildName([{ oid: OID.commonName, value: name }]);
    const csrPem = encodePem('CERTIFICATE REQUEST', createCsr(privateKey, subject));
    const body = Buffer.from(
      JSON.stringify(route === '/v1/sign' ? { csr: csrPem, token: this.o.token } : { csr: csrPem }),
    );
    const url = new URL(route, this.o.caUrl);
    let answer;
    try {
      answer = await exchange(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': body.length },
        body,
        timeoutMs: REQUEST_TIMEOUT_MS,
        maxBytes: MAX_ANSWER_BYTES,
        tls: clientTlsOptions(creds, this.o.root),
      });
    } catch (err) {
      throw new Error(`the CA at ${this.o.caUrl} ${(err as Error).message}`);
    }
    let json: { certificate?: unknown; ca?: unknown; error?: { code?: unknown; message?: unknown } };
    try {
      json = JSON.parse(answer.body.toString('utf8')) as typeof json;
    } catch {
      throw new Error(`the CA at ${this.o.caUrl} answered HTTP ${answer.status} without JSON`);
    }
    if (answer.status !== 201) {
      const code = String(json.error?.code ?? '');
      const message = `the CA refused (${code || `HTTP ${answer.status}`}): ${String(json.error?.message ?? '')}`;
      if (FINAL.has(code)) throw new MtlsError(code as MtlsErrorCode, message);
      throw new Error(message);
    }
    if (typeof json.certificate !== 'string')
      throw new Error(`the CA at ${this.o.caUrl} answered without a certificate`);
    const chainPem = json.certificate;
    // Checked before anything is written: the chain is for our new key and verifies against the root we were given
    // (--root, which is what ca.crt holds: never a root the answer names).
    const fresh = loadCredentials({ cert: chainPem, key: privateKey, ca: this.o.root });
    const verdict = verifyChain(fresh.leaf, {
      trustAnchors: fresh.trustAnchors,
      intermediates: fresh.chain.slice(1),
      at: new Date(),
    });
    if (!verdict.valid)
      throw new MtlsError(
        'CERT_UNTRUSTED',
        `the CA at ${this.o.caUrl} answered with a certificate that does not verify against --root ` +
          `(${verdict.problems[0]?.message ?? 'no path'}); is --root this CA's root?`,
      );
    this.keeper.save(name, fresh, this.o.root);
    this.track(fresh.leaf, new Date());
    this.state.lastError = undefined;
    this.log({
      event: route === '/v1/sign' ? 'enrolled' : 'renewed',
      name,
      serial: fresh.leaf.serialHex,
      notAfter: fresh.leaf.notAfter.toISOString(),
      renewAt: this.state.renewAt?.toISOString(),
    });
    await this.hook();
  }

  /** Runs the hook after a new certificate: a command (60 s at most) and/or a signal. Failures are logged. */
  private async hook(): Promise<void> {
    if (this.o.signal) {
      try {
        process.kill(this.o.signal.pid, this.o.signal.name);
      } catch (err) {
        this.log({
          event: 'hook-failed',
          message: `signal ${this.o.signal.name} to ${this.o.signal.pid}: ${messageOf(err)}`,
        });
      }
    }
    if (!this.o.exec) return;
    const cmd = this.o.exec;
    await new Promise<void>((resolve) => {
      const child = spawn('/bin/sh', ['-c', cmd], { stdio: 'inherit' });
      const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('error', (err) => {
        clearTimeout(t);
        this.log({ event: 'hook-failed', message: `${cmd}: ${err.message}` });
        resolve();
      });
      child.on('exit', (code, signal) => {
        clearTimeout(t);
        if (code !== 0) this.log({ event: 'hook-failed', message: `${cmd} exited ${code ?? signal}` });
        resolve();
      });
    });
  }

  /**
   * Keeps the certificate fresh until stop(). Resolves when stopped; rejects with the CA's refusal when it refused
   * for good (the caller exits non-zero).
   */
  async run(): Promise<void> {
    let backoff = 1000;
    const max = this.o.maxBackoffMs ?? 5 * 60_000;
    let force = this.o.force ?? false;
    while (!this.stopped) {
      let waitMs: number;
      try {
        await this.cycle(force);
        force = false;
        backoff = 1000;
        const due = this.state.renewAt ? this.state.renewAt.getTime() - Date.now() : 60_000;
        // Wake at the renewal time, and at least every 10 minutes to re-read the files.
        waitMs = Math.min(Math.max(due, 1000), 10 * 60_000);
      } catch (err) {
        this.state.lastError = messageOf(err);
        if (err instanceof MtlsError) {
          this.log({ event: 'refused', code: err.code, message: err.message, health: this.status.health });
          throw err;
        }
        // The CA is unreachable or failing: keep the working certificate, try again later, and more often as its
        // end nears (a quarter of what is left, at least a second).
        const left = this.state.notAfter ? this.state.notAfter.getTime() - Date.now() : Infinity;
        waitMs = Math.min(backoff, max, Math.max(1000, left / 4));
        backoff = Math.min(backoff * 2, max);
        this.log({ event: 'retry', message: messageOf(err), inMs: waitMs, health: this.status.health });
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.timer = setTimeout(resolve, waitMs);
        if (this.o.unref) this.timer.unref();
      });
    }
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.wake?.();
  }
}

/** The `sub` of a JWT, read without checking it (the CA checks it): the default file name. */
function tokenSubject(token: string): string | undefined {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
      sub?: unknown;
    };
    return typeof payload.sub === 'string' ? payload.sub : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Credentials kept by an agent for this process alone (`mtls proxy server --ca-url --token`): it enrolls with the
 * token into a private directory (0700, removed by close()), then renews there for as long as the process runs;
 * the files' watchers (servers, the proxy) pick each renewal up. Rejects when the first enrollment is refused.
 */
export async function agentFiles(o: {
  caUrl: string;
  root: string;
  token: string;
  log?: (event: Record<string, unknown>) => void;
}): Promise<{ cert: string; key: string; ca: string; agent: Agent; close: () => void }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtls-agent-'));
  const close = () => fs.rmSync(dir, { recursive: true, force: true });
  try {
    const agent = new Agent({
      unref: true,
      caUrl: o.caUrl,
      root: o.root,
      outDir: dir,
      token: o.token,
      name: 'self',
      ...(o.log ? { log: o.log } : {}),
    });
    await agent.cycle();
    agent.run().catch((err: unknown) => {
      o.log?.({ event: 'agent-stopped', message: messageOf(err) });
    });
    return {
      cert: path.join(dir, 'self.crt'),
      key: path.join(dir, 'self.key'),
      ca: path.join(dir, 'ca.crt'),
      agent,
      close: () => (agent.stop(), close()),
    };
  } catch (err) {
    close();
    throw err;
  }
}
