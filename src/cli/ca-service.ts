import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Command } from 'commander';
import { Agent } from '../agent/agent.js';
import { CertificateAuthority } from '../ca/authority.js';
import { resolveCaHome } from '../ca/home.js';
import { startCaService } from '../ca/service.js';
import { PROFILES, readIssuancePolicy, setProfileRules, type ProfileRules } from '../ca/policy.js';
import { DEFAULT_TOKEN_TTL_MS, makeToken, provisionerKey, tokenAudience } from '../ca/tokens.js';
import { MtlsError, messageOf } from '../errors.js';
import { formatAddress, parseAddress } from '../io/address.js';
import { exchange } from '../io/http-exchange.js';
import { readInput, writeFileAtomic } from '../io/files.js';
import { listenOn } from '../io/listen.js';
import { readCertificates } from '../pki/certificate.js';
import { isIpLiteral } from '../pki/names.js';
import { encodePem } from '../pki/pem.js';
import { checkLeafNames, parseProfile, type LeafProfile } from '../pki/profiles.js';
import { clientTlsOptions } from '../tls/options.js';
import { collect, optionalDuration, optionalPassphrase } from './common.js';
import { formatDuration } from '../text/duration.js';

/** `mtls ca serve`, `mtls ca token`, `mtls ca bootstrap` and `mtls agent` (issue 15). */
export function registerCaService(program: Command, ca: Command): void {
  ca.command('serve')
    .description('run the CA as an HTTPS API over mTLS: enrollment with tokens, renewal, revocation, OCSP and CRLs')
    .option('--listen <address>', 'HOST:PORT to listen on', '127.0.0.1:9443')
    .option(
      '--store <url>',
      "the inventory: postgres://USER@HOST:PORT/DB, shared by replicas (default: the home's inventory.db)",
    )
    .option('--dns <name>', "a DNS name of the service's own certificate (repeatable; default localhost)", collect, [])
    .option(
      '--ip <address>',
      "an IP address of the service's certificate (repeatable; default the listen address)",
      collect,
      [],
    )
    .option(
      '--admin <identity>',
      'an identity (SPIFFE ID or CN) that may revoke any certificate and list them',
      collect,
      [],
    )
    .option(
      '--renew-grace <duration>',
      'after expiry, how long the newest certificate of an identity may still renew',
      '0s',
    )
    .option('--max-validity <duration>', 'the longest lifetime a token or a renewal grants', '30d')
    .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
    .option('--passphrase-file <file>', 'passphrase of the CA key, if it is encrypted')
    .action(
      async (o: {
        listen: string;
        store?: string;
        dns: string[];
        ip: string[];
        admin: string[];
        renewGrace: string;
        maxValidity: string;
        home?: string;
        passphraseFile?: string;
      }) => {
        const at = parseAddress(o.listen, '--listen');
        const home = resolveCaHome(o.home);
        const store = o.store === undefined ? undefined : checkStore(o.store, home);
        const grace =
          o.renewGrace === '0s' || o.renewGrace === '0' ? 0 : optionalDuration(o.renewGrace, '--renew-grace')!;
        const authority = await CertificateAuthority.open(home, optionalPassphrase(o.passphraseFile), {
          ...(store ? { store } : {}),
        });
        const host = 'host' in at ? at.host : undefined;
        const ip = o.ip.length ? o.ip : host && isIpLiteral(host) && host !== '0.0.0.0' && host !== '::' ? [host] : [];
        const service = await startCaService(authority, {
          listen: at,
          dns: o.dns.length ? o.dns : ['localhost'],
          ip,
          admins: o.admin,
          renewGraceMs: grace,
          maxValidityMs: optionalDuration(o.maxValidity, '--max-validity'),
          log: (e) => process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...e })}\n`),
        });
        console.error(
          `mtls: CA service on https://${formatAddress(at)} for '${authority.config.name}' ` +
            `(root SHA-256 ${authority.root.fingerprint256}; clients bootstrap with ` +
            `'mtls ca bootstrap --ca-url https://${formatAddress(at)} --fingerprint ${authority.root.fingerprint256.replace(/:/g, '')}')`,
        );
        await new Promise<void>((resolve) => {
          const stop = () => void service.close().then(resolve);
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
        });
        await authority.close();
      },
    );

  ca.command('token <name>')
    .description('make a one-time enrollment token (printed on stdout) that grants one certificate for these names')
    .option(
      '--profile <profile>',
      'server | client | spiffe (default: spiffe with only --spiffe-id, server with --dns/--ip)',
    )
    .option('--spiffe-id <uri>', 'the SPIFFE ID it grants')
    .option('--dns <name>', 'a DNS name it grants (repeatable)', collect, [])
    .option('--ip <address>', 'an IP address it grants (repeatable)', collect, [])
    .option('--ttl <duration>', 'how long the token may be used (at most 24h)', '5m')
    .option('--validity <duration>', "the lifetime of the certificate it grants (default: the profile's, 24h)")
    .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
    .action(
      async (
        name: string,
        o: {
          profile?: string;
          spiffeId?: string;
          dns: string[];
          ip: string[];
          ttl: string;
          validity?: string;
          home?: string;
        },
      ) => {
        const profile: LeafProfile = o.profile
          ? parseProfile(o.profile)
          : o.spiffeId && !o.dns.length && !o.ip.length
            ? 'spiffe'
            : !o.spiffeId && (o.dns.length || o.ip.length)
              ? 'server'
              : usage(
                  o.spiffeId
                    ? 'a SPIFFE ID with DNS names or IPs needs --profile server or --profile client'
                    : 'a token grants names: give --spiffe-id, --dns or --ip',
                );
        const names = checkLeafNames(profile, {
          dns: o.dns,
          ip: o.ip,
          ...(o.spiffeId ? { spiffeId: o.spiffeId } : {}),
        });
        const home = resolveCaHome(o.home);
        // The policy is checked here too, so that a token the CA would refuse is never handed out.
        const rules = readIssuancePolicy(home).profile(profile);
        const denied = rules.violations(names);
        if (denied.length) throw new MtlsError('NAME_NOT_PERMITTED', `${denied[0]}; see mtls ca policy`);
        const validityMs = optionalDuration(o.validity, '--validity') ?? rules.defaultValidityMs;
        if (validityMs > rules.maxValidityMs)
          throw new MtlsError(
            'USAGE',
            `--validity ${o.validity} is longer than the ${profile} profile's maximum of ` +
              `${formatDuration(rules.maxValidityMs)} (mtls ca policy)`,
          );
        const authority = await CertificateAuthority.open(home);
        try {
          const token = await makeToken(
            provisionerKey(home, true),
            tokenAudience(authority.root.fingerprint256),
            { name, profile, names, validityMs },
            optionalDuration(o.ttl, '--ttl') ?? DEFAULT_TOKEN_TTL_MS,
          );
          process.stdout.write(`${token}\n`);
        } finally {
          await authority.close();
        }
      },
    );

  const policy = ca
    .command('policy')
    .description("show the CA service's issuance policy: lifetimes and the names tokens may grant, per profile")
    .option('--json', 'machine-readable output')
    .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
    .action((o: { json?: boolean; home?: string }) => {
      const p = readIssuancePolicy(resolveCaHome(o.home));
      if (o.json) return void process.stdout.write(JSON.stringify(p.file, null, 2) + '\n');
      for (const name of PROFILES) {
        const r = p.profile(name);
        const rules = p.file.profiles[name] ?? {};
        const names = [
          ...(rules.dns ?? []).map((d) => `dns:${d}`),
          ...(rules.ip ?? []).map((c) => `ip:${c}`),
          ...(rules.spiffe ?? []),
        ];
        process.stdout.write(
          `${name.padEnd(7)} validity ${formatDuration(r.defaultValidityMs)} (at most ${formatDuration(r.maxValidityMs)}); ` +
            `names: ${names.length ? names.join(' ') : 'any the CA may issue'}\n`,
        );
      }
    });
  policy
    .command('set')
    .description('change one profile of the issuance policy (the CA service applies it at its next request)')
    .requiredOption('--profile <profile>', 'server | client | spiffe')
    .option('--default-validity <duration>', 'the lifetime a token grants when it names none')
    .option('--max-validity <duration>', 'the longest lifetime a token or a renewal grants')
    .option(
      '--dns <domain>',
      'a domain tokens may grant names in (example.org: it and below; .example.org: below only)',
      collect,
      [],
    )
    .option('--ip <cidr>', 'a range tokens may grant addresses from (repeatable)', collect, [])
    .option(
      '--spiffe <pattern>',
      'a SPIFFE ID pattern tokens may grant, e.g. spiffe://acme.org/ns/*/sa/* (repeatable)',
      collect,
      [],
    )
    .option('--any-names', "remove the profile's name rules: any name the CA may issue")
    .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
    .action(
      (o: {
        profile: string;
        defaultValidity?: string;
        maxValidity?: string;
        dns: string[];
        ip: string[];
        spiffe: string[];
        anyNames?: boolean;
        home?: string;
      }) => {
        const profile = parseProfile(o.profile);
        if (!PROFILES.includes(profile)) usage(`--profile ${o.profile}: the policy covers ${PROFILES.join(', ')}`);
        const names = o.dns.length || o.ip.length || o.spiffe.length;
        if (o.anyNames && names) usage('--any-names removes the name rules: give it without --dns, --ip or --spiffe');
        const change: ProfileRules = {
          ...(o.defaultValidity !== undefined ? { defaultValidity: o.defaultValidity } : {}),
          ...(o.maxValidity !== undefined ? { maxValidity: o.maxValidity } : {}),
          ...(names || o.anyNames ? { dns: o.dns, ip: o.ip, spiffe: o.spiffe } : {}),
        };
        if (Object.keys(change).length === 0)
          usage('nothing to change: give --default-validity, --max-validity, --dns, --ip, --spiffe or --any-names');
        setProfileRules(resolveCaHome(o.home), profile, change);
        process.stderr.write(`issuance policy of ${profile} certificates changed (mtls ca policy shows it)\n`);
      },
    );

  ca.command('bootstrap')
    .description("fetch a CA service's root and trust it only if its SHA-256 fingerprint is the one given")
    .requiredOption('--ca-url <url>', 'https://HOST:PORT of mtls ca serve')
    .requiredOption(
      '--fingerprint <sha256>',
      "the root's SHA-256 fingerprint (hex, colons optional), from its operator",
    )
    .option('--out <file>', 'where to write the root (PEM)', 'ca.crt')
    .action(async (o: { caUrl: string; fingerprint: string; out: string }) => {
      const want = o.fingerprint.replace(/[:\s]/g, '').toLowerCase();
      if (!/^[0-9a-f]{64}$/.test(want))
        throw new MtlsError('USAGE', `--fingerprint '${o.fingerprint}' is not a SHA-256 fingerprint (64 hex digits)`);
      const base = caUrl(o.caUrl);
      // Not trusted yet: the root is fetched without verification and believed only if its fingerprint matches.
      const answer = await call(new URL('/v1/roots', base), { rejectUnauthorized: false });
      const roots = readCertificates(Buffer.from(String(answer['roots'] ?? '')), `the roots from ${base.origin}`);
      const root = roots.find((r) => r.fingerprint256.replace(/:/g, '').toLowerCase() === want);
      if (!root)
        throw new MtlsError(
          'CERT_UNTRUSTED',
          `the CA at ${base.origin} serves no root with fingerprint ${want} (it has ` +
            `${roots.map((r) => r.fingerprint256.replace(/:/g, '').toLowerCase()).join(', ')}); check the URL and the fingerprint`,
        );
      const rootPem = encodePem('CERTIFICATE', root.der);
      // And the service must hold a certificate under that root (not only serve a copy of it).
      await call(new URL('/healthz', base), clientTlsOptions(undefined, rootPem));
      writeFileAtomic(o.out, rootPem, 0o644);
      console.log(`trusted the root of ${base.origin} (SHA-256 ${root.fingerprint256}); written to ${o.out}`);
    });

  program
    .command('agent')
    .description('obtain a certificate from mtls ca serve and keep it renewed (files written atomically, then a hook)')
    .requiredOption('--ca-url <url>', 'https://HOST:PORT of mtls ca serve')
    .requiredOption('--root <file>', "the CA's root bundle (e.g. from mtls ca bootstrap)")
    .requiredOption('--out <dir>', 'directory for NAME.crt, NAME.key (0600) and ca.crt')
    .option('--name <name>', "file name (default: the token's name, else the certificate's CN)")
    .option('--token <token>', 'a one-time enrollment token (mtls ca token), when there is no certificate yet')
    .option('--token-file <file>', 'read the token from this file (not visible in ps, unlike --token)')
    .option('--cert <file>', 'a current certificate to renew with (when NAME.crt is not in --out yet)')
    .option('--key <file>', 'its key')
    .option('--exec <command>', 'run this shell command after each new certificate')
    .option('--signal <signal>', 'send this signal to --pid after each new certificate (e.g. SIGHUP)')
    .option('--pid <pid>', 'the process to signal')
    .option('--once', 'enroll or renew if due, then exit (for cron)')
    .option('--force', 'renew now, whatever the certificate age')
    .option('--health <address>', 'serve GET /healthz (ok | expiring | expired) on HOST:PORT')
    .action(
      async (o: {
        caUrl: string;
        root: string;
        out: string;
        name?: string;
        token?: string;
        tokenFile?: string;
        cert?: string;
        key?: string;
        exec?: string;
        signal?: string;
        pid?: string;
        once?: boolean;
        force?: boolean;
        health?: string;
      }) => {
        if (!!o.cert !== !!o.key) throw new MtlsError('USAGE', '--cert and --key go together');
        if (!!o.signal !== !!o.pid) throw new MtlsError('USAGE', '--signal and --pid go together');
        const pid = o.pid === undefined ? undefined : Number(o.pid);
        if (pid !== undefined && !(Number.isInteger(pid) && pid > 1))
          throw new MtlsError('USAGE', `--pid ${o.pid} is not a process id`);
        if (o.signal && !/^SIG[A-Z0-9]+$/.test(o.signal))
          throw new MtlsError('USAGE', `--signal ${o.signal} is not a signal name such as SIGHUP`);
        const token = o.tokenFile
          ? readInput(o.tokenFile, 'token', 16 * 1024)
              .toString('utf8')
              .trim()
          : o.token;
        const root = readInput(o.root, 'CA root bundle').toString('utf8');
        const agent = new Agent({
          caUrl: caUrl(o.caUrl).origin,
          root,
          outDir: o.out,
          ...(o.name ? { name: o.name } : {}),
          ...(token ? { token } : {}),
          ...(o.cert && o.key ? { certFile: o.cert, keyFile: o.key } : {}),
          ...(o.exec ? { exec: o.exec } : {}),
          ...(o.signal && pid ? { signal: { name: o.signal as NodeJS.Signals, pid } } : {}),
          ...(o.force ? { force: true } : {}),
          log: (e) => process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...e })}\n`),
        });
        if (o.once) {
          try {
            const did = await agent.cycle();
            const s = agent.status;
            console.error(
              `mtls: ${did}; certificate ${s.serial} valid until ${s.notAfter?.toISOString()}, renews from ${s.renewAt?.toISOString()}`,
            );
          } catch (err) {
            if (err instanceof MtlsError) throw err;
            throw new MtlsError('UNREACHABLE', messageOf(err));
          }
          return;
        }
        let healthServer: http.Server | undefined;
        if (o.health) {
          healthServer = http.createServer((req, res) => {
            const s = agent.status;
            const body = JSON.stringify({
              status: s.health,
              serial: s.serial ?? null,
              notAfter: s.notAfter?.toISOString() ?? null,
              renewAt: s.renewAt?.toISOString() ?? null,
              lastError: s.lastError ?? null,
            });
            res.writeHead(req.url === '/healthz' ? (s.health === 'expired' ? 503 : 200) : 404, {
              'content-type': 'application/json',
            });
            res.end(body);
          });
          await listenOn(healthServer, parseAddress(o.health, '--health'), 'the agent health endpoint');
        }
        const stop = () => agent.stop();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        try {
          await agent.run();
        } finally {
          healthServer?.close();
        }
      },
    );
}

function usage(message: string): never {
  throw new MtlsError('USAGE', message);
}

function caUrl(text: string): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new MtlsError('USAGE', `--ca-url '${text}' is not a URL; give https://HOST:PORT`);
  }
  if (u.protocol !== 'https:') throw new MtlsError('USAGE', `--ca-url must be https:// (the CA API is TLS only)`);
  return u;
}

/** The --store to open: a postgres:// URL, or undefined for the home's SQLite inventory (sqlite:PATH names it). */
function checkStore(store: string, home: string): string | undefined {
  if (store.startsWith('postgres://') || store.startsWith('postgresql://')) return store;
  const file = store.startsWith('sqlite:') ? store.slice('sqlite:'.length) : undefined;
  if (!file) throw new MtlsError('USAGE', `--store '${store}' is neither sqlite:PATH nor postgres://...`);
  const own = path.join(home, 'inventory.db');
  if (!fs.existsSync(file) || fs.realpathSync(file) !== fs.realpathSync(own))
    throw new MtlsError(
      'UNSUPPORTED',
      `--store ${store}: a SQLite inventory is the CA home's own (${own}); for replicas on several machines use postgres://`,
    );
  return undefined;
}

/** GET `url` and parse its JSON, with `tls` options; a CA error answer becomes its MtlsError-like line. */
async function call(url: URL, tls: import('node:tls').ConnectionOptions): Promise<Record<string, unknown>> {
  let answer;
  try {
    answer = await exchange(url, { timeoutMs: 10_000, maxBytes: 256 * 1024, tls });
  } catch (err) {
    throw new MtlsError('UNREACHABLE', `the CA at ${url.origin} ${(err as Error).message}`);
  }
  try {
    const json = JSON.parse(answer.body.toString('utf8')) as Record<string, unknown>;
    if (answer.status !== 200) throw new Error(`HTTP ${answer.status}`);
    return json;
  } catch (err) {
    throw new MtlsError(
      'UNREACHABLE',
      `the CA at ${url.origin} did not answer as mtls ca serve does (${messageOf(err)})`,
    );
  }
}
