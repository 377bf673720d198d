// The TLS context: certificate, trust bundle, CRLs and the TLS policy (from TypeScript), session tickets bound to
// the context that verified them; and the names of OpenSSL's and the system's errors (as Node spells them).
#include "relay.h"

namespace mtls_relay {

uint64_t nowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

std::string errnoName(int e) {
  const char* n = strerrorname_np(e);
  return n ? n : "E" + std::to_string(e);
}

// Node's names for OpenSSL's verify errors (socket.authorizationError): the X509_V_ERR_ constant without it.
std::string verifyName(long v) {
  switch (v) {
#define V(x) \
  case X509_V_ERR_##x: return #x;
    V(UNABLE_TO_GET_ISSUER_CERT) V(UNABLE_TO_GET_CRL) V(UNABLE_TO_DECRYPT_CERT_SIGNATURE) V(UNABLE_TO_DECRYPT_CRL_SIGNATURE)
    V(UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY) V(CERT_SIGNATURE_FAILURE) V(CRL_SIGNATURE_FAILURE) V(CERT_NOT_YET_VALID)
    V(CERT_HAS_EXPIRED) V(CRL_NOT_YET_VALID) V(CRL_HAS_EXPIRED) V(ERROR_IN_CERT_NOT_BEFORE_FIELD)
    V(ERROR_IN_CERT_NOT_AFTER_FIELD) V(ERROR_IN_CRL_LAST_UPDATE_FIELD) V(ERROR_IN_CRL_NEXT_UPDATE_FIELD) V(OUT_OF_MEM)
    V(DEPTH_ZERO_SELF_SIGNED_CERT) V(SELF_SIGNED_CERT_IN_CHAIN) V(UNABLE_TO_GET_ISSUER_CERT_LOCALLY)
    V(UNABLE_TO_VERIFY_LEAF_SIGNATURE) V(CERT_CHAIN_TOO_LONG) V(CERT_REVOKED) V(INVALID_CA) V(PATH_LENGTH_EXCEEDED)
    V(INVALID_PURPOSE) V(CERT_UNTRUSTED) V(CERT_REJECTED) V(INVALID_EXTENSION) V(KEYUSAGE_NO_CERTSIGN)
    V(UNHANDLED_CRITICAL_EXTENSION) V(UNHANDLED_CRITICAL_CRL_EXTENSION) V(EE_KEY_TOO_SMALL) V(CA_KEY_TOO_SMALL)
    V(CA_MD_TOO_WEAK)
#undef V
    default: return "UNSPECIFIED";
  }
}

// Node's code for an OpenSSL error: ERR_SSL_ and the reason in capitals (e.g. ERR_SSL_WRONG_VERSION_NUMBER).
std::string sslCode(unsigned long e) {
  const char* r = ERR_reason_error_string(e);
  if (!r) return "ERR_SSL_ERROR";
  std::string s = "ERR_SSL_";
  for (const char* p = r; *p; p++) s += (*p == ' ') ? '_' : char(toupper(static_cast<unsigned char>(*p)));
  return s;
}


int ctxDataIndex = -1;
void freeCtxData(void*, void* p, CRYPTO_EX_DATA*, int, long, void*) {
  auto* d = static_cast<CtxData*>(p);
  if (d) OPENSSL_cleanse(&d->keys, sizeof d->keys);
  delete d;
}

// Tickets of a context that is no longer the engine's current one are neither issued nor accepted: its trust
// bundle or CRLs may have been replaced (a full handshake verifies against the current ones).
int ticketCallback(SSL* s, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, int enc) {
  SSL_CTX* ctx = SSL_get_SSL_CTX(s);
  CtxData* d = ctxData(ctx);
  if (!d) return enc ? 0 : 0;
  TicketKeys k;
  {
    std::lock_guard<std::mutex> g(d->e->mu);
    if (!d->haveKeys || d->e->ctx != ctx) return 0;  // enc: no ticket; dec: full handshake
    k = d->keys;
  }
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_end(),
  };
  int rc = 1;
  if (enc) {
    memcpy(name, k.name, sizeof k.name);
    if (RAND_bytes(iv, 16) <= 0 || !EVP_EncryptInit_ex(cctx, EVP_aes_128_cbc(), nullptr, k.aes, iv) || !EVP_MAC_CTX_set_params(hctx, params)) rc = -1;
  } else if (memcmp(name, k.name, sizeof k.name) != 0) {
    rc = 0;  // another key (an older trust bundle): full handshake
  } else if (!EVP_MAC_CTX_set_params(hctx, params) || !EVP_DecryptInit_ex(cctx, EVP_aes_128_cbc(), nullptr, k.aes, iv)) {
    rc = -1;
  }
  OPENSSL_cleanse(&k, sizeof k);
  return rc;
}

std::string lastSslError(const char* what) {
  unsigned long e = ERR_peek_last_error();
  std::string s = what;
  if (e) {
    const char* r = ERR_reason_error_string(e);
    s += ": ";
    s += r ? r : "unknown OpenSSL error";
  }
  ERR_clear_error();
  return s;
}

void freeBio(BIO* b) { BIO_free(b); }
using Bio = std::unique_ptr<BIO, decltype(&freeBio)>;
Bio memBio(const std::string& s) { return Bio(BIO_new_mem_buf(s.data(), int(s.size())), freeBio); }

// Builds the server context; returns an error message (no key material in it) or "" with *out set.
// `crl` null: no revocation checking; otherwise it must hold at least one CRL (an empty or garbage CRL file must
// never mean "nothing is revoked").

std::string buildContext(Engine* e, const std::string& cert, const std::string& key, const std::string& ca, const std::string* crl,
                         const std::vector<uint8_t>& keys, const TlsPolicy& policy, SSL_CTX** out) {
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!ctx) return lastSslError("cannot create a TLS context");
  SSL_CTX* x = ctx.get();
  if (!SSL_CTX_set_min_proto_version(x, policy.minVersion)) return lastSslError("cannot set the minimum TLS version");
  if (!SSL_CTX_set_cipher_list(x, policy.ciphers.c_str()) || !SSL_CTX_set1_groups_list(x, policy.groups.c_str())) {
    return lastSslError("cannot set the cipher suites or groups");
  }
  SSL_CTX_set_options(x, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(x, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(x, 1);

  Bio cb = memBio(cert);
  X509* leaf = PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr);
  if (!leaf) return lastSslError("the certificate file has no PEM certificate");
  int ok = SSL_CTX_use_certificate(x, leaf);
  X509_free(leaf);
  if (!ok) return lastSslError("cannot use the certificate");
  while (X509* extra = PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr)) {
    if (!SSL_CTX_add0_chain_cert(x, extra)) {
      X509_free(extra);
      return lastSslError("cannot add an intermediate certificate");
    }
  }
  ERR_clear_error();  // the end of the PEM stream
  Bio kb = memBio(key);
  // No passphrase callback would make OpenSSL prompt on the terminal for an encrypted key: refuse instead (the
  // JavaScript side decrypts keys and hands over PKCS#8).
  pem_password_cb* noPassphrase = [](char*, int, int, void*) -> int { return -1; };
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(kb.get(), nullptr, noPassphrase, nullptr);
  if (!pkey) return lastSslError("cannot read the private key");
  ok = SSL_CTX_use_PrivateKey(x, pkey);
  EVP_PKEY_free(pkey);
  if (!ok || !SSL_CTX_check_private_key(x)) return lastSslError("the private key does not match the certificate");

  X509_STORE* store = SSL_CTX_get_cert_store(x);
  Bio ab = memBio(ca);
  int cas = 0;
  while (X509* c = PEM_read_bio_X509(ab.get(), nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, c);
    SSL_CTX_add_client_CA(x, c);  // named in the CertificateRequest, as Node does
    X509_free(c);
    cas++;
  }
  ERR_clear_error();
  if (cas == 0) return "the trust bundle has no PEM certificate";
  if (crl) {
    Bio rb = memBio(*crl);
    int crls = 0;
    while (X509_CRL* r = PEM_read_bio_X509_CRL(rb.get(), nullptr, nullptr, nullptr)) {
      X509_STORE_add_crl(store, r);
      X509_CRL_free(r);
      crls++;
    }
    ERR_clear_error();
    if (crls == 0) return "the CRL file has no PEM CRL";
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
  }
  SSL_CTX_set_verify(x, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_session_id_context(x, SESSION_CONTEXT, sizeof SESSION_CONTEXT - 1);
  SSL_CTX_set_session_cache_mode(x, SSL_SESS_CACHE_OFF);  // resumption by tickets only (keys shared by workers)
  // One ticket per handshake (as Go's crypto/tls sends): OpenSSL 3.0 serializes and re-parses the session, peer
  // certificate included, for each ticket; the second (OpenSSL's default) cost 7% of a handshake's CPU here.
  SSL_CTX_set_num_tickets(x, 1);
  auto* d = new (std::nothrow) CtxData{e};
  if (!d) return "out of memory";
  if (keys.size() == 48) {
    memcpy(d->keys.name, keys.data(), 16);
    memcpy(d->keys.hmac, keys.data() + 16, 16);
    memcpy(d->keys.aes, keys.data() + 32, 16);
    d->haveKeys = true;
  }
  if (!SSL_CTX_set_ex_data(x, ctxDataIndex, d)) {
    delete d;
    return lastSslError("cannot attach the ticket keys");
  }
  SSL_CTX_set_tlsext_ticket_key_evp_cb(x, ticketCallback);
  *out = ctx.release();
  return "";
}

}  // namespace mtls_relay
