import type { Command } from 'commander';
import { inspect, type CertificateReport, type InspectReport } from '../pki/inspect.js';
import { loadPrivateKey } from '../pki/keys.js';
import { MAX_INPUT, readInput } from '../io/files.js';
import { optionalPassphrase, printJson } from './common.js';

export function registerInspect(program: Command): void {
  program
    .command('inspect <file>')
    .description('show a certificate, chain, CSR, private key or PKCS#12 file (PEM or DER; - for stdin)')
    .option('--password-file <file>', 'password of a PKCS#12 file or passphrase of an encrypted key')
    .option('--key <file>', 'a private key to check against the certificates')
    .option('--json', 'machine-readable output')
    .action((file: string, o: { passwordFile?: string; key?: string; json?: boolean }) => {
      const password = optionalPassphrase(o.passwordFile);
      const extraKey =
        o.key === undefined ? undefined : loadPrivateKey(readInput(o.key, 'key file'), `key ${o.key}`, password);
      const report = inspect(readInput(file, 'file', MAX_INPUT.bundle), file === '-' ? 'stdin' : file, {
        now: new Date(),
        ...(password !== undefined ? { password } : {}),
        ...(extraKey ? { extraKey } : {}),
      });
      if (o.json) printJson(report);
      else process.stdout.write(renderInspect(report));
    });
}

function certText(c: CertificateReport, n: number): string[] {
  const lines = [`certificate ${n}: ${c.label}${c.isCa ? ' (CA)' : ''}${c.selfSigned ? ' (self-signed)' : ''}`];
  const row = (k: string, v: string) => lines.push(`  ${k.padEnd(18)}${v}`);
  row('subject', c.subject || '(empty)');
  row('issuer', c.issuer);
  row('serial', c.serial);
  row('validity', `${c.notBefore} to ${c.notAfter}: ${c.validity}`);
  if (c.spiffeId) row('SPIFFE ID', c.spiffeId);
  const sans = [
    ...c.san.dns.map((d) => `DNS:${d}`),
    ...c.san.ip.map((i) => `IP:${i}`),
    ...c.san.email.map((e) => `email:${e}`),
    ...c.san.uri.map((u) => `URI:${u}`),
  ];
  if (sans.length) row('names (SAN)', sans.join(', '));
  if (c.isCa) row('basic constraints', `CA:TRUE${c.pathLen !== undefined ? `, pathlen:${c.pathLen}` : ''}`);
  if (c.keyUsage.length) row('key usage', c.keyUsage.join(', '));
  if (c.extKeyUsage.length) row('ext. key usage', c.extKeyUsage.join(', '));
  if (c.nameConstraints) {
    if (c.nameConstraints.permitted.length) row('permitted names', c.nameConstraints.permitted.join(', '));
    if (c.nameConstraints.excluded.length) row('excluded names', c.nameConstraints.excluded.join(', '));
  }
  row('public key', c.publicKey);
  row('signature', c.signatureAlgorithm);
  row('SHA-256', c.fingerprints.sha256);
  row('SHA-1', c.fingerprints.sha1);
  for (const p of c.problems) row('problem', p);
  return lines;
}

export function renderInspect(r: InspectReport): string {
  const out: string[] = [`${r.source}: ${r.format}, ${r.objects.length} object${r.objects.length === 1 ? '' : 's'}`];
  r.objects.forEach((o, i) => {
    if (o.kind === 'certificate') out.push(...certText(o, i + 1));
    else if (o.kind === 'csr') {
      out.push(`certificate request ${i + 1}: signature valid`);
      out.push(`  ${'subject'.padEnd(18)}${o.subject || '(empty)'}`, `  ${'public key'.padEnd(18)}${o.publicKey}`);
      const sans = [
        ...o.san.dns.map((d) => `DNS:${d}`),
        ...o.san.ip.map((x) => `IP:${x}`),
        ...o.san.email.map((e) => `email:${e}`),
        ...o.san.uri.map((u) => `URI:${u}`),
      ];
      if (sans.length) out.push(`  ${'names (SAN)'.padEnd(18)}${sans.join(', ')}`);
      if (o.requestsCa) out.push(`  ${'asks for'.padEnd(18)}a CA certificate`);
    } else {
      const m = o.matchesCertificates.length
        ? `matches certificate ${o.matchesCertificates.map((x) => x + 1).join(', ')}`
        : 'matches no certificate here';
      out.push(`private key ${i + 1}: ${o.type}, ${m}`);
    }
  });
  if (r.chain) {
    out.push(`chain order: ${r.chain.ordered ? 'ok (each certificate is followed by its issuer)' : 'NOT in order'}`);
    for (const n of r.chain.notes) out.push(`  ${n}`);
  }
  return out.join('\n') + '\n';
}
