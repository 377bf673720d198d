import { MtlsError } from '../errors.js';
import { dnsNameMatches } from '../pki/name-match.js';
import { checkIpAddress, checkTrustDomain, compileSpiffePattern, parseDnString, printable } from '../pki/names.js';
import type { PeerIdentity } from './identity.js';
import { normalizeRequestTarget, pathUnder } from './request-target.js';

/**
 * A rule, as written in configs and on the command line:
 * - `spiffe://prod.example.org/ns/*\/sa/api`: SPIFFE ID pattern (`*` one segment, trailing `**` the rest)
 * - `trust-domain:prod.example.org`: any SPIFFE ID of that trust domain
 * - `dns:api.example.org`, `dns:*.example.org`: a DNS SAN (wildcard = one label)
 * - `uri:https://x`, `email:a@example.org`, `ip:10.0.0.1`: exact SANs
 * - `dn:O=Acme, OU=payments`: every listed attribute present in the subject (case-insensitive values)
 * - `cn:api`: the subject CN
 * - `fingerprint:AB:CD:...`: the certificate's SHA-256 fingerprint
 * - `any`: any verified peer
 */
export type Rule = string;

export interface PolicyConfig {
  allow: Rule[];
  /** Deny rules win over allow rules. */
  deny?: Rule[];
  /** Audit (dry-run): decisions are computed and reported, but a deny is not enforced. */
  audit?: boolean;
  /**
   * Per-route rules for HTTP: the longest matching path prefix (on segment boundaries) replaces the top-level
   * allow/deny. Prefixes and request paths are compared normalized (src/identity/request-target.ts).
   */
  routes?: { prefix: string; allow: Rule[]; deny?: Rule[] }[];
}

export interface Decision {
  allowed: boolean;
  /** True when the policy denied but audit mode let it through. */
  auditOnly?: boolean;
  /** The rule that decided, if any. */
  rule?: Rule;
  /** One line for logs and 403 bodies. */
  reason: string;
}

interface CompiledRule {
  text: Rule;
  match: (id: PeerIdentity) => boolean;
}

const KINDS = ['trust-domain', 'dns', 'uri', 'email', 'ip', 'dn', 'cn', 'fingerprint'] as const;

export function compileRule(rule: Rule): CompiledRule {
  const fail = (why: string): never => {
    throw new MtlsError('BAD_INPUT', `policy rule '${printable(rule)}': ${why}`);
  };
  const text = rule.trim();
  if (text === 'any') return { text, match: () => true };
  if (text.startsWith('spiffe://')) {
    const m = compileSpiffePattern(text);
    return { text, match: (id) => id.spiffeId !== undefined && m(id.spiffeId) };
  }
  const colon = text.indexOf(':');
  const kind = text.slice(0, colon) as (typeof KINDS)[number];
  const value = text.slice(colon + 1).trim();
  if (colon <= 0 || !KINDS.includes(kind))
    fail(`start it with spiffe://, or one of ${KINDS.map((k) => k + ':').join(' ')} or 'any'`);
  if (value.length === 0) fail('the value is empty');
  switch (kind) {
    case 'trust-domain': {
      const td = checkTrustDomain(value);
      return { text, match: (id) => id.spiffeId?.trustDomain === td };
    }
    case 'dns': {
      if (value.includes('*') && !/^\*\.[^*]+$/.test(value))
        fail("a wildcard must be the whole left-most label, like '*.example.org'");
      const v = value.toLowerCase();
      return {
        text,
        match: (id) => id.dns.some((d) => (v.startsWith('*.') ? dnsNameMatches(v, d) && !d.startsWith('*') : d === v)),
      };
    }
    case 'uri':
      return { text, match: (id) => id.uris.includes(value) };
    case 'email':
      return { text, match: (id) => id.emails.some((e) => e.toLowerCase() === value.toLowerCase()) };
    case 'ip': {
      const ip = checkIpAddress(value);
      return { text, match: (id) => id.ips.includes(ip) };
    }
    case 'cn':
      return { text, match: (id) => id.subject.some((a) => a.type === 'CN' && a.value === value) };
    case 'fingerprint': {
      const fp = value.toUpperCase().replace(/[^0-9A-F]/g, '');
      if (fp.length !== 64) fail('a SHA-256 fingerprint has 64 hex digits');
      return { text, match: (id) => id.fingerprint256.replace(/:/g, '') === fp };
    }
    case 'dn': {
      const wanted = parseDnString(value);
      return {
        text,
        match: (id) =>
          wanted.every((w) =>
            id.subject.some((a) => a.oid === w.oid && a.value.toLowerCase() === w.value.toLowerCase()),
          ),
      };
    }
  }
  return fail('unknown rule');
}

/** What the peer is, in a few words, for reasons. */
export function describePeer(id: PeerIdentity): string {
  if (id.spiffeId) return id.spiffeId.uri;
  return id.subjectDn || id.dns[0] || `serial ${id.serial}`;
}

export interface Policy {
  /** Decides for a verified peer; `path` (normalized: see normalizeRequestTarget) selects per-route rules. */
  decide(id: PeerIdentity | undefined, path?: string): Decision;
  readonly config: PolicyConfig;
}

/**
 * Compiles a policy once (an invalid rule throws here, at startup): deny rules first, then allow rules, else
 * deny. Every decision carries its reason. In audit mode a deny is reported but not enforced.
 */
export function compilePolicy(config: PolicyConfig): Policy {
  const set = (allow: Rule[], deny: Rule[] = []) => ({ allow: allow.map(compileRule), deny: deny.map(compileRule) });
  const top = set(config.allow, config.deny);
  const routes = (config.routes ?? [])
    .map((r) => {
      if (!r.prefix.startsWith('/'))
        throw new MtlsError('BAD_INPUT', `route prefix '${printable(r.prefix)}' must start with /`);
      const n = normalizeRequestTarget(r.prefix);
      if (!n.ok || n.query)
        throw new MtlsError(
          'BAD_INPUT',
          `route prefix '${printable(r.prefix)}': ${n.ok ? 'a prefix has no query' : n.reason}`,
        );
      return { prefix: n.path, ...set(r.allow, r.deny) };
    })
    .sort((a, b) => b.prefix.length - a.prefix.length);
  const audit = config.audit ?? false;
  const finish = (d: Decision): Decision =>
    d.allowed || !audit ? d : { ...d, allowed: true, auditOnly: true, reason: `audit: would deny: ${d.reason}` };
  return {
    config,
    decide(id, path) {
      if (!id) return finish({ allowed: false, reason: 'no verified client certificate' });
      const route = path === undefined ? undefined : routes.find((r) => pathUnder(path, r.prefix));
      const rules = route ?? top;
      const where = route ? ` for ${route.prefix}` : '';
      const who = describePeer(id);
      const denied = rules.deny.find((r) => r.match(id));
      if (denied)
        return finish({
          allowed: false,
          rule: denied.text,
          reason: `${who} is denied by rule '${denied.text}'${where}`,
        });
      const allowed = rules.allow.find((r) => r.match(id));
      if (allowed)
        return { allowed: true, rule: allowed.text, reason: `${who} is allowed by rule '${allowed.text}'${where}` };
      return finish({ allowed: false, reason: `${who} matches no allow rule${where} (deny by default)` });
    },
  };
}
