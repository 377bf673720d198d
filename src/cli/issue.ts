import crypto from 'node:crypto';
import path from 'node:path';
import type { Command } from 'commander';
import { CertificateAuthority, checkCertName, type Issued, type IssueRequest } from '../ca/authority.js';
import { resolveCaHome } from '../ca/home.js';
import { writeIssued } from '../ca/output.js';
import { MtlsError } from '../errors.js';
import { readCertificates } from '../pki/certificate.js';
import { parseCsr } from '../pki/csr.js';
import { parseKeyType } from '../pki/keys.js';
import { parseSpiffeId } from '../pki/names.js';
import { OID } from '../pki/oid.js';
import { parseProfile, type LeafProfile } from '../pki/profiles.js';
import { relativeTime } from '../text/duration.js';
import { readInput, writeFileAtomic } from '../io/files.js';
import { collect, optionalDuration, optionalPassphrase, printJson } from './common.js';

interface OutputFlags {
  home?: string;
  validity?: string;
  keyType?: string;
  out: string;
  p12?: boolean;
  p12PasswordFile?: string;
  passphraseFile?: string;
  force?: boolean;
  json?: boolean;
}

/** The flags of every issuing command; `newKey`: the key is made here (not `sign`, where the requester keeps it). */
function withOutputFlags(cmd: Command, newKey = true): Command {
  cmd.option('--validity <duration>', 'lifetime, e.g. 90d, 24h', '90d');
  if (newKey)
    cmd.option('--key-type <type>', 'ec-p256 | ec-p384 | ed25519 | rsa-2048 | rsa-3072 | rsa-4096', 'ec-p256');
  cmd.option(
    '--out <dir>',
    newKey ? 'directory for NAME.crt, NAME.key and ca.crt' : 'directory for NAME.crt and ca.crt',
    '.',
  );
  if (newKey) {
    cmd
      .option('--p12', 'also write NAME.p12 (PKCS#12)')
      .option('--p12-password-file <file>', 'password for NAME.p12 (default: a random one, written to NAME.p12.pass)');
  }
  return cmd
    .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
    .option('--passphrase-file <file>', 'passphrase of the CA key, if it is encrypted')
    .option('--force', 'replace existing NAME.crt/NAME.key')
    .option('--json', 'print the result as JSON');
}

/** Issues and writes the files; the inventory record is committed only if every file was written. */
async function issueAndWrite(req: IssueRequest, o: OutputFlags): Promise<void> {
  if (o.p12PasswordFile && !o.p12) throw new MtlsError('USAGE', '--p12-password-file needs --p12');
  const validityMs = optionalDuration(o.validity, '--validity');
  const keyType = parseKeyType(o.keyType ?? 'ec-p256');
  const passphrase = optionalPassphrase(o.passphraseFile);
  let p12Password = optionalPassphrase(o.p12PasswordFile);
  let p12PasswordGenerated = false;
  if (o.p12 && p12Password === undefined) {
    p12Password = crypto.randomBytes(18).toString('base64url');
    p12PasswordGenerated = true;
  }
  const outDir = path.resolve(o.out);
  const authority = await CertificateAuthority.open(resolveCaHome(o.home), passphrase);
  try {
    let written: string[] = [];
    const issued = await authority.issue(
      { ...req, keyType, ...(validityMs !== undefined ? { validityMs } : {}) },
      (i: Issued) => {
        written = writeIssued(i, {
          outDir,
          name: req.name,
          bundlePem: authority.bundlePem,
          overwrite: o.force ?? false,
          ...(p12Password !== undefined ? { p12Password } : {}),
        });
        if (p12PasswordGenerated) {
          const passFile = path.join(outDir, `${req.name}.p12.pass`);
          writeFileAtomic(passFile, p12Password + '\n', 0o600);
          written.push(passFile);
        }
      },
    );
    report(issued, req.profile, written, o.json ?? false);
  } finally {
    await authority.close();
  }
}

function report(issued: Issued, profile: LeafProfile, written: string[], json: boolean): void {
  const r = issued.record;
  if (json) {
    return printJson({
      serial: r.serial,
      profile,
      subject: r.subject,
      sans: r.sans,
      spiffeId: r.spiffeId,
      notBefore: r.notBefore,
      notAfter: r.notAfter,
      fingerprint256: r.fingerprint256,
      files: written,
    });
  }
  console.log(
    `issued ${profile} certificate '${r.subject}' (serial ${r.serial}, expires ` +
      `${relativeTime(r.notAfter, new Date())})`,
  );
  if (r.sans.length) console.log(`  names:  ${r.sans.join(', ')}`);
  console.log(`  sha256: ${r.fingerprint256}`);
  for (const f of written)
    console.log(`  wrote:  ${f}${f.endsWith('.key') || f.endsWith('.p12') || f.endsWith('.pass') ? ' (0600)' : ''}`);
}

export function registerIssue(program: Command): void {
  const issue = program
    .command('issue')
    .description('issue a certificate with a new key')
    // Without a kind there is nothing to do: the usage and exit 2, not a silent 0.
    .action(() => {
      throw new MtlsError(
        'USAGE',
        "say what to issue: 'mtls issue server NAME --dns ...', 'mtls issue client " +
          "NAME' or 'mtls issue spiffe URI' (see mtls issue --help)",
      );
    });

  withOutputFlags(
    issue.command('server <name>').description('a TLS server certificate (serverAuth) for DNS names and IP addresses'),
  )
    .option('--dns <name>', 'DNS name (repeatable; *.example.org allowed)', collect, [])
    .option('--ip <address>', 'IP address (repeatable)', collect, [])
    .action(async (name: string, o: OutputFlags & { dns: string[]; ip: string[] }) => {
      if (o.dns.length + o.ip.length === 0) {
        throw new MtlsError(
          'USAGE',
          `give the server's names: --dns NAME and/or --ip ADDRESS (e.g. --dns ${name}.example.org)`,
        );
      }
      await issueAndWrite({ profile: 'server', name, names: { dns: o.dns, ip: o.ip } }, o);
    });

  withOutputFlags(
    issue.command('client <name>').description('a TLS client certificate (clientAuth), optionally with a SPIFFE ID'),
  )
    .option('--spiffe-id <uri>', 'SPIFFE ID, e.g. spiffe://example.org/ns/prod/sa/api')
    .option('--email <address>', 'email address (repeatable)', collect, [])
    .option('--dns <name>', 'DNS name (repeatable)', collect, [])
    .action(async (name: string, o: OutputFlags & { spiffeId?: string; email: string[]; dns: string[] }) => {
      await issueAndWrite(
        {
          profile: 'client',
          name,
          names: { dns: o.dns, email: o.email, ...(o.spiffeId !== undefined ? { spiffeId: o.spiffeId } : {}) },
        },
        o,
      );
    });

  withOutputFlags(
    issue.command('spiffe <uri>').description('an X.509-SVID: one SPIFFE ID, serverAuth + clientAuth, no CA'),
  )
    .option('--name <name>', 'file name (default: the last path segment of the SPIFFE ID)')
    .action(async (uri: string, o: OutputFlags & { name?: string }) => {
      const id = parseSpiffeId(uri);
      const name = o.name ?? id.segments.at(-1) ?? id.trustDomain;
      await issueAndWrite({ profile: 'spiffe', name, names: { spiffeId: uri } }, o);
    });
}

export function registerRenew(program: Command): void {
  program
    .command('renew <cert>')
    .description('a new certificate and key with the same names, profile and lifetime, replacing CERT and its key')
    .option('--validity <duration>', 'lifetime (default: the one CERT had)')
    .option('--key-type <type>', 'ec-p256 | ec-p384 | ed25519 | rsa-2048 | rsa-3072 | rsa-4096', 'ec-p256')
    .option('--home <dir>', 'CA home (default $MTLS_HOME, else ~/.mtls)')
    .option('--passphrase-file <file>', 'passphrase of the CA key, if it is encrypted')
    .option('--json', 'print the result as JSON')
    .action(async (certFile: string, o: Omit<OutputFlags, 'out'>) => {
      const [cert] = readCertificates(readInput(certFile, 'certificate'), certFile);
      const name = checkCertName(path.basename(certFile).replace(/\.(crt|pem|cer)$/i, ''));
      const authority = await CertificateAuthority.open(resolveCaHome(o.home), optionalPassphrase(o.passphraseFile));
      let req: IssueRequest;
      try {
        req = await authority.renewRequest(cert!, name);
      } finally {
        await authority.close();
      }
      // Renewing means replacing: NAME.crt and NAME.key are swapped in (atomically) where CERT is.
      await issueAndWrite(req, { ...o, out: path.dirname(path.resolve(certFile)), force: true });
    });
}

export function registerSign(program: Command): void {
  withOutputFlags(
    program
      .command('sign <csr>')
      .description('issue a certificate for a PKCS#10 request (the key stays with the requester)'),
    false,
  )
    .requiredOption('--profile <profile>', 'server | client | spiffe')
    .option('--name <name>', 'file name and CN (default: the CN of the request)')
    .action(async (csrFile: string, o: OutputFlags & { profile: string; name?: string }) => {
      const profile = parseProfile(o.profile);
      const csr = parseCsr(readInput(csrFile, 'CSR'), `CSR ${csrFile}`);
      if (csr.requestsCa)
        throw new MtlsError(
          'CSR_REFUSED',
          `refused: CSR ${csrFile} asks for a CA certificate (basicConstraints CA:TRUE); ` +
            `this CA issues leaf certificates only`,
        );
      const cn = csr.subject.filter((a) => a.oid === OID.commonName).at(-1)?.value;
      const name = checkCertName(o.name ?? cn ?? '');
      const san = csr.san;
      const uris = san?.uri ?? [];
      if (uris.length > 1)
        throw new MtlsError(
          'CSR_REFUSED',
          `refused: CSR ${csrFile} asks for ${uris.length} URIs; a certificate carries at most one SPIFFE ID`,
        );
      if ((san?.other.length ?? 0) + (san?.directory.length ?? 0) > 0)
        throw new MtlsError(
          'CSR_REFUSED',
          `refused: CSR ${csrFile} asks for name types this CA does not issue ` +
            `(${[...(san?.other ?? []), ...(san?.directory.length ? ['directoryName'] : [])].join(', ')})`,
        );
      if (profile === 'server' && (san?.dns.length ?? 0) + (san?.ip.length ?? 0) === 0) {
        throw new MtlsError(
          'CSR_REFUSED',
          `refused: CSR ${csrFile} names no DNS name or IP address (subjectAltName), which a server certificate ` +
            `needs; make the request with them, e.g. openssl req -new -addext 'subjectAltName=DNS:host.example.org' ...`,
        );
      }
      const names = {
        dns: san?.dns ?? [],
        ip: san?.ip ?? [],
        email: san?.email ?? [],
        ...(uris[0] !== undefined ? { spiffeId: uris[0] } : {}),
      };
      await issueAndWrite({ profile, name, names, publicKey: csr.publicKey }, o);
    });
}
