import fs from 'node:fs';
import type { Command } from 'commander';
import { CertificateAuthority } from '../ca/authority.js';
import { resolveCaHome } from '../ca/home.js';
import { crlPaths, parseReason } from '../ca/revocation.js';
import { keepCrlsFresh } from '../ca/crl-freshness.js';
import { OcspResponder } from '../ca/ocsp-responder.js';
import { serveOcsp } from '../ca/ocsp-server.js';
import { formatAddress, parseAddress } from '../io/address.js';
import { formatDn } from '../pki/names.js';
import { MtlsError } from '../errors.js';
import { MAX_INPUT, readInput, writeFileAtomic } from '../io/files.js';
import { readCertificates } from '../pki/certificate.js';
import { readCrls } from '../pki/crl.js';
import { optionalDuration, optionalPassphrase, parseTime, printJson } from './common.js';

/** `mtls revoke` and `mtls ca crl` (issue 14): revocation recorded and published in one step. */
export function registerRevoke(program: Command, ca: Command): void {
  program
    .command('revoke <serial-or-cert>')
    .description('revoke a certificate of this CA and publish new CRLs (HOME/crl/) in the same step')
    .option(
      '--reason <reason>',
      'keyCompromise | superseded | cessationOfOperation | affiliationChanged | caCompromise | privilegeWithdrawn',
    )
    .option('--at <time>', 'when it was compromised or stopped being valid (ISO-8601; default now)')
    .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
    .option('--passphrase-file <file>', 'passphrase of the CA key, if it is encrypted')
    .option('--json', 'print the result as JSON')
    .action(
      async (
        target: string,
        o: { reason?: string; at?: string; home?: string; passphraseFile?: string; json?: boolean },
      ) => {
        const reason = parseReason(o.reason);
        const at = o.at === undefined ? undefined : parseTime(o.at, '--at');
        const what = fs.existsSync(target) ? readCertificates(readInput(target, 'certificate'), target)[0]! : target;
        const authority = await CertificateAuthority.open(resolveCaHome(o.home), optionalPassphrase(o.passphraseFile));
        try {
          const r = await authority.revoke(what, { reason, ...(at ? { at } : {}) });
          const published = crlPaths(authority.home).pem;
          const notice = authority.rootCrlNotice();
          if (notice) console.error(`mtls: warning: ${notice}`);
          if (o.json)
            return printJson({
              serial: r.serial,
              subject: r.subject,
              revokedAt: r.revokedAt?.toISOString(),
              reason: r.revocationReason,
              crl: published,
            });
          console.log(
            `revoked ${r.serial} (${r.subject}), reason ${r.revocationReason}, at ${r.revokedAt?.toISOString()}`,
          );
          console.log(`published ${published} (servers and proxies with --crl ${published} reload it)`);
        } finally {
          await authority.close();
        }
      },
    );

  ca.command('ocsp')
    .description('an OCSP responder (RFC 6960, RFC 5019 GET and POST) for this CA, which also serves its CRLs')
    .requiredOption('--listen <address>', 'HOST:PORT to listen on (e.g. 127.0.0.1:9080; the --url of ca init)')
    .option(
      '--engine <engine>',
      'native: answers it gave before (no nonce) come from a cache in native code, until the next revocation; ' +
        'node: every answer in Node (default: native when it is built)',
    )
    .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
    .option('--passphrase-file <file>', 'passphrase of the CA key, if it is encrypted')
    .action(async (o: { listen: string; engine?: string; home?: string; passphraseFile?: string }) => {
      const at = parseAddress(o.listen, '--listen');
      if (o.engine !== undefined && o.engine !== 'native' && o.engine !== 'node')
        throw new MtlsError('USAGE', `--engine ${o.engine}: give native or node`);
      const authority = await CertificateAuthority.open(resolveCaHome(o.home), optionalPassphrase(o.passphraseFile));
      const responder = new OcspResponder(authority);
      const signer = await responder.responder();
      const server = await serveOcsp(responder, authority.home, at, (m) => console.error(`mtls: ${m}`), {
        engine: o.engine === 'native' || o.engine === 'node' ? o.engine : 'auto',
      });
      // The CRLs it serves are published again at half their lifetime (and at once if there are none).
      const stopFresh = keepCrlsFresh(authority, {
        onPublish: (m) => console.log(`mtls: ${m}`),
        onError: (m) => console.error(`mtls: ${m}`),
      });
      console.log(
        `OCSP responder on ${formatAddress(at)} for '${formatDn(authority.intermediate.subject)}', signing as ` +
          `'OCSP responder' (serial ${signer.cert.serialHex}, until ${signer.cert.notAfter.toISOString()}); ` +
          `${server.engine} engine`,
      );
      await new Promise<void>((resolve) => {
        const stop = () => void server.close().then(resolve);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await stopFresh();
      await authority.close();
    });

  ca.command('crl')
    .description("publish fresh CRLs (root's and intermediate's) and write them where you want them")
    .option('--out <file>', 'also write them here (PEM, both CRLs; with --der, the intermediate CRL alone)')
    .option('--der', "with --out: DER, the intermediate CA's CRL only (one CRL per DER file)")
    .option('--next-update <duration>', "how long the intermediate CA's CRL stays valid", '24h')
    .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
    .option('--passphrase-file <file>', 'passphrase of the CA keys, if they are encrypted')
    .action(async (o: { out?: string; der?: boolean; nextUpdate: string; home?: string; passphraseFile?: string }) => {
      if (o.der && !o.out) throw new MtlsError('USAGE', '--der needs --out FILE');
      const lifetimeMs = optionalDuration(o.nextUpdate, '--next-update')!;
      if (lifetimeMs < 60_000)
        throw new MtlsError('USAGE', `--next-update ${o.nextUpdate} is too short; give 1m or more (e.g. 24h)`);
      const authority = await CertificateAuthority.open(resolveCaHome(o.home), optionalPassphrase(o.passphraseFile));
      try {
        const pem = await authority.publishCrl({ lifetimeMs });
        const notice = authority.rootCrlNotice();
        if (notice) console.error(`mtls: warning: ${notice}`);
        const crls = readCrls(readInput(pem, 'CRL file', MAX_INPUT.crl), pem);
        const intermediate = crls.at(-1)!;
        if (o.out) writeFileAtomic(o.out, o.der ? intermediate.der : fs.readFileSync(pem), 0o644);
        console.log(
          `published ${pem}: ${intermediate.revoked.size} revoked, next update ` +
            `${intermediate.nextUpdate?.toISOString()}${o.out ? `; written to ${o.out}` : ''}`,
        );
      } finally {
        await authority.close();
      }
    });
}
