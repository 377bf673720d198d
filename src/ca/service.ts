import crypto from 'node:crypto';
import type http from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import client from 'prom-client';
import { MtlsError, messageOf } from '../errors.js';
import { identityFromCertificate } from '../identity/identity.js';
import type { Address } from '../io/address.js';
import { listenOn } from '../io/listen.js';
import { parseCertificate, type Certificate } from '../pki/certificate.js';
import { parseReason } from './revocation.js';
import { parseCsr, type CertificateRequest } from '../pki/csr.js';
import { OID } from '../pki/oid.js';
import type { LeafNames, LeafProfile } from '../pki/profiles.js';
import type { InventoryRecord } from '../store/store.js';
import { parseDuration } from '../text/duration.js';
import { serverTlsOptions } from '../tls/options.js';
import type { CertificateAuthority, Issued } from './authority.js';
import { DAY } from './init.js';
import { recordView } from './output.js';
import { serviceCredentials } from './service-cert.js';
import { HttpError, readJson, sendError, sendJson } from './service-http.js';
import { keepCrlsFresh } from './crl-freshness.js';
import { OcspResponder, revocationRoutes } from './ocsp-responder.js';
import { checkToken, provisionerVerifier, tokenAudience } from './tokens.js';
import { watchedIssuancePolicy } from './policy.js';

/**
 * `mtls ca serve` (issue 15): the CA as an HTTPS JSON API. Callers authenticate with an enrollment token
 * (POST /v1/sign) or with their certificate over mTLS (renew, revoke, the inventory); the roots, the CRLs, OCSP and
 * the health endpoints are open. Every error is `{ "error": { "code", "message" } }` with a stable code; the API is
 * described in docs/ca-api.yaml. Replicas share one CA home and inventory.
 */

export interface CaServiceOptions {
  listen: Address;
  /** Names of the service's own certificate (issued and renewed by the CA itself). Default localhost. */
  dns?: string[];
  ip?: string[];
  /** Identities (SPIFFE ID, or CN) allowed to revoke any certificate and to list the inventory. */
  admins?: string[];
  /** After a certificate expires, how long its newest holder may still renew it. Default 0: not at all. */
  renewGraceMs?: number;
  /** The longest lifetime a token or a renewal may grant. Default 30 days. */
  maxValidityMs?: number;
  /** The service certificate's lifetime; it renews at two thirds of it. Default 7 days. */
  serviceValidityMs?: number;
  /** One structured event per request and per service-certificate renewal. Never key material. */
  log?: (event: Record<string, unknown>) => void;
}

export const DEFAULT_MAX_VALIDITY_MS = 30 * DAY;
const MAX_PAGE = 500;

export interface CaService {
  /** https://host:port */
  url: string;
  server: https.Server;
  registry: client.Registry;
  close(): Promise<void>;
}

/** The API's answer for an issued certificate. */
const issuedJson = (i: Issued, rootPem: string) => ({
  serial: i.certificate.serialHex,
  notBefore: i.certificate.notBefore.toISOString(),
  notAfter: i.certificate.notAfter.toISOString(),
  /** The leaf, then the intermediate. */
  certificate: i.chainPem,
  /** The root: the trust bundle. */
  ca: rootPem,
});

/** Starts the service; resolves once it listens. */
export async function startCaService(ca: CertificateAuthority, opts: CaServiceOptions): Promise<CaService> {
  const log = opts.log ?? (() => {});
  const maxValidity = opts.maxValidityMs ?? DEFAULT_MAX_VALIDITY_MS;
  const grace = opts.renewGraceMs ?? 0;
  const admins = new Set(opts.admins ?? []);
  const rootPem = ca.bundlePem;
  const audience = tokenAudience(ca.root.fingerprint256);
  const responder = new OcspResponder(ca);
  const provisioner = provisionerVerifier(ca.home);
  const watched = watchedIssuancePolicy(ca.home);
  /** The policy now; a policy file that does not compile refuses issuance (503) instead of meaning "no policy". */
  const policy = () => {
    try {
      return watched();
    } catch (err) {
      throw new HttpError(503, 'POLICY_INVALID', messageOf(err));
    }
  };
  /** The profile's rules, with the service's own ceiling (--max-validity) on top; refuses names it does not permit. */
  const rulesFor = (profile: LeafProfile, names: LeafNames, what: string) => {
    const rules = policy().profile(profile);
    const denied = rules.violations(names);
    if (denied.length)
      throw new MtlsError(
        'NAME_NOT_PERMITTED',
        `${what}: ${denied[0]}; the CA's issuance policy does not grant it (mtls ca policy)`,
      );
    return Math.min(rules.maxValidityMs, maxValidity);
  };
  const onError = (m: string) => log({ event: 'error', message: m });
  const routes = [revocationRoutes(responder, ca.home, onError), revocationRoutes(responder, ca.home, onError, '/v1')];

  const registry = new client.Registry();
  const requests = new client.Counter({
    name: 'mtls_ca_requests_total',
    help: 'API requests by route and HTTP status',
    labelNames: ['route', 'status'],
    registers: [registry],
  });
  const issuedCount = new client.Counter({
    name: 'mtls_ca_issued_total',
    help: 'Certificates issued through the API, by how: sign (enrollment token) or renew',
    labelNames: ['how'],
    registers: [registry],
  });
  const serviceNotAfter = new client.Gauge({
    name: 'mtls_ca_service_certificate_not_after_seconds',
    help: "When the service's own certificate expires (Unix time)",
    registers: [registry],
  });

  const names = { dns: opts.dns ?? (opts.ip?.length ? [] : ['localhost']), ip: opts.ip ?? [] };
  const ticketKeys = crypto.randomBytes(48);
  let service = await serviceCredentials(ca, names, opts.serviceValidityMs ?? 7 * DAY);
  serviceNotAfter.set(service.leaf.notAfter.getTime() / 1000);
  const tlsOptions = () => ({
    ...serverTlsOptions({ cert: service.cert, key: service.key, ca: rootPem }),
    // Asked for, not required: enrollment has no certificate yet; each route checks what it needs.
    rejectUnauthorized: false,
    // Kept across certificate renewals (setSecureContext would otherwise drop the tickets it issued).
    ticketKeys,
  });

  const server = https.createServer(tlsOptions(), (req, res) => {
    const started = Date.now();
    const route = routeName(req.url ?? '/');
    res.on('finish', () => {
      requests.inc({ route, status: String(res.statusCode) });
      log({ event: 'request', method: req.method, route, status: res.statusCode, ms: Date.now() - started });
    });
    for (const r of routes) if (r(req, res)) return;
    handle(req, res).catch((err: unknown) => sendError(res, err, onError));
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  server.maxConnections = 4096;
  server.on('clientError', (_err, socket) => socket.destroy());

  // The service certificate renews itself at two thirds of its lifetime; live connections keep theirs.
  let renewTimer: NodeJS.Timeout | undefined;
  const scheduleRenewal = () => {
    const c = service.leaf;
    const at = c.notBefore.getTime() + ((c.notAfter.getTime() - c.notBefore.getTime()) * 2) / 3;
    renewTimer = setTimeout(
      () => {
        serviceCredentials(ca, names, opts.serviceValidityMs ?? 7 * DAY)
          .then((next) => {
            service = next;
            server.setSecureContext(tlsOptions());
            serviceNotAfter.set(next.leaf.notAfter.getTime() / 1000);
            log({ event: 'service-certificate', serial: next.leaf.serialHex, notAfter: next.leaf.notAfter });
          })
          .catch((err: unknown) => onError(`renewing the service certificate: ${messageOf(err)}`))
          .finally(scheduleRenewal);
      },
      Math.min(Math.max(at - Date.now(), 60_000), 2 ** 31 - 1),
    );
    renewTimer.unref();
  };
  scheduleRenewal();

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://ca.invalid');
    const key = `${req.method} ${url.pathname}`;
    switch (key) {
      case 'GET /healthz':
        return sendJson(res, 200, { status: 'ok' });
      case 'GET /readyz': {
        const problems: string[] = [];
        try {
          await ca.store.count();
        } catch (err) {
          problems.push(`inventory: ${messageOf(err)}`);
        }
        try {
          ca.signingKey();
        } catch (err) {
          problems.push(messageOf(err));
        }
        try {
          policy();
        } catch (err) {
          problems.push(`issuance policy: ${messageOf(err)}`);
        }
        if (service.leaf.notAfter.getTime() < Date.now()) problems.push('the service certificate has expired');
        return sendJson(res, problems.length ? 503 : 200, {
          status: problems.length ? 'not ready' : 'ready',
          problems,
        });
      }
      case 'GET /metrics': {
        const text = await registry.metrics();
        res.writeHead(200, { 'content-type': registry.contentType });
        return void res.end(text);
      }
      case 'GET /v1/roots':
        return sendJson(res, 200, { roots: rootPem, fingerprints: [ca.root.fingerprint256] });
      case 'POST /v1/sign': {
        const body = await readJson(req);
        const token = await checkToken(body['token'], await provisioner(), audience);
        const max = rulesFor(token.profile, token.names, 'the token');
        if (token.validityMs > max)
          throw new MtlsError(
            'TOKEN_INVALID',
            `the token grants ${Math.round(token.validityMs / 3600e3)}h, more than this CA's maximum of ` +
              `${Math.round(max / 3600e3)}h for ${token.profile} certificates; make a token with a shorter --validity`,
          );
        const csr = csrOf(body);
        grantedNames(csr, token.names, 'its enrollment token');
        const issued = await ca.issue(
          {
            profile: token.profile,
            name: token.name,
            names: requested(token.names),
            validityMs: token.validityMs,
            publicKey: csr.publicKey,
            clampToIssuer: true,
          },
          undefined,
          { token: { jti: token.jti, expiresAt: token.expiresAt } },
        );
        issuedCount.inc({ how: 'sign' });
        log({ event: 'issued', how: 'sign', serial: issued.certificate.serialHex, name: token.name });
        return sendJson(res, 201, issuedJson(issued, rootPem));
      }
      case 'POST /v1/renew': {
        const { cert, record } = await caller(req, { renewing: true });
        const body = await readJson(req);
        const csr = csrOf(body);
        const san = cert.san ?? { dns: [], ip: [], email: [], uri: [] };
        grantedNames(csr, { dns: san.dns, ip: san.ip, email: san.email, uri: san.uri }, 'the certificate it renews');
        const name = cert.subject.filter((a) => a.oid === OID.commonName).at(-1)?.value ?? record.serial;
        const renewal = await ca.renewRequest(cert, name);
        const max = rulesFor(
          renewal.profile,
          { dns: san.dns, ip: san.ip, email: san.email, uri: san.uri },
          'the certificate it renews',
        );
        const issued = await ca.issue(
          {
            ...renewal,
            validityMs: Math.min(renewal.validityMs ?? max, max),
            publicKey: csr.publicKey,
            clampToIssuer: true,
          },
          undefined,
          { supersedes: record.serial },
        );
        issuedCount.inc({ how: 'renew' });
        log({ event: 'issued', how: 'renew', serial: issued.certificate.serialHex, renews: record.serial });
        return sendJson(res, 201, issuedJson(issued, rootPem));
      }
      case 'POST /v1/revoke': {
        const { cert, identity } = await caller(req);
        const body = await readJson(req);
        const serial = typeof body['serial'] === 'string' ? body['serial'].replace(/:/g, '').toLowerCase() : '';
        if (!/^[0-9a-f]{1,40}$/.test(serial))
          throw new MtlsError('BAD_INPUT', 'give the serial number (hex) of the certificate to revoke as "serial"');
        if (serial !== cert.serialHex && !isAdmin(identity))
          throw new MtlsError(
            'PEER_NOT_ALLOWED',
            `${identity} may revoke only its own certificate; an admin identity (--admin) may revoke any`,
          );
        const reason = parseReason(typeof body['reason'] === 'string' ? body['reason'] : undefined);
        const record = await ca.revoke(serial, { reason });
        log({ event: 'revoked', serial, reason, by: identity });
        return sendJson(res, 200, recordView(record, new Date()));
      }
      case 'GET /v1/certificates': {
        const { identity } = await caller(req);
        if (!isAdmin(identity))
          throw new MtlsError('PEER_NOT_ALLOWED', `${identity} is not an admin identity (--admin) of this CA`);
        return sendJson(res, 200, await listPage(url.searchParams));
      }
      default:
        throw new HttpError(
          404,
          'NOT_FOUND',
          `no route ${req.method} ${url.pathname}; see docs/ca-api.yaml for the API (POST /v1/sign, POST /v1/renew, ...)`,
        );
    }
  }

  function isAdmin(identity: string): boolean {
    return admins.has(identity);
  }

  /**
   * The caller's certificate, checked: presented (the handshake proved its key), issued by this CA (its exact DER
   * in the inventory, which is what trust in it means here: a server certificate renews too, although TLS verified
   * it for client use), not revoked, and valid now; an expired one only when `renewing` within the grace window,
   * and only if it is its identity's newest certificate.
   */
  async function caller(
    req: http.IncomingMessage,
    o: { renewing?: boolean } = {},
  ): Promise<{ cert: Certificate; record: InventoryRecord; identity: string }> {
    const socket = req.socket as TLSSocket;
    const raw = socket.getPeerCertificate(false)?.raw;
    if (!raw) throw new MtlsError('NO_CLIENT_CERT', 'this route needs your certificate over mTLS (--cert and --key)');
    const cert = parseCertificate(raw, 'client certificate');
    const record = await ca.store.get(cert.serialHex);
    const ours = record && record.fingerprint256 === cert.fingerprint256;
    if (!ours) throw new MtlsError('CERT_UNTRUSTED', `certificate serial ${cert.serialHex} was not issued by this CA`);
    if (record.status === 'revoked')
      throw new MtlsError('CERT_REVOKED', `certificate serial ${cert.serialHex} is revoked; enroll again with a token`);
    const now = Date.now();
    if (now < cert.notBefore.getTime())
      throw new MtlsError(
        'CERT_NOT_YET_VALID',
        `certificate serial ${cert.serialHex} is not valid yet; check the clock`,
      );
    if (now > cert.notAfter.getTime()) {
      if (!o.renewing || now - cert.notAfter.getTime() > grace)
        throw new MtlsError(
          'CERT_EXPIRED',
          `certificate serial ${cert.serialHex} expired at ${cert.notAfter.toISOString()}` +
            (o.renewing && grace ? ', past the renewal grace window' : '') +
            '; enroll again with a new token (mtls ca token)',
        );
      if (record.supersededBy)
        throw new MtlsError(
          'RENEWAL_REFUSED',
          `certificate serial ${cert.serialHex} has expired and was already renewed (by ${record.supersededBy}); ` +
            'only the newest certificate of an identity renews after expiry',
        );
    }
    const id = identityFromCertificate(cert);
    const cn = cert.subject.filter((a) => a.oid === OID.commonName).at(-1)?.value;
    return { cert, record, identity: id.spiffeId?.uri ?? cn ?? cert.serialHex };
  }

  async function listPage(q: URLSearchParams) {
    const asked = Number(q.get('limit') ?? 100);
    if (!Number.isInteger(asked) || asked < 1)
      throw new MtlsError('BAD_INPUT', `limit '${q.get('limit')}' is not a whole number from 1 to ${MAX_PAGE}`);
    const limit = Math.min(asked, MAX_PAGE);
    const status = q.get('status');
    if (status !== null && status !== 'valid' && status !== 'revoked')
      throw new MtlsError('BAD_INPUT', `status '${status}' is not valid or revoked`);
    const expiring = q.get('expiring');
    const after = q.get('after');
    let cursor;
    if (after) {
      const [ms, serial] = Buffer.from(after, 'base64url').toString('utf8').split(':');
      if (!ms || !serial || !/^\d+$/.test(ms) || !/^[0-9a-f]+$/.test(serial))
        throw new MtlsError('BAD_INPUT', "'after' is not a cursor this API returned (use 'next' as it came)");
      cursor = { notAfter: new Date(Number(ms)), serial };
    }
    const now = new Date();
    const rows = await ca.store.list({
      ...(status ? { status } : {}),
      ...(q.get('identity') ? { identity: q.get('identity')! } : {}),
      ...(expiring
        ? { notAfterBefore: new Date(now.getTime() + parseDuration(expiring, 'expiring')), notAfterAfter: now }
        : {}),
      ...(cursor ? { after: cursor } : {}),
      limit: limit + 1,
    });
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    return {
      items: page.map((r) => recordView(r, now)),
      next:
        rows.length > limit && last
          ? Buffer.from(`${last.notAfter.getTime()}:${last.serial}`).toString('base64url')
          : null,
    };
  }

  await listenOn(server, opts.listen, 'the CA service');
  // The CRLs it serves are published again at half their lifetime (and at once if there are none).
  const stopFresh = keepCrlsFresh(ca, { onPublish: (m) => log({ event: 'crl-published', message: m }), onError });
  const a = server.address();
  const port = typeof a === 'object' && a ? a.port : 0;
  const host = 'host' in opts.listen ? opts.listen.host : 'localhost';
  return {
    url: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    server,
    registry,
    close: async () => {
      clearTimeout(renewTimer);
      await stopFresh();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The routes the service answers (each in docs/ca-api.yaml; a test holds them together). */
export const API_ROUTES = [
  '/healthz',
  '/readyz',
  '/metrics',
  '/v1/roots',
  '/v1/sign',
  '/v1/renew',
  '/v1/revoke',
  '/v1/certificates',
  '/v1/crl/intermediate.crl',
  '/ocsp',
] as const;

function routeName(url: string): string {
  const p = url.split('?')[0]!;
  if (p.startsWith('/ocsp') || p.startsWith('/v1/ocsp')) return '/ocsp';
  if (p.startsWith('/crl/') || p.startsWith('/v1/crl/')) return '/v1/crl';
  return (API_ROUTES as readonly string[]).includes(p) ? p : 'other';
}

function csrOf(body: Record<string, unknown>): CertificateRequest {
  if (typeof body['csr'] !== 'string')
    throw new MtlsError('BAD_CSR', 'give the PEM certificate request as "csr" (the key stays with you)');
  const csr = parseCsr(Buffer.from(body['csr']), 'the CSR');
  if (csr.requestsCa) throw new MtlsError('CSR_REFUSED', 'the CSR asks for a CA certificate; this CA issues leaves');
  return csr;
}

/** Refuses a CSR that asks for a name the grant does not carry (NAME_NOT_GRANTED). */
function grantedNames(csr: CertificateRequest, grant: LeafNames, what: string): void {
  const san = csr.san;
  if (!san) return;
  const extra = [
    ...san.dns.filter((d) => !grant.dns.includes(d.toLowerCase())).map((d) => `DNS:${d}`),
    ...san.ip.filter((i) => !grant.ip.includes(i)).map((i) => `IP:${i}`),
    ...san.uri.filter((u) => !grant.uri.includes(u)).map((u) => `URI:${u}`),
    ...san.email.filter((e) => !grant.email.includes(e)).map((e) => `email:${e}`),
    ...(san.other.length || san.directory.length ? ['names of other types'] : []),
  ];
  if (extra.length)
    throw new MtlsError(
      'NAME_NOT_GRANTED',
      `the CSR asks for ${extra.join(', ')}, which ${what} does not grant; ask only for its names`,
    );
}

const requested = (n: LeafNames) => ({
  dns: n.dns,
  ip: n.ip,
  email: n.email,
  ...(n.uri[0] ? { spiffeId: n.uri[0] } : {}),
});
