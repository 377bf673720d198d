import type { KeyObject } from 'node:crypto';
import { MtlsError } from '../errors.js';
import {
  authorityInfoAccessExt,
  authorityKeyIdExt,
  basicConstraintsExt,
  crlDistributionPointsExt,
  extKeyUsageExt,
  keyIdentifier,
  keyUsageExt,
  nameConstraintsExt,
  subjectAltNameExt,
  subjectKeyIdExt,
  type KeyUsageName,
  type NameConstraintsInput,
  type RawExtension,
  type SanInput,
} from './extensions.js';
import { checkDnsName, checkEmail, checkIpAddress, parseSpiffeId } from './names.js';
import { OID } from './oid.js';

export const LEAF_PROFILES = ['server', 'client', 'spiffe'] as const;
export type LeafProfile = (typeof LEAF_PROFILES)[number];
/** 'ocsp': the CA's delegated OCSP responder certificate (ca/ocsp-responder.ts). */
export type Profile = LeafProfile | 'root' | 'intermediate' | 'ocsp';

export function parseProfile(text: string): LeafProfile {
  if ((LEAF_PROFILES as readonly string[]).includes(text)) return text as LeafProfile;
  throw new MtlsError('BAD_INPUT', `unknown profile '${text}'; use server, client or spiffe`);
}

/** The names a leaf certificate asks for, before validation. */
export interface RequestedNames {
  dns?: string[];
  ip?: string[];
  email?: string[];
  /** SPIFFE ID (the only URI SAN we issue). */
  spiffeId?: string;
}

/** Validated, normalized names, ready for a SAN extension. */
export interface LeafNames {
  dns: string[];
  ip: string[];
  email: string[];
  uri: string[];
}

/**
 * Validates the names for a profile: a server needs at least one DNS name or IP; a SPIFFE SVID has exactly one
 * URI SAN and nothing else (X.509-SVID spec 2 and 4); a client may carry a SPIFFE ID, emails and DNS names.
 */
export function checkLeafNames(profile: LeafProfile, req: RequestedNames): LeafNames {
  const dns = unique((req.dns ?? []).map((d) => checkDnsName(d, { wildcard: profile === 'server' })));
  const ip = unique((req.ip ?? []).map(checkIpAddress));
  const email = unique((req.email ?? []).map(checkEmail));
  const uri = req.spiffeId !== undefined ? [parseSpiffeId(req.spiffeId).uri] : [];
  if (profile === 'server' && dns.length + ip.length === 0) {
    throw new MtlsError(
      'BAD_INPUT',
      'a server certificate needs at least one DNS name or IP address (clients ' +
        'check it against the host they dial)',
    );
  }
  if (profile === 'spiffe') {
    if (uri.length !== 1)
      throw new MtlsError(
        'BAD_SPIFFE_ID',
        'an X.509-SVID needs exactly one SPIFFE ID, e.g. spiffe://example.org/ns/prod/sa/api',
      );
    if (dns.length + ip.length + email.length > 0) {
      throw new MtlsError(
        'BAD_INPUT',
        'an X.509-SVID carries only its SPIFFE ID; issue a server or client certificate ' +
          '(with --spiffe-id) to add DNS names, IPs or emails',
      );
    }
  }
  if (profile === 'server' && email.length > 0)
    throw new MtlsError('BAD_INPUT', 'email addresses belong in client certificates, not server certificates');
  return { dns, ip, email, uri };
}

function unique<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

const EKU: Record<LeafProfile, string[]> = {
  server: [OID.serverAuth],
  client: [OID.clientAuth],
  spiffe: [OID.serverAuth, OID.clientAuth],
};

/**
 * The extensions of a leaf certificate of `profile`: CA:FALSE (critical), a critical KeyUsage with
 * digitalSignature (plus keyEncipherment for RSA server keys, for TLS 1.2 RSA key exchange peers), the
 * profile's EKU, the SAN (critical when the subject is empty), SKI and AKI.
 */
export function leafExtensions(
  profile: LeafProfile,
  names: LeafNames,
  publicKey: KeyObject,
  issuerKeyId: Buffer,
  emptySubject: boolean,
  revocation?: RevocationUrls,
): RawExtension[] {
  const ku: KeyUsageName[] = ['digitalSignature'];
  if (profile === 'server' && publicKey.asymmetricKeyType === 'rsa') ku.push('keyEncipherment');
  const san: SanInput = { dns: names.dns, ip: names.ip, email: names.email, uri: names.uri };
  const hasSan = names.dns.length + names.ip.length + names.email.length + names.uri.length > 0;
  return [
    basicConstraintsExt(false),
    keyUsageExt(ku),
    extKeyUsageExt(EKU[profile]),
    ...(hasSan ? [subjectAltNameExt(san, emptySubject)] : []),
    subjectKeyIdExt(keyIdentifier(publicKey)),
    authorityKeyIdExt(issuerKeyId),
    ...revocationExtensions(revocation),
  ];
}

/** Where a certificate's revocation status is published (`mtls ca init --url BASE`): its issuer's CRL, an OCSP URL. */
export interface RevocationUrls {
  crl: string;
  ocsp?: string;
}

/** The URLs of a CA published under `base` (`mtls ca init --url`): what a leaf and what the intermediate carry. */
export function revocationUrls(base: string | undefined): { leaf?: RevocationUrls; intermediate?: RevocationUrls } {
  if (!base) return {};
  const b = base.replace(/\/+$/, '');
  // The intermediate names the same responder: `mtls ca ocsp` answers for the root's certificates too.
  return {
    leaf: { crl: `${b}/crl/intermediate.crl`, ocsp: `${b}/ocsp` },
    intermediate: { crl: `${b}/crl/root.crl`, ocsp: `${b}/ocsp` },
  };
}

function revocationExtensions(r: RevocationUrls | undefined): RawExtension[] {
  if (!r) return [];
  return [crlDistributionPointsExt([r.crl]), ...(r.ocsp ? [authorityInfoAccessExt({ ocsp: [r.ocsp] })] : [])];
}

/** A self-signed root: CA:TRUE without a path length (the intermediate carries pathLen 0), keyCertSign|cRLSign. */
export function rootExtensions(publicKey: KeyObject): RawExtension[] {
  const kid = keyIdentifier(publicKey);
  return [basicConstraintsExt(true), keyUsageExt(['keyCertSign', 'cRLSign']), subjectKeyIdExt(kid)];
}

/**
 * The online intermediate: CA:TRUE with pathLenConstraint 0 (it signs leaves only), keyCertSign|cRLSign|
 * digitalSignature (the last for signing OCSP responses itself), and the CA's name constraints.
 */
export function intermediateExtensions(
  publicKey: KeyObject,
  rootKeyId: Buffer,
  constraints?: NameConstraintsInput,
  revocation?: RevocationUrls,
): RawExtension[] {
  const ext = [
    basicConstraintsExt(true, 0),
    keyUsageExt(['digitalSignature', 'keyCertSign', 'cRLSign']),
    subjectKeyIdExt(keyIdentifier(publicKey)),
    authorityKeyIdExt(rootKeyId),
    ...revocationExtensions(revocation),
  ];
  if (constraints && Object.values(constraints).some((v) => v && v.length > 0))
    ext.push(nameConstraintsExt(constraints));
  return ext;
}
