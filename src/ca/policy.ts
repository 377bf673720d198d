import fs from 'node:fs';
import path from 'node:path';
import { MtlsError } from '../errors.js';
import { checkPrivateFile, readInput, stageFiles } from '../io/files.js';
import { dnsWithinConstraint, ipWithinCidr } from '../pki/name-match.js';
import { checkCidr, compileSpiffePattern, parseSpiffeId, printable } from '../pki/names.js';
import type { LeafNames, LeafProfile } from '../pki/profiles.js';
import { parseDuration } from '../text/duration.js';

/**
 * What the CA service grants per profile (issue 15): the default and the longest lifetime, and the names a token
 * may carry. Kept in HOME/policy.json (0600, written atomically by `mtls ca policy set`), so every replica of one
 * home applies the same policy; the service reads it again when the file changes, without a restart.
 */

export const PROFILES: readonly LeafProfile[] = ['server', 'client', 'spiffe'];
/** Workload certificates live a day unless a token or the policy says otherwise. */
export const DEFAULT_VALIDITY = '24h';
/** The longest lifetime a token or a renewal grants unless the policy (or `ca serve --max-validity`) says less. */
export const DEFAULT_MAX_VALIDITY = '30d';

/** One profile's rules, as written in policy.json. */
export interface ProfileRules {
  defaultValidity?: string;
  maxValidity?: string;
  /** DNS names a token may grant: `example.org` (it and its subdomains) or `.example.org` (subdomains only). */
  dns?: string[];
  /** CIDR ranges a token may grant IP addresses from. */
  ip?: string[];
  /** SPIFFE ID patterns a token may grant (`*` one segment, a trailing `**` the rest). */
  spiffe?: string[];
}

export interface PolicyFile {
  version: 1;
  profiles: Partial<Record<LeafProfile, ProfileRules>>;
}

/** A profile's rules, checked and ready to apply. */
export interface ProfilePolicy {
  defaultValidityMs: number;
  maxValidityMs: number;
  /** Why these names may not be granted under this profile (empty: they may). */
  violations(names: LeafNames): string[];
}

export interface IssuancePolicy {
  file: PolicyFile;
  profile(p: LeafProfile): ProfilePolicy;
}

const RULE_KEYS = ['defaultValidity', 'maxValidity', 'dns', 'ip', 'spiffe'] as const;
const MAX_PATTERNS = 1000;

export const policyPath = (home: string) => path.join(home, 'policy.json');

/** Checks `file` and compiles it; every problem is one line naming the profile and the rule. */
export function compileIssuancePolicy(file: PolicyFile, fromFile?: string): IssuancePolicy {
  const bad = (why: string): never => {
    throw new MtlsError(
      'BAD_INPUT',
      fromFile
        ? `${fromFile}: ${why}; correct the file, or remove it to go back to the defaults`
        : `the issuance policy would be wrong: ${why}`,
    );
  };
  if (typeof file !== 'object' || file === null || file.version !== 1 || typeof file.profiles !== 'object')
    bad('it is not a version 1 policy ({"version":1,"profiles":{...}})');
  const compiled = new Map<LeafProfile, ProfilePolicy>();
  for (const [name, rules] of Object.entries(file.profiles ?? {})) {
    if (!PROFILES.includes(name as LeafProfile)) bad(`'${printable(name)}' is not a profile (${PROFILES.join(', ')})`);
    compiled.set(name as LeafProfile, compileRules(name, rules ?? {}, bad));
  }
  const defaults = compileRules('default', {}, bad);
  return { file, profile: (p) => compiled.get(p) ?? defaults };
}

function compileRules(profile: string, r: ProfileRules, bad: (why: string) => never): ProfilePolicy {
  if (typeof r !== 'object' || r === null || Array.isArray(r)) bad(`profile ${profile} is not an object`);
  for (const k of Object.keys(r))
    if (!RULE_KEYS.includes(k as (typeof RULE_KEYS)[number]))
      bad(`profile ${profile} has '${printable(k)}', which is none of ${RULE_KEYS.join(', ')}`);
  const duration = (v: unknown, key: string, fallback: string) => {
    if (v !== undefined && typeof v !== 'string') bad(`${profile}.${key} must be a duration such as 24h`);
    try {
      return parseDuration((v as string | undefined) ?? fallback, `${profile}.${key}`);
    } catch (err) {
      return bad((err as Error).message);
    }
  };
  const list = (v: unknown, key: string): string[] => {
    if (v === undefined) return [];
    if (!Array.isArray(v) || v.length > MAX_PATTERNS || !v.every((x) => typeof x === 'string' && x.length > 0))
      bad(`${profile}.${key} must be a list of at most ${MAX_PATTERNS} non-empty strings`);
    return v as string[];
  };
  const maxValidityMs = duration(r.maxValidity, 'maxValidity', DEFAULT_MAX_VALIDITY);
  // Unset, the default lifetime is 24h, or the maximum when that is shorter.
  const defaultValidityMs =
    r.defaultValidity === undefined
      ? Math.min(duration(undefined, 'defaultValidity', DEFAULT_VALIDITY), maxValidityMs)
      : duration(r.defaultValidity, 'defaultValidity', DEFAULT_VALIDITY);
  if (defaultValidityMs > maxValidityMs)
    bad(
      `${profile}.defaultValidity (${r.defaultValidity}) is longer than its maxValidity (${r.maxValidity ?? DEFAULT_MAX_VALIDITY})`,
    );
  const dns = list(r.dns, 'dns').map((d) => {
    if (!/^\.?([a-z0-9-]+\.)*[a-z0-9-]+$/i.test(d)) bad(`${profile}.dns '${printable(d)}' is not a domain`);
    return d.toLowerCase();
  });
  const ip = list(r.ip, 'ip').map((c) => {
    try {
      return checkCidr(c);
    } catch (err) {
      return bad(`${profile}.ip: ${(err as Error).message}`);
    }
  });
  const spiffeText = list(r.spiffe, 'spiffe');
  const spiffe = spiffeText.map((s) => {
    try {
      return compileSpiffePattern(s);
    } catch (err) {
      return bad(`${profile}.spiffe: ${(err as Error).message}`);
    }
  });
  return {
    defaultValidityMs,
    maxValidityMs,
    violations: (names) => {
      const out: string[] = [];
      if (dns.length)
        for (const d of names.dns)
          if (!dns.some((c) => dnsWithinConstraint(d.replace(/^\*\./, 'x.'), c)))
            out.push(`DNS name '${d}' is not among the ${profile} profile's names (${dns.join(', ')})`);
      if (ip.length)
        for (const a of names.ip)
          if (!ip.some((c) => ipWithinCidr(a, c)))
            out.push(`IP address '${a}' is not in the ${profile} profile's ranges (${ip.join(', ')})`);
      if (spiffe.length)
        for (const u of names.uri) {
          const id = u.startsWith('spiffe://') ? parseSpiffeId(u) : undefined;
          if (!id || !spiffe.some((m) => m(id)))
            out.push(`'${u}' does not match the ${profile} profile's SPIFFE IDs (${spiffeText.join(', ')})`);
        }
      return out;
    },
  };
}

/** The policy file of `home`, or the defaults when there is none. */
export function readIssuancePolicy(home: string): IssuancePolicy {
  const file = policyPath(home);
  if (!fs.existsSync(file)) return compileIssuancePolicy({ version: 1, profiles: {} });
  checkPrivateFile(file, 'issuance policy');
  let parsed: PolicyFile;
  try {
    parsed = JSON.parse(readInput(file, 'issuance policy', 1 << 20).toString('utf8')) as PolicyFile;
  } catch (err) {
    if (err instanceof MtlsError) throw err;
    throw new MtlsError(
      'BAD_INPUT',
      `${file} is not JSON (${(err as Error).message}); correct it, or remove it to go back to the defaults`,
    );
  }
  return compileIssuancePolicy(parsed, file);
}

/**
 * The policy of `home` as it is now: read again when the file changes (its inode, size or mtime), so that a
 * service applies `mtls ca policy set` at its next request. A file that no longer compiles throws (the request is
 * refused, the CA does not fall back to the defaults).
 */
export function watchedIssuancePolicy(home: string): () => IssuancePolicy {
  let seen = '';
  let current: IssuancePolicy | undefined;
  return () => {
    let stamp = 'none';
    try {
      const st = fs.statSync(policyPath(home), { bigint: true });
      stamp = `${st.ino}:${st.size}:${st.mtimeNs}`;
    } catch {
      // no file: the defaults
    }
    if (stamp !== seen || !current) {
      current = readIssuancePolicy(home);
      seen = stamp;
    }
    return current;
  };
}

/** Changes one profile's rules (a key set to undefined is removed), checks the result, and writes it atomically. */
export function setProfileRules(home: string, profile: LeafProfile, change: ProfileRules): IssuancePolicy {
  const file = readIssuancePolicy(home).file;
  const rules: ProfileRules = { ...file.profiles[profile] };
  for (const k of RULE_KEYS) {
    if (!(k in change)) continue;
    const v = change[k];
    if (v === undefined || (Array.isArray(v) && v.length === 0)) delete rules[k];
    else (rules as Record<string, unknown>)[k] = v;
  }
  const next: PolicyFile = { version: 1, profiles: { ...file.profiles, [profile]: rules } };
  const policy = compileIssuancePolicy(next);
  stageFiles([{ path: policyPath(home), data: JSON.stringify(next, null, 2) + '\n', mode: 0o600 }], {
    overwrite: true,
  }).commit();
  return policy;
}
