import type { Command } from 'commander';
import { recordView } from '../ca/output.js';
import fs from 'node:fs';
import path from 'node:path';
import { CertificateAuthority } from '../ca/authority.js';
import { trustRoot } from '../ca/trust-store.js';
import { caPaths, resolveCaHome } from '../ca/home.js';
import { MtlsError } from '../errors.js';
import { parseKeyType } from '../pki/keys.js';
import { parseDuration, relativeTime, shortTime } from '../text/duration.js';
import { collect, optionalDuration, optionalPassphrase, printJson } from './common.js';

/** The `ca` subcommands that manage the CA itself, under `ca` (made by the caller, as other modules add to it). */
export function registerCa(ca: Command): void {
  ca.command('init')
    .description('create a root CA and an online intermediate (pathlen 0) in the CA home')
    .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
    .option('--name <name>', 'CA name, used in the CA certificates', 'mtlskit CA')
    .option('--key-type <type>', 'ec-p256 | ec-p384 | ed25519 | rsa-2048 | rsa-3072 | rsa-4096', 'ec-p256')
    .option('--trust-domain <domain>', 'SPIFFE trust domain: SPIFFE IDs outside it are refused (and name-constrained)')
    .option(
      '--permit-dns <domain>',
      'only issue DNS names in this domain (repeatable); adds name constraints',
      collect,
      [],
    )
    .option('--permit-ip <cidr>', 'only issue IP addresses in this range (repeatable)', collect, [])
    .option('--passphrase-file <file>', 'encrypt the CA keys with the passphrase in this file')
    .option('--root-validity <duration>', 'root lifetime', '3650d')
    .option('--intermediate-validity <duration>', 'intermediate lifetime', '1825d')
    .option(
      '--url <base>',
      'where revocation data is published (http://ca.internal:9080): certificates carry BASE/crl/... and BASE/ocsp',
    )
    .action(
      async (o: {
        home?: string;
        name: string;
        keyType: string;
        trustDomain?: string;
        permitDns: string[];
        permitIp: string[];
        passphraseFile?: string;
        rootValidity: string;
        intermediateValidity: string;
        url?: string;
      }) => {
        const home = resolveCaHome(o.home);
        const keyType = parseKeyType(o.keyType);
        const passphrase = optionalPassphrase(o.passphraseFile);
        const authority = await CertificateAuthority.init({
          home,
          name: o.name,
          keyType,
          permitDns: o.permitDns,
          permitIp: o.permitIp,
          rootValidityMs: parseDuration(o.rootValidity, '--root-validity'),
          intermediateValidityMs: optionalDuration(o.intermediateValidity, '--intermediate-validity'),
          ...(o.trustDomain !== undefined ? { trustDomain: o.trustDomain } : {}),
          ...(passphrase !== undefined ? { passphrase } : {}),
          ...(o.url !== undefined ? { url: o.url } : {}),
        });
        const p = caPaths(home);
        const now = new Date();
        console.log(`created CA '${o.name}' in ${home}`);
        console.log(
          `  root:          ${p.rootCert} (${authority.root.fingerprint256.slice(0, 23)}..., ` +
            `expires ${relativeTime(authority.root.notAfter, now)})`,
        );
        console.log(
          `  intermediate:  ${p.intermediateCert} (pathlen 0, expires ${relativeTime(authority.intermediate.notAfter, now)})`,
        );
        console.log(`  trust bundle:  ${p.bundle}`);
        console.log(`  keys:          ${p.rootKey}, ${p.intermediateKey} (0600${passphrase ? ', encrypted' : ''})`);
        if (o.trustDomain) console.log(`  trust domain:  ${o.trustDomain}`);
        if (authority.config.url)
          console.log(`  revocation:    ${authority.config.url}/crl/intermediate.crl, ${authority.config.url}/ocsp`);
        if (o.permitDns.length || o.permitIp.length)
          console.log(`  permitted:     ${[...o.permitDns, ...o.permitIp].join(', ')}`);
        console.log(
          `the root key signs a new intermediate and, once a year, the root's CRL (published now): move ` +
            `${p.rootKey} offline; mtls revoke and mtls ca crl say when the root's CRL needs it, a month ahead.`,
        );
        await authority.close();
      },
    );

  for (const install of [true, false]) {
    ca.command(install ? 'install' : 'uninstall')
      .description(
        install
          ? "trust the CA home's root in the system store (curl, OpenSSL), in the NSS databases of Chromium and Firefox, and print the line for Node"
          : 'remove the root that install added, from the same stores',
      )
      .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
      .option('--no-system', 'leave the system trust store alone')
      .option('--no-nss', 'leave the NSS databases alone')
      .option('--nss-db <dir>', 'this NSS database instead of the ones found (repeatable)', collect, [])
      .option('--json', 'machine-readable output')
      .action((o: { home?: string; system: boolean; nss: boolean; nssDb: string[]; json?: boolean }) => {
        const bundle = caPaths(resolveCaHome(o.home)).bundle;
        if (!fs.existsSync(bundle)) {
          throw new MtlsError(
            'CA_NOT_FOUND',
            `no CA at ${path.dirname(bundle)}; create one with 'mtls ca init' or pass --home`,
          );
        }
        const r = trustRoot(bundle, install, {
          system: o.system,
          nss: o.nss,
          ...(o.nssDb.length ? { nssDbs: o.nssDb } : {}),
        });
        if (o.json) return printJson(r);
        console.log(`system trust store: ${r.system}`);
        for (const n of r.nss) console.log(`NSS ${n.db}: ${n.result}`);
        if (o.nss && r.nss.length === 0) console.log('NSS: no Chromium or Firefox database found (nothing to do)');
        console.log(
          install ? `Node reads neither store; for Node programs: ${r.nodeLine}` : `Node: ${r.nodeLine} if you set it`,
        );
      });
  }

  ca.command('list')
    .description('list issued certificates from the inventory')
    .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
    .option('--expiring <duration>', 'only those that expire within this time (e.g. 7d), expired ones included')
    .option('--json', 'machine-readable output')
    .action(async (o: { home?: string; expiring?: string; json?: boolean }) => {
      const now = new Date();
      const window = optionalDuration(o.expiring, '--expiring');
      const authority = await CertificateAuthority.open(resolveCaHome(o.home));
      try {
        const rows = await authority.store.list(
          window === undefined ? {} : { notAfterBefore: new Date(now.getTime() + window) },
        );
        const view = rows.map((r) => recordView(r, now));
        if (o.json) return printJson(view);
        if (view.length === 0)
          return console.log(
            window === undefined ? 'no certificates issued yet' : `no certificates expire within ${o.expiring}`,
          );
        for (const v of view) {
          const when = new Date(v.notAfter);
          const revoked = v.revokedAt ? ` (${v.reason}, ${shortTime(new Date(v.revokedAt))})` : '';
          console.log(
            `${v.serial}  ${v.profile.padEnd(6)}  ${v.status.padEnd(7)}${revoked}  ${shortTime(when)} ` +
              `(${relativeTime(when, now)})  ${v.subject}  ${v.sans.join(' ')}`,
          );
        }
      } finally {
        await authority.close();
      }
    });
}
