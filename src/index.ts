/** The public library API: re-exports only, no side effects. */
export { MtlsError, exitCodeOf, codeInfo, type MtlsErrorCode, type ErrorFamily } from './errors.js';
export { CertificateAuthority, type IssueRequest, type Issued } from './ca/authority.js';
export type { InitOptions } from './ca/init.js';
export { resolveCaHome, caPaths, type CaConfig } from './ca/home.js';
export { writeIssued, type OutputOptions } from './ca/output.js';
export { crlPaths } from './ca/revocation.js';
export { keepCrlsFresh, type CrlFreshnessEvents, type CrlPublisher } from './ca/crl-freshness.js';
export { OcspResponder, revocationRoutes, revocationAnswer } from './ca/ocsp-responder.js';
export { serveOcsp, type OcspServer, type ServeOcspOptions } from './ca/ocsp-server.js';
export { startCaService, type CaService, type CaServiceOptions } from './ca/service.js';
export { makeToken, checkToken, provisionerKey, tokenAudience, type Grant } from './ca/tokens.js';
export { Agent, agentFiles, type AgentOptions, type AgentState, type AgentHealth } from './agent/agent.js';
export { RenewingCredentials, type RenewingOptions } from './agent/renewing.js';
export { PostgresStore } from './store/postgres.js';
export { encodeCrl, REVOCATION_REASONS, type RevocationReason, type CrlTemplate } from './pki/crl-writer.js';
export { parseCrl, readCrls, revocationStatus, type Crl, type RevocationStatus } from './pki/crl.js';
export { CrlSet } from './tls/crl-file.js';
export { checkOcspResponse, ocspRequest, type OcspStatus } from './pki/ocsp-check.js';
export { fetchOcsp } from './tls/ocsp-fetch.js';
export { chainRevocation, type ChainRevocation } from './tls/chain-revocation.js';
export { CrlFetcher, type CrlFetchEvent, type CrlFetchOptions } from './tls/crl-fetch.js';
export { OcspStapler, checkStaple, type StapleMode, type StapleEvent, type StaplerOptions } from './tls/stapling.js';
export { OcspClientChecker, type OcspClientEvent, type OcspClientOptions } from './tls/ocsp-clients.js';
export type { CertificateStore, InventoryRecord, ListFilter } from './store/store.js';
export { SqliteStore } from './store/sqlite.js';
export { parseCertificate, readCertificates, type Certificate } from './pki/certificate.js';
export { signCertificate, randomSerial, type CertificateTemplate } from './pki/signing.js';
export { parseCsr, createCsr, type CertificateRequest } from './pki/csr.js';
export { generateKeyPair, loadPrivateKey, exportPrivateKey, keysMatch, KEY_TYPES, type KeyType } from './pki/keys.js';
export {
  parseSpiffeId,
  compileSpiffePattern,
  checkDnsName,
  checkIpAddress,
  checkEmail,
  formatDn,
  type SpiffeId,
  type DnAttribute,
} from './pki/names.js';
export { decodePem, encodePem } from './pki/pem.js';
export { buildPkcs12, parsePkcs12 } from './pki/pkcs12.js';
export { verifyChain, type VerifyOptions } from './pki/verify.js';
export {
  certLabel,
  PROFILES,
  type Profile,
  VERIFY_PROBLEMS,
  type VerifyResult,
  type VerifyProblem,
  type VerifyProblemCode,
  type Purpose,
} from './pki/path-rules.js';
export { inspect, type InspectReport } from './pki/inspect.js';
export { LEAF_PROFILES, type LeafProfile } from './pki/profiles.js';
export { parseDuration } from './text/duration.js';
export { identityOf, identityFromCertificate, type PeerIdentity } from './identity/identity.js';
export {
  compilePolicy,
  compileRule,
  type Policy,
  type PolicyConfig,
  type Decision,
  type Rule,
} from './identity/policy.js';
export { loadCredentials, type Credentials, type CredentialSource } from './tls/credentials.js';
export {
  serverTlsOptions,
  clientTlsOptions,
  checkServerIdentity,
  SECURE_CIPHERS,
  SECURE_GROUPS,
  type ServerExpectation,
  type EndpointOptions,
} from './tls/options.js';
export {
  createMtlsServer,
  reportHandshakeErrors,
  type MtlsServerOptions,
  type ConnectionEvent,
  type HandshakeErrorEvent,
} from './tls/server.js';
export { connectMtls, peerChain, type ConnectOptions, type MtlsConnection } from './tls/client.js';
export { classifyTlsError, authorizationFailure } from './tls/errors.js';
export {
  CredentialHolder,
  CredentialReloader,
  currentCredentials,
  type WatchedFiles,
  type ReloadEvent,
} from './tls/reload.js';
export { mtlsAuthorize, createMtlsHttpsServer, authorizeRequest, type RequestMtls } from './adapters/http.js';
export { mtlsFastify } from './adapters/fastify.js';
export { MtlsHttpsAgent, mtlsUndiciAgent, type ClientAgentOptions } from './adapters/agents.js';
export {
  doctor,
  doctorExitCode,
  type DoctorReport,
  type DoctorOptions,
  type Diagnosis,
  type DiagnosisCode,
  type DoctorCheck,
} from './doctor/doctor.js';
export { traceSteps, type TraceReport, type TraceStep } from './trace/trace.js';
export { traceConnection } from './trace/connect.js';
export { createTraceServer, type ServerTraceReport, type TraceServerOptions } from './trace/listen.js';
export { renderTrace } from './trace/render.js';
export { enforceHandshakeDeadline } from './tls/server.js';
export { MtlsProxy, type ProxyOptions, type Readiness } from './proxy/runtime.js';
export { parseProxyConfig, readProxyConfig } from './proxy/config-file.js';
export {
  type ProxyConfig,
  type ListenerConfig,
  type ServerListenerConfig,
  type ClientListenerConfig,
  type Limits,
} from './proxy/config.js';
export { encodeProxyV2, decodeProxyV2, PP2, type ProxyHeader } from './proxy/proxy-protocol.js';
export { xfccValue, clientCertHeader } from './proxy/xfcc.js';
export { ProxyMetrics } from './proxy/metrics.js';
