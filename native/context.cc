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
  if (d) {
    OPENSSL_cleanse(&d->keys, sizeof d->keys);
    for (auto& r : d->revoked) X509_NAME_free(r.issuer);
  }
  delete d;
}

// The content octets of a certificate's serial INTEGER, as they are in its DER (and in a CRL entry's).
static std::string serialOctets(X509* cert) {
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert);
  unsigned char buf[160];
  int n = serial ? i2d_ASN1_INTEGER(serial, nullptr) : -1;
  if (n <= 2 || n > int(sizeof buf)) return std::string();
  unsigned char* p = buf;
  i2d_ASN1_INTEGER(serial, &p);
  int header = buf[1] < 0x80 ? 2 : 2 + (buf[1] & 0x7f);
  return header < n ? std::string(reinterpret_cast<char*>(buf) + header, size_t(n - header)) : std::string();
}

bool isRevoked(const CtxData* d, X509* cert) {
  if (!d || d->revoked.empty() || !cert) return false;
  const X509_NAME* issuer = X509_get_issuer_name(cert);
  std::string serial;
  for (const auto& r : d->revoked) {
    if (X509_NAME_cmp(issuer, r.issuer) != 0) continue;
    if (serial.empty()) serial = serialOctets(cert);
    if (r.serials.count(serial)) return true;
  }
  return false;
}

// Layout, all lengths big-endian: per CRL, u32 issuer length, the issuer Name (DER), u32 count, then count times a
// u8 length and the serial's content octets. At least one CRL.
std::string parseRevocations(const std::vector<uint8_t>& b, std::vector<RevokedSet>& out) {
  size_t i = 0;
  auto u32 = [&](uint32_t& v) {
    if (b.size() - i < 4) return false;
    v = (uint32_t(b[i]) << 24) | (uint32_t(b[i + 1]) << 16) | (uint32_t(b[i + 2]) << 8) | b[i + 3];
    i += 4;
    return true;
  };
  auto fail = [&](const char* why) {
    for (auto& r : out) X509_NAME_free(r.issuer);
    out.clear();
    return std::string("native relay: malformed revocation data (") + why + ")";
  };
  while (i < b.size()) {
    uint32_t len, count;
    if (!u32(len) || b.size() - i < len) return fail("issuer");
    const unsigned char* p = b.data() + i;
    X509_NAME* name = d2i_X509_NAME(nullptr, &p, long(len));
    if (!name || p != b.data() + i + len) {
      X509_NAME_free(name);
      return fail("issuer name");
    }
    i += len;
    out.push_back(RevokedSet{name, {}});
    if (!u32(count) || count > (b.size() - i) / 2) return fail("count");
    out.back().serials.reserve(count);
    for (uint32_t k = 0; k < count; k++) {
      if (i >= b.size()) return fail("serial");
      size_t n = b[i++];
      if (n == 0 || b.size() - i < n) return fail("serial");
      out.back().serials.emplace(reinterpret_cast<const char*>(b.data() + i), n);
      i += n;
    }
  }
  if (out.empty()) return fail("no CRL");
  ERR_clear_error();
  return "";
}

// The handshake's verify callback: OpenSSL's verdict, and then our revocation sets for each certificate of the
// chain (the alert is certificate_revoked, as with OpenSSL's own CRL check).
static int verifyCallback(int ok, X509_STORE_CTX* x) {
  if (!ok) return 0;
  auto* s = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx()));
  const CtxData* d = s ? ctxData(SSL_get_SSL_CTX(s)) : nullptr;
  if (d && isRevoked(d, X509_STORE_CTX_get_current_cert(x))) {
    X509_STORE_CTX_set_error(x, X509_V_ERR_CERT_REVOKED);
    return 0;
  }
  return 1;
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
// `revoked` null: no revocation checking; otherwise the encoded revocation sets (parseRevocations), at least one
// (an empty or garbage CRL file must never mean "nothing is revoked").

// The server's status callback: a copy of the engine's current staple (OpenSSL frees it), or no staple.
static int stapleCallback(SSL* ssl, void*) {
  CtxData* d = ctxData(SSL_get_SSL_CTX(ssl));
  if (!d) return SSL_TLSEXT_ERR_NOACK;
  std::shared_ptr<const std::vector<uint8_t>> staple;
  {
    std::lock_guard<std::mutex> g(d->e->mu);
    staple = d->e->staple;
  }
  if (!staple || staple->empty()) return SSL_TLSEXT_ERR_NOACK;
  auto* copy = static_cast<unsigned char*>(OPENSSL_malloc(staple->size()));
  if (!copy) return SSL_TLSEXT_ERR_NOACK;
  memcpy(copy, staple->data(), staple->size());
  if (!SSL_set_tlsext_status_ocsp_resp(ssl, copy, static_cast<long>(staple->size()))) {
    OPENSSL_free(copy);
    return SSL_TLSEXT_ERR_NOACK;
  }
  return SSL_TLSEXT_ERR_OK;
}

std::string buildContext(Engine* e, const std::string& cert, const std::string& key, const std::string& ca, const std::vector<uint8_t>* revoked,
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
  std::vector<RevokedSet> sets;
  if (revoked) {
    std::string err = parseRevocations(*revoked, sets);
    if (!err.empty()) return err;
  }
  SSL_CTX_set_verify(x, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verifyCallback);
  // OCSP stapling (RFC 6066 8): called only for a client that asked (status_request); staples what JS set, if any.
  SSL_CTX_set_tlsext_status_cb(x, stapleCallback);
  SSL_CTX_set_session_id_context(x, SESSION_CONTEXT, sizeof SESSION_CONTEXT - 1);
  SSL_CTX_set_session_cache_mode(x, SSL_SESS_CACHE_OFF);  // resumption by tickets only (keys shared by workers)
  // One ticket per handshake (as Go's crypto/tls sends): OpenSSL 3.0 serializes and re-parses the session, peer
  // certificate included, for each ticket; the second (OpenSSL's default) cost 7% of a handshake's CPU here.
  SSL_CTX_set_num_tickets(x, 1);
  auto* d = new (std::nothrow) CtxData{e};
  if (!d) {
    for (auto& r : sets) X509_NAME_free(r.issuer);
    return "out of memory";
  }
  d->revoked = std::move(sets);
  if (keys.size() == 48) {
    memcpy(d->keys.name, keys.data(), 16);
    memcpy(d->keys.hmac, keys.data() + 16, 16);
    memcpy(d->keys.aes, keys.data() + 32, 16);
    d->haveKeys = true;
  }
  if (!SSL_CTX_set_ex_data(x, ctxDataIndex, d)) {
    for (auto& r : d->revoked) X509_NAME_free(r.issuer);
    delete d;
    return lastSslError("cannot attach the ticket keys");
  }
  SSL_CTX_set_tlsext_ticket_key_evp_cb(x, ticketCallback);
  *out = ctx.release();
  return "";
}

}  // namespace mtls_relay
