/** The public library API: re-exports only, no side effects. */
export { MtlsError, exitCodeOf, type MtlsErrorCode } from './errors.js';
export { CertificateAuthority, type InitOptions, type IssueRequest, type Issued } from './ca/authority.js';
export { resolveCaHome, caPaths, type CaConfig } from './ca/home.js';
export { writeIssued, type OutputOptions } from './ca/output.js';
export type { CertificateStore, InventoryRecord, ListFilter } from './store/store.js';
export { SqliteStore } from './store/sqlite.js';
export { parseCertificate, readCertificates, signCertificate, randomSerial, type Certificate, type CertificateTemplate } from './pki/certificate.js';
export { parseCsr, createCsr, type CertificateRequest } from './pki/csr.js';
export { generateKeyPair, loadPrivateKey, exportPrivateKey, keysMatch, KEY_TYPES, type KeyType } from './pki/keys.js';
export { parseSpiffeId, compileSpiffePattern, checkDnsName, checkIpAddress, checkEmail, formatDn, type SpiffeId, type DnAttribute } from './pki/names.js';
export { decodePem, encodePem } from './pki/pem.js';
export { buildPkcs12, parsePkcs12 } from './pki/pkcs12.js';
export { verifyChain, certLabel, type VerifyOptions, type VerifyResult, type VerifyProblem, type VerifyProblemCode, type Purpose } from './pki/verify.js';
export { inspect, type InspectReport } from './pki/inspect.js';
export { LEAF_PROFILES, type LeafProfile } from './pki/profiles.js';
export { parseDuration } from './util/duration.js';
