import type { Command } from 'commander';

/** What `mtls COMMAND --help` ends with: commands people type, as `step` shows them. */
export const EXAMPLES: Record<string, string[]> = {
  ca: ['mtls ca init --name "Acme Internal" --trust-domain acme.internal', 'mtls ca list --expiring 7d'],
  'ca init': [
    'mtls ca init --name "Acme Internal" --trust-domain acme.internal',
    'mtls ca init --home /etc/acme-ca --permit-dns acme.internal --permit-ip 10.0.0.0/8 --passphrase-file ca.pass',
  ],
  'ca install': ['mtls ca install', 'mtls ca install --no-nss --home /etc/acme-ca'],
  'ca uninstall': ['mtls ca uninstall'],
  'ca list': ['mtls ca list', 'mtls ca list --expiring 30d --json'],
  'ca ocsp': ['mtls ca ocsp --listen 127.0.0.1:9080', 'mtls ca ocsp --listen 0.0.0.0:9080 --home /etc/acme-ca'],
  'ca serve': [
    'mtls ca serve --listen 0.0.0.0:9443 --dns ca.acme.internal --admin spiffe://acme.internal/ops/admin',
    'mtls ca serve --renew-grace 1h --max-validity 7d',
  ],
  'ca token': [
    'mtls ca token billing --spiffe-id spiffe://acme.internal/ns/prod/sa/billing --validity 24h',
    'mtls ca token api --dns api.acme.internal --ip 10.0.0.7 --ttl 15m',
  ],
  'ca policy': ['mtls ca policy', 'mtls ca policy --json'],
  'ca policy set': [
    'mtls ca policy set --profile spiffe --default-validity 24h --max-validity 7d --spiffe "spiffe://acme.internal/ns/*/sa/*"',
    'mtls ca policy set --profile server --dns svc.acme.internal --ip 10.0.0.0/8 --max-validity 30d',
    'mtls ca policy set --profile client --any-names',
  ],
  'ca bootstrap': ['mtls ca bootstrap --ca-url https://ca.acme.internal:9443 --fingerprint 3f2a...c1 --out ca.crt'],
  agent: [
    'mtls agent --ca-url https://ca.acme.internal:9443 --root ca.crt --token-file billing.token --out /etc/billing/tls',
    'mtls agent --ca-url https://ca.acme.internal:9443 --root ca.crt --out certs --name api --exec "systemctl reload nginx"',
    'mtls agent --ca-url https://ca.acme.internal:9443 --root ca.crt --out certs --name api --once',
  ],
  'ca crl': ['mtls ca crl', 'mtls ca crl --out /srv/www/crl.pem --next-update 6h', 'mtls ca crl --out int.crl --der'],
  revoke: [
    'mtls revoke certs/api.crt --reason keyCompromise',
    'mtls revoke 4f1c2a9e0d3b --reason superseded --at 2026-11-30T08:00Z',
  ],
  issue: [
    'mtls issue server api --dns api.acme.internal --ip 10.0.0.7',
    'mtls issue client billing --spiffe-id spiffe://acme.internal/ns/prod/sa/billing',
  ],
  'issue server': [
    'mtls issue server api --dns api.acme.internal --dns localhost --ip 127.0.0.1',
    'mtls issue server web --dns "*.acme.internal" --validity 30d --out certs/',
  ],
  'issue client': [
    'mtls issue client billing --spiffe-id spiffe://acme.internal/ns/prod/sa/billing',
    'mtls issue client alice --email alice@acme.internal --p12',
  ],
  'issue spiffe': ['mtls issue spiffe spiffe://acme.internal/ns/prod/sa/api --validity 24h'],
  sign: [
    'openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout api.key -subj /CN=api ' +
      '-addext subjectAltName=DNS:api.acme.internal -out api.csr',
    'mtls sign api.csr --profile server',
  ],
  renew: ['mtls renew api.crt', 'mtls renew certs/billing.crt --validity 24h --home /etc/acme-ca'],
  inspect: [
    'mtls inspect api.crt',
    'mtls inspect api.crt --key api.key',
    'mtls inspect alice.p12 --password-file alice.p12.pass --json',
  ],
  verify: [
    'mtls verify api.crt --purpose server --dns api.acme.internal',
    'mtls verify billing.crt --ca ca.crt --purpose client --spiffe-id "spiffe://acme.internal/ns/*/sa/billing"',
    'mtls verify legacy.crt --ca old-root.crt --untrusted old-int.crt --profile compat',
  ],
  serve: [
    'mtls serve --allow "spiffe://acme.internal/ns/prod/*"',
    'mtls serve --http --port 9443 --cert api.crt --key api.key --allow spiffe://acme.internal/ns/prod/sa/billing',
    'mtls serve --crl ~/.mtls/crl/crl.pem --allow "spiffe://acme.internal/ns/prod/*"',
    'mtls serve --cert api.crt --key api.key --crl-url http://ca:9080/crl/intermediate.crl --crl-soft-fail --admin 127.0.0.1:9902',
  ],
  connect: [
    'mtls connect localhost:8443 --cert billing.crt --key billing.key',
    'mtls connect api.acme.internal:443 --cert billing.crt --key billing.key --http /healthz --json',
  ],
  trace: [
    'mtls trace localhost:8443 --cert billing.crt --key billing.key',
    'mtls trace --listen 127.0.0.1:9443 --cert api.crt --key api.key --allow "spiffe://acme.internal/**" --count 1',
  ],
  doctor: [
    'mtls doctor api.acme.internal:443 --cert billing.crt --key billing.key',
    'mtls doctor localhost:8443 --json',
  ],
  proxy: [
    'mtls proxy server --listen :8443 --target 127.0.0.1:8080 --cert api.crt --key api.key --allow "spiffe://acme.internal/ns/prod/*"',
    'mtls proxy --config proxy.yaml',
  ],
  'proxy server': [
    'mtls proxy server --listen :8443 --target 127.0.0.1:8080 --cert api.crt --key api.key --allow spiffe://acme.internal/ns/prod/sa/billing',
    'mtls proxy server --http --listen :8443 --target unix:/run/app.sock --cert api.crt --key api.key ' +
      '--allow "spiffe://acme.internal/**" --admin 127.0.0.1:9090',
  ],
  'proxy client': [
    'mtls proxy client --listen 127.0.0.1:15001 --target api.acme.internal:8443 --cert billing.crt ' +
      '--key billing.key --expect-spiffe-id spiffe://acme.internal/ns/prod/sa/api',
  ],
  demo: ['mtls demo'],
};

const pathOf = (c: Command): string => (c.parent && c.parent.parent ? `${pathOf(c.parent)} ${c.name()}` : c.name());

/** Adds the examples to every command that has some; returns the commands that have none (a test keeps it empty). */
export function addExamples(program: Command): string[] {
  const missing: string[] = [];
  const walk = (c: Command) => {
    for (const sub of c.commands) {
      const key = pathOf(sub);
      const lines = EXAMPLES[key];
      if (lines) sub.addHelpText('after', `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`);
      else missing.push(key);
      walk(sub);
    }
  };
  walk(program);
  return missing;
}
