// The native data path of `mtls proxy server` in TCP mode (src/proxy/native-listener.ts drives it).
//
// Why it exists: a relay on Node's TLS socket pays a JavaScript callback, the stream machinery and an event-loop
// turn for every read, and that put the proxy's echo latency 10-20% behind stunnel on every run, with a bare Node
// relay no better (BENCHMARKS.md, "What is Node's cost and what is mtlskit's"). Here one thread per listener runs
// an epoll loop with OpenSSL (Node's own build, linked from the node binary): TLS handshakes and the byte relay
// never enter JavaScript. JavaScript keeps everything that decides: it accepts the TCP connection and hands over
// the file descriptor, gets the verified peer certificate (DER) when the handshake finishes, applies the policy,
// and answers admit (with the target address and an optional PROXY v2 header) or reject. Nothing reaches the
// target before that answer.
//
// Threads: JavaScript calls only queue commands (mutex + eventfd) or swap the TLS context and ticket keys (under
// a mutex); all connection state lives on the engine thread. Events go back through a thread-safe function.
//
// Verification is OpenSSL's, configured like Node's server with requestCert + rejectUnauthorized + crl: the
// client certificate is required, its chain verified against the trust bundle with the "sslclient" purpose (the
// clientAuth EKU; a server certificate is refused) and, with CRLs, revocation checked for every certificate of
// the chain. Secure defaults as in src/tls/options.ts: TLS 1.2 minimum, ECDHE with AEAD only, X25519/P-256/P-384.

#include <node_api.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

constexpr size_t CHUNK = 64 * 1024;  // one read from either side
constexpr int SWEEP_MS = 250;        // limits are checked this often (as src/proxy/relay.ts does)
constexpr uint64_t WAKE = UINT64_MAX;

const char* const CIPHERS =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305";
const char* const GROUPS = "X25519:P-256:P-384";
const unsigned char SESSION_CONTEXT[] = "mtlskit proxy";

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

// Bytes waiting to be written to one side (only while that side pushes back; an idle connection holds none).
struct Pending {
  std::unique_ptr<uint8_t[]> data;
  size_t off = 0, len = 0;
  bool empty() const { return off == len; }
  const uint8_t* ptr() const { return data.get() + off; }
  size_t size() const { return len - off; }
  // false when memory ran out (the engine thread must not throw: the caller closes the connection)
  bool set(const uint8_t* p, size_t n) {
    data.reset(new (std::nothrow) uint8_t[n]);
    if (!data) {
      off = len = 0;
      return false;
    }
    memcpy(data.get(), p, n);
    off = 0;
    len = n;
    return true;
  }
  void consumed(size_t n) {
    off += n;
    if (off == len) clear();
  }
  void clear() {
    data.reset();
    off = len = 0;
  }
};

enum class Stage { Handshake, Deciding, Connecting, Relay };
const char* stageName(Stage s) {
  switch (s) {
    case Stage::Handshake: return "handshake";
    case Stage::Deciding: return "deciding";
    case Stage::Connecting: return "connecting";
    default: return "relay";
  }
}

struct Conn {
  uint64_t id = 0;  // 64-bit: never reused while a connection lives (2^32 accepts would wrap a 32-bit id)
  int cfd = -1, tfd = -1;
  SSL* ssl = nullptr;
  Stage stage = Stage::Handshake;
  uint64_t handshakeDeadline = 0, lifeDeadline = UINT64_MAX, last = 0;
  uint64_t up = 0, down = 0, seen = 0;
  Pending toTarget;  // plaintext from the client (and the PROXY header) waiting for the target
  Pending toClient;  // plaintext from the target waiting for SSL_write
  bool clientEnded = false, targetEnded = false;  // each side's end of stream (close_notify or FIN; FIN)
  bool targetShut = false, clientShut = false;    // we ended our writes to each side
  bool targetIdle = false, clientIdle = false;    // that side is done both ways and out of the epoll set
  bool targetHup = false, clientHup = false;      // that side reported a hang-up (it is reported at every wait)
  bool targetParked = false, clientParked = false;  // hung up, waiting for the other side: out of the epoll set
  int handshakeWants = EPOLLIN;  // the handshake waits for this on the client socket
  int readWants = 0;             // SSL_read waits to write (a KeyUpdate answer): EPOLLOUT, cleared when it progresses
  int writeWants = 0;            // SSL_write or SSL_shutdown waits for this on the client socket
  uint32_t cev = 0, tev = 0;     // registered epoll interest
};

enum EventType { SECURED = 1, CLOSED = 2 };
struct Event {
  EventType type;
  uint64_t id = 0;
  std::vector<uint8_t> der;
  std::string version, cipher, sni, why, code, reason;
  bool resumed = false;
  const char* stage = "";
  uint64_t bytesIn = 0, up = 0, down = 0;
};

enum CmdType { ADD, ADMIT, REJECT, CLOSE_ALL, STOP };
struct Cmd {
  CmdType type;
  uint64_t id = 0;
  int fd = -1;
  sockaddr_storage addr{};
  socklen_t addrLen = 0;
  std::vector<uint8_t> header;
};

struct Limits {
  uint64_t handshakeMs = 10000, idleMs = 300000, lifetimeMs = 0;
};

struct TicketKeys {
  unsigned char name[16], hmac[16], aes[16];
};

struct Engine;

// What belongs to one SSL_CTX (one version of certificate, trust bundle and CRLs): its ticket keys. A ticket is
// sealed and opened only with the keys of the context that verified the session, so a reload that changes the
// trust cannot let a session verified under the old trust be sealed with the new keys (issue 18.1).
struct CtxData {
  Engine* e;
  TicketKeys keys{};
  bool haveKeys = false;
};
int ctxDataIndex = -1;
void freeCtxData(void*, void* p, CRYPTO_EX_DATA*, int, long, void*) {
  auto* d = static_cast<CtxData*>(p);
  if (d) OPENSSL_cleanse(&d->keys, sizeof d->keys);
  delete d;
}
CtxData* ctxData(SSL_CTX* ctx) { return static_cast<CtxData*>(SSL_CTX_get_ex_data(ctx, ctxDataIndex)); }

// One thread with its epoll loop and the connections it was given (all of their state lives here).
struct Loop {
  Engine* e;
  std::thread thread;
  int ep = -1, wake = -1;
  std::mutex mu;  // guards cmds
  std::vector<Cmd> cmds;

  // this loop's thread only
  std::unordered_map<uint64_t, Conn*> conns;
  std::unique_ptr<uint8_t[]> scratch{new uint8_t[CHUNK]};
  bool stopping = false;
  uint64_t lastSweep = 0;

  explicit Loop(Engine* engine) : e(engine) {}
  void post(std::unique_ptr<Event> ev);
  void command(Cmd c) {
    {
      std::lock_guard<std::mutex> g(mu);
      cmds.push_back(std::move(c));
    }
    uint64_t one = 1;
    (void)!write(wake, &one, sizeof one);
  }

  void run();
  void runCommands();
  void dispatch(uint64_t data, uint32_t events);
  void sweep();
  void add(int fd, uint64_t id);
  void admit(Conn* c, const Cmd& cmd);
  void handshake(Conn* c);
  void secured(Conn* c);
  void pumpUp(Conn* c);
  void pumpDown(Conn* c);
  void settle(uint64_t id);
  bool stillTrusted(Conn* c);
  void closeGracefully(Conn* c, const std::string& why, const std::string& code = "", const std::string& reason = "");
  void arm(Conn* c);
  void register_(Conn* c, bool target, uint32_t want);
  void close(Conn* c, const std::string& why, const std::string& code = "", const std::string& reason = "");
  void dropForMemory(Conn* c);
};

// A listener's engine: its loops (a connection stays on the loop its id picks) and what they share.
struct Engine {
  napi_threadsafe_function tsfn = nullptr;
  std::atomic<uint64_t> nextId{1};
  std::vector<std::unique_ptr<Loop>> loops;
  bool running = false;
  napi_env env = nullptr;

  std::mutex mu;  // guards ctx (and its CtxData keys), limits
  SSL_CTX* ctx = nullptr;
  Limits limits;

  // Stops the threads (closing what is left) and frees what the engine holds; safe to call twice.
  void shutdown();
  ~Engine();

  // Commands for one connection go to its loop; the others to every loop.
  void command(Cmd c) {
    if (c.type == CLOSE_ALL || c.type == STOP) {
      for (auto& l : loops) l->command(c);
      return;
    }
    loops[c.id % loops.size()]->command(std::move(c));
  }
};

// The event goes to JavaScript; when that is no longer possible (the engine is closing), it is freed here.
void Loop::post(std::unique_ptr<Event> ev) {
  Event* raw = ev.release();
  if (napi_call_threadsafe_function(e->tsfn, raw, napi_tsfn_nonblocking) != napi_ok) delete raw;
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

// ---- engine thread ----

void Loop::run() {
  epoll_event evs[256];
  lastSweep = nowMs();
  while (!stopping) {
    int n = epoll_wait(ep, evs, 256, SWEEP_MS);
    for (int i = 0; i < n; i++) {
      // Memory running out on this thread (an event, a map node, a command batch) must not terminate the process:
      // the connection whose event it was is closed and the loop goes on.
      try {
        if (evs[i].data.u64 == WAKE) {
          uint64_t v;
          (void)!read(wake, &v, sizeof v);
          runCommands();
        } else {
          dispatch(evs[i].data.u64, evs[i].events);
        }
      } catch (const std::bad_alloc&) {
        auto it = conns.find(evs[i].data.u64 >> 1);
        if (evs[i].data.u64 != WAKE && it != conns.end()) dropForMemory(it->second);
      }
    }
    try {
      if (nowMs() - lastSweep >= SWEEP_MS) sweep();
    } catch (const std::bad_alloc&) {
      lastSweep = nowMs();
    }
  }
  for (auto it = conns.begin(); it != conns.end();) close((it++)->second, "engine stopped");
}

void Loop::runCommands() {
  std::vector<Cmd> batch;
  {
    std::lock_guard<std::mutex> g(mu);
    batch.swap(cmds);
  }
  for (Cmd& c : batch) {
    if (c.type == ADD) {
      add(c.fd, c.id);
      continue;
    }
    if (c.type == STOP) {
      stopping = true;
      continue;
    }
    if (c.type == CLOSE_ALL) {
      for (auto it = conns.begin(); it != conns.end();) close((it++)->second, "drain timeout");
      continue;
    }
    auto it = conns.find(c.id);
    if (it == conns.end()) {
      continue;  // gone meanwhile (its CLOSED event is on the way)
    }
    Conn* conn = it->second;
    if (conn->stage != Stage::Deciding) continue;
    if (c.type == REJECT) closeGracefully(conn, "denied");
    else admit(conn, c);
  }
}

void Loop::add(int fd, uint64_t id) {
  SSL_CTX* ctx;
  Limits lim;
  {
    std::lock_guard<std::mutex> g(e->mu);
    ctx = e->ctx;
    if (ctx) SSL_CTX_up_ref(ctx);
    lim = e->limits;
  }
  auto* c = new (std::nothrow) Conn();
  if (!c) {
    if (ctx) SSL_CTX_free(ctx);
    ::close(fd);
    auto ev = std::make_unique<Event>();
    ev->type = CLOSED;
    ev->id = id;
    ev->stage = stageName(Stage::Handshake);
    ev->why = "out of memory";
    ev->code = "HANDSHAKE_FAILED";
    post(std::move(ev));
    return;
  }
  c->id = id;
  c->cfd = fd;
  conns[id] = c;
  uint64_t now = nowMs();
  c->last = now;
  c->handshakeDeadline = now + lim.handshakeMs;
  if (lim.lifetimeMs) c->lifeDeadline = now + lim.lifetimeMs;
  if (!ctx) return close(c, "no TLS context", "HANDSHAKE_FAILED", "the listener has no certificate loaded");
  c->ssl = SSL_new(ctx);
  SSL_CTX_free(ctx);
  if (!c->ssl || !SSL_set_fd(c->ssl, fd)) return close(c, "out of memory", "HANDSHAKE_FAILED", "SSL_new failed");
  SSL_set_accept_state(c->ssl);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails harmlessly on a unix socket
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = uint64_t(id) << 1;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) return close(c, errnoName(errno), errnoName(errno), "epoll_ctl failed");
  c->cev = EPOLLIN;
  handshake(c);
}

void Loop::dispatch(uint64_t data, uint32_t events) {
  auto it = conns.find(data >> 1);
  if (it == conns.end()) return;
  Conn* c = it->second;
  bool target = data & 1;
  switch (c->stage) {
    case Stage::Handshake: return handshake(c);
    case Stage::Deciding:
      // Waiting for JavaScript's answer with no interest registered: only a hang-up or error reports here.
      if (events & (EPOLLHUP | EPOLLERR)) close(c, "peer closed");
      return;
    case Stage::Connecting: {
      if (!target) {
        if (events & (EPOLLHUP | EPOLLERR)) close(c, "peer closed");
        return;
      }
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c->tfd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err) return closeGracefully(c, errnoName(err), "TARGET_UNREACHABLE", errnoName(err));
      c->stage = Stage::Relay;
      c->last = nowMs();
      uint64_t id = c->id;
      pumpUp(c);  // the PROXY header, then what the client sent already
      if (conns.count(id)) pumpDown(c);  // a quick target may have answered and closed already
      return settle(id);
    }
    case Stage::Relay: {
      uint64_t id = c->id;
      // A reset (or any socket error) on either side ends the connection: nothing more can be delivered through
      // it, and an error stays reported at every wait, so leaving the side armed would spin this loop (issue 18.2:
      // half-close, then RST, with a silent peer on the other side).
      if (events & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(target ? c->tfd : c->cfd, SOL_SOCKET, SO_ERROR, &err, &len);
        return close(c, err ? errnoName(err) : "ECONNRESET");
      }
      bool readable = events & (EPOLLIN | EPOLLHUP);
      bool writable = events & (EPOLLOUT | EPOLLHUP);
      if (events & EPOLLHUP) (target ? c->targetHup : c->clientHup) = true;
      uint64_t before = c->up + c->down;
      bool wasEnded = target ? c->targetEnded : c->clientEnded;
      if (target) {
        if (writable) pumpUp(c);
        if (conns.count(id) && readable) pumpDown(c);
      } else {
        // SSL_read may need to write (a KeyUpdate answer) and SSL_write to read: both look at both events.
        if (readable || (writable && c->readWants)) pumpUp(c);
        if (conns.count(id) && (writable || (readable && c->writeWants == EPOLLIN))) pumpDown(c);
      }
      if (!conns.count(id)) return;
      // A hang-up is reported whatever we wait for. When it moved nothing and that side does not wait for the other
      // (which arm() handles by taking it out of the epoll set until the other side drains), it can neither send
      // nor take anything more: end the connection rather than wake up for it again and again.
      bool progressed = c->up + c->down != before || wasEnded != (target ? c->targetEnded : c->clientEnded);
      bool waitsForOther = target ? (!c->toClient.empty() || c->writeWants) : !c->toTarget.empty();
      bool doneBoth = target ? (c->targetEnded && c->targetShut) : (c->clientEnded && c->clientShut);
      if ((events & EPOLLHUP) && !progressed && !waitsForOther && !doneBoth) return close(c, "peer closed");
      return settle(id);
    }
  }
}

void Loop::handshake(Conn* c) {
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) return secured(c);
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    c->handshakeWants = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
    arm(c);
    return;
  }
  long verify = SSL_get_verify_result(c->ssl);
  unsigned long err = ERR_peek_last_error();
  std::string code, reason;
  if (verify != X509_V_OK) {
    code = verifyName(verify);
    reason = X509_verify_cert_error_string(verify);
  } else if (err) {
    code = sslCode(err);
    char buf[256];
    ERR_error_string_n(err, buf, sizeof buf);
    reason = buf;
  } else if (e == SSL_ERROR_SYSCALL && errno != 0) {
    code = errnoName(errno);
    reason = strerror(errno);
  } else {
    code = "ECONNRESET";
    reason = "the client closed the connection during the handshake";
  }
  close(c, verify != X509_V_OK ? "verify failed" : "handshake failed", code, reason);
}

// Whether the verified peer still passes the engine's current trust bundle and CRLs. The connection took the
// context current at its accept; a reload may have replaced it while the handshake ran (issue 18.1: a TCP
// connection opened before a CRL reload and handshaking after it was verified against the old CRL). Then the
// chain is verified again, by OpenSSL, against the current store, as the handshake would have done.
bool Loop::stillTrusted(Conn* c) {
  SSL_CTX* cur;
  {
    std::lock_guard<std::mutex> g(e->mu);
    cur = e->ctx;
    if (cur == SSL_get_SSL_CTX(c->ssl)) return true;
    if (cur) SSL_CTX_up_ref(cur);
  }
  if (!cur) return false;
  X509* leaf = SSL_get0_peer_certificate(c->ssl);
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(c->ssl);  // on a server: the client's chain without the leaf
  X509_STORE_CTX* v = X509_STORE_CTX_new();
  bool ok = false;
  long err = X509_V_ERR_UNSPECIFIED;
  if (v && leaf && X509_STORE_CTX_init(v, SSL_CTX_get_cert_store(cur), leaf, chain) == 1) {
    X509_STORE_CTX_set_default(v, "ssl_client");  // what OpenSSL uses for a client's chain: purpose sslclient
    ok = X509_verify_cert(v) == 1;
    err = X509_STORE_CTX_get_error(v);
  }
  X509_STORE_CTX_free(v);
  SSL_CTX_free(cur);
  if (!ok) {
    if (err == X509_V_OK) err = X509_V_ERR_UNSPECIFIED;
    close(c, "verify failed", verifyName(err), std::string(X509_verify_cert_error_string(err)) + " (the trust bundle or CRLs changed during the handshake)");
  }
  return ok;
}

void Loop::secured(Conn* c) {
  if (!stillTrusted(c)) return;
  auto ev = std::make_unique<Event>();
  ev->type = SECURED;
  ev->id = c->id;
  X509* peer = SSL_get0_peer_certificate(c->ssl);
  if (peer && SSL_get_verify_result(c->ssl) == X509_V_OK) {
    int n = i2d_X509(peer, nullptr);
    if (n > 0) {
      ev->der.resize(size_t(n));
      unsigned char* p = ev->der.data();
      i2d_X509(peer, &p);
    }
  }
  ev->version = SSL_get_version(c->ssl);
  const SSL_CIPHER* cipher = SSL_get_current_cipher(c->ssl);
  const char* std = cipher ? SSL_CIPHER_standard_name(cipher) : nullptr;
  ev->cipher = std ? std : "";
  const char* sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
  ev->sni = sni ? sni : "";
  ev->resumed = SSL_session_reused(c->ssl) == 1;
  c->stage = Stage::Deciding;
  arm(c);
  post(std::move(ev));
}

// A client that is denied, or whose target cannot be reached, gets close_notify and a FIN, not a reset: what it
// sent meanwhile is read and dropped first (closing a socket with unread bytes makes the kernel send RST).
void Loop::closeGracefully(Conn* c, const std::string& why, const std::string& code, const std::string& reason) {
  for (int i = 0; i < 16; i++) {
    if (recv(c->cfd, scratch.get(), CHUNK, MSG_DONTWAIT) <= 0) break;
  }
  ERR_clear_error();
  SSL_shutdown(c->ssl);
  shutdown(c->cfd, SHUT_WR);
  close(c, why, code, reason);
}

void Loop::admit(Conn* c, const Cmd& cmd) {
  int fd = socket(cmd.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return closeGracefully(c, errnoName(errno), "TARGET_UNREACHABLE", errnoName(errno));
  c->tfd = fd;
  if (cmd.addr.ss_family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  if (!cmd.header.empty() && !c->toTarget.set(cmd.header.data(), cmd.header.size())) return closeGracefully(c, "out of memory", "TARGET_UNREACHABLE", "out of memory");
  c->stage = Stage::Connecting;
  epoll_event ev{};
  ev.events = EPOLLOUT;
  ev.data.u64 = (uint64_t(c->id) << 1) | 1;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) return close(c, errnoName(errno), "TARGET_UNREACHABLE", errnoName(errno));
  c->tev = EPOLLOUT;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&cmd.addr), cmd.addrLen) != 0 && errno != EINPROGRESS) {
    int err = errno == EAGAIN ? ECONNREFUSED : errno;  // a unix socket with a full backlog
    return closeGracefully(c, errnoName(err), "TARGET_UNREACHABLE", errnoName(err));
  }
  arm(c);
}

// Client -> target: whatever waits for the target first, then SSL_read until the client has no more (or the
// target pushes back). The client's end (close_notify, or FIN without it, as Node's TLS socket treats it)
// becomes a FIN to the target once everything before it is written.
void Loop::pumpUp(Conn* c) {
  uint8_t* buf = scratch.get();
  for (;;) {
    if (!c->toTarget.empty()) {
      ssize_t n = send(c->tfd, c->toTarget.ptr(), c->toTarget.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        return close(c, errnoName(errno));
      }
      c->toTarget.consumed(size_t(n));
      if (!c->toTarget.empty()) return;
    }
    if (c->clientEnded) {
      if (!c->targetShut) {
        shutdown(c->tfd, SHUT_WR);
        c->targetShut = true;
      }
      return;
    }
    size_t got = 0;
    bool more = true;
    while (got < CHUNK) {
      size_t n = 0;
      ERR_clear_error();
      if (SSL_read_ex(c->ssl, buf + got, CHUNK - got, &n) == 1) {
        c->readWants = 0;
        got += n;
        continue;
      }
      int e = SSL_get_error(c->ssl, 0);
      if (e == SSL_ERROR_WANT_READ) {
        more = false;
        c->readWants = 0;
      } else if (e == SSL_ERROR_ZERO_RETURN) {
        c->clientEnded = true;
        c->readWants = 0;
      } else if (e == SSL_ERROR_WANT_WRITE) {
        more = false;  // a KeyUpdate answer waits for the socket; the write side's EPOLLOUT resumes it
        c->readWants = EPOLLOUT;
      } else {
        unsigned long err = ERR_peek_last_error();
        return close(c, err ? sslCode(err) : (errno ? errnoName(errno) : "ECONNRESET"));
      }
      break;
    }
    if (got) {
      c->up += got;
      ssize_t n = send(c->tfd, buf, got, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) return close(c, errnoName(errno));
        n = 0;
      }
      if (size_t(n) < got) {
        if (!c->toTarget.set(buf + n, got - size_t(n))) return close(c, "out of memory");
        return;
      }
    }
    if (!more && !c->clientEnded) return;
  }
}

// Target -> client: recv, then SSL_write; the rest waits when the client pushes back. The target's FIN becomes
// close_notify and a FIN to the client (half-close: the client may go on sending).
void Loop::pumpDown(Conn* c) {
  uint8_t* buf = scratch.get();
  for (;;) {
    if (!c->toClient.empty()) {
      size_t n = 0;
      ERR_clear_error();
      if (SSL_write_ex(c->ssl, c->toClient.ptr(), c->toClient.size(), &n) == 1) {
        c->writeWants = 0;
        c->toClient.consumed(n);
        continue;
      }
      int e = SSL_get_error(c->ssl, 0);
      if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        c->writeWants = e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
        return;
      }
      unsigned long err = ERR_peek_last_error();
      return close(c, err ? sslCode(err) : (errno ? errnoName(errno) : "EPIPE"));
    }
    if (c->targetEnded) {
      if (!c->clientShut) {
        ERR_clear_error();
        int r = SSL_shutdown(c->ssl);
        if (r < 0) {
          int e = SSL_get_error(c->ssl, r);
          if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            c->writeWants = e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
            return;
          }
          // the client is gone already; nothing more to say to it
        }
        c->writeWants = 0;
        shutdown(c->cfd, SHUT_WR);
        c->clientShut = true;
      }
      return;
    }
    ssize_t n = recv(c->tfd, buf, CHUNK, 0);
    if (n == 0) {
      c->targetEnded = true;
      continue;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      return close(c, errnoName(errno));
    }
    c->down += uint64_t(n);
    if (!c->toClient.set(buf, size_t(n))) return close(c, "out of memory");
  }
}

// After the pumps ran (either may have closed the connection): finished both ways, or wait for what is next.
void Loop::settle(uint64_t id) {
  auto it = conns.find(id);
  if (it == conns.end()) return;
  Conn* c = it->second;
  if (c->targetShut && c->clientShut) return close(c, "closed");
  arm(c);
}

// Registers what each socket waits for now: a side is read only while nothing from it waits to be written.
void Loop::arm(Conn* c) {
  uint32_t cev = 0, tev = 0;
  switch (c->stage) {
    case Stage::Handshake: cev = uint32_t(c->handshakeWants); break;
    case Stage::Deciding: break;
    case Stage::Connecting: tev = EPOLLOUT; break;
    case Stage::Relay:
      // A side done both ways leaves the epoll set: a socket shut down both ways reports EPOLLHUP whatever it is
      // registered for, which would spin this loop while the other side finishes. (It is closed with the rest.)
      if (c->targetEnded && c->targetShut && !c->targetIdle) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->tfd, nullptr);
        c->targetIdle = true;
      }
      if (c->clientEnded && c->clientShut && !c->clientIdle) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->cfd, nullptr);
        c->clientIdle = true;
      }
      if (!c->clientEnded && c->toTarget.empty()) cev |= EPOLLIN;
      if (c->readWants) cev |= uint32_t(c->readWants);
      if (c->writeWants) cev |= uint32_t(c->writeWants);
      if (!c->targetEnded && c->toClient.empty() && !c->writeWants) tev |= EPOLLIN;
      if (!c->toTarget.empty()) tev |= EPOLLOUT;
      break;
  }
  register_(c, false, cev);
  register_(c, true, tev);
}

// Brings one side's epoll registration to `want`. A side that hung up and has nothing to wait for now (it waits
// for the other side to drain) is taken out of the set, since a hang-up is reported whatever the interest and
// would spin the loop; it is added back as soon as there is something to wait for.
void Loop::register_(Conn* c, bool target, uint32_t want) {
  int fd = target ? c->tfd : c->cfd;
  bool idle = target ? c->targetIdle : c->clientIdle;
  bool hup = target ? c->targetHup : c->clientHup;
  bool& parked = target ? c->targetParked : c->clientParked;
  uint32_t& have = target ? c->tev : c->cev;
  if (fd < 0 || idle) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = (c->id << 1) | (target ? 1 : 0);
  if (hup && want == 0) {
    if (!parked) epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    parked = true;
    have = 0;
    return;
  }
  if (parked) {
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    parked = false;
    have = want;
    return;
  }
  if (want != have) {
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
    have = want;
  }
}

void Loop::sweep() {
  uint64_t now = nowMs();
  lastSweep = now;
  Limits lim;
  {
    std::lock_guard<std::mutex> g(e->mu);
    lim = e->limits;
  }
  std::vector<std::pair<Conn*, const char*>> doomed;
  for (auto& [id, c] : conns) {
    if (c->stage == Stage::Handshake || c->stage == Stage::Deciding) {
      if (now >= c->handshakeDeadline) doomed.emplace_back(c, "HANDSHAKE_TIMEOUT");
      continue;
    }
    if (now >= c->lifeDeadline) {
      doomed.emplace_back(c, "max lifetime");
    } else if (c->up + c->down != c->seen) {
      c->seen = c->up + c->down;
      c->last = now;
    } else if (lim.idleMs && now - c->last >= lim.idleMs) {
      doomed.emplace_back(c, "idle timeout");
    }
  }
  for (auto& [c, why] : doomed) {
    if (c->stage == Stage::Handshake) close(c, why, why, "");
    else close(c, why);
  }
}

void Loop::close(Conn* c, const std::string& why, const std::string& code, const std::string& reason) {
  auto ev = std::make_unique<Event>();
  ev->type = CLOSED;
  ev->id = c->id;
  ev->stage = stageName(c->stage);
  ev->why = why;
  ev->code = code;
  ev->reason = reason;
  ev->up = c->up;
  ev->down = c->down;
  if (c->ssl) {
    BIO* rbio = SSL_get_rbio(c->ssl);
    ev->bytesIn = rbio ? BIO_number_read(rbio) : 0;
    SSL_free(c->ssl);
  }
  if (c->cfd >= 0) ::close(c->cfd);  // closing removes it from the epoll set
  if (c->tfd >= 0) ::close(c->tfd);
  conns.erase(c->id);
  delete c;
  ERR_clear_error();
  post(std::move(ev));
}

// Out of memory: the connection goes without its CLOSED event if even that cannot be allocated (its descriptors
// and TLS state are freed either way; JavaScript's count catches up at the drain).
void Loop::dropForMemory(Conn* c) {
  try {
    close(c, "out of memory");
  } catch (const std::bad_alloc&) {
    if (c->ssl) SSL_free(c->ssl);
    if (c->cfd >= 0) ::close(c->cfd);
    if (c->tfd >= 0) ::close(c->tfd);
    conns.erase(c->id);
    delete c;
  }
}

// ---- JavaScript side ----

#define NAPI(call)                                                        \
  do {                                                                    \
    if ((call) != napi_ok) {                                              \
      napi_throw_error(env, "MTLS_NATIVE", "native relay: " #call " failed"); \
      return nullptr;                                                     \
    }                                                                     \
  } while (0)

napi_value throwError(napi_env env, const std::string& msg) {
  napi_throw_error(env, "MTLS_NATIVE", msg.c_str());
  return nullptr;
}

void setStr(napi_env env, napi_value obj, const char* key, const std::string& v) {
  napi_value s;
  napi_create_string_utf8(env, v.data(), v.size(), &s);
  napi_set_named_property(env, obj, key, s);
}
void setNum(napi_env env, napi_value obj, const char* key, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

void callJs(napi_env env, napi_value fn, void*, void* data) {
  std::unique_ptr<Event> ev(static_cast<Event*>(data));
  if (!env) return;  // the process is going away
  napi_value obj, undef;
  napi_create_object(env, &obj);
  napi_get_undefined(env, &undef);
  setStr(env, obj, "type", ev->type == SECURED ? "secured" : "closed");
  setNum(env, obj, "id", ev->id);
  if (ev->type == SECURED) {
    if (!ev->der.empty()) {
      napi_value buf;
      void* p;
      napi_create_buffer_copy(env, ev->der.size(), ev->der.data(), &p, &buf);
      napi_set_named_property(env, obj, "der", buf);
    }
    setStr(env, obj, "version", ev->version);
    setStr(env, obj, "cipher", ev->cipher);
    setStr(env, obj, "servername", ev->sni);
    napi_value b;
    napi_get_boolean(env, ev->resumed, &b);
    napi_set_named_property(env, obj, "resumed", b);
  } else {
    setStr(env, obj, "stage", ev->stage);
    setStr(env, obj, "why", ev->why);
    setStr(env, obj, "code", ev->code);
    setStr(env, obj, "reason", ev->reason);
    setNum(env, obj, "bytesIn", double(ev->bytesIn));
    setNum(env, obj, "up", double(ev->up));
    setNum(env, obj, "down", double(ev->down));
  }
  napi_call_function(env, undef, fn, 1, &obj, nullptr);
}

Engine* engineOf(napi_env env, napi_value v) {
  void* p = nullptr;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, nullptr, "native relay: not an engine");
    return nullptr;
  }
  return static_cast<Engine*>(p);
}

bool getArgs(napi_env env, napi_callback_info info, size_t want, napi_value* argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < want) {
    napi_throw_type_error(env, nullptr, "native relay: missing arguments");
    return false;
  }
  return true;
}

// The arguments of a call whose first argument is an engine; null (with a JS exception pending) when wrong.
Engine* engineCall(napi_env env, napi_callback_info info, size_t want, napi_value* argv) {
  return getArgs(env, info, want, argv) ? engineOf(env, argv[0]) : nullptr;
}

bool getString(napi_env env, napi_value v, std::string& out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_null || t == napi_undefined) {
    out.clear();
    return true;
  }
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &len) != napi_ok) return false;
  out.resize(len);
  size_t got = 0;
  napi_get_value_string_utf8(env, v, out.data(), len + 1, &got);
  out.resize(got);
  return true;
}

bool getBytes(napi_env env, napi_value v, std::vector<uint8_t>& out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_null || t == napi_undefined) return true;
  void* p;
  size_t len;
  if (napi_get_buffer_info(env, v, &p, &len) != napi_ok) return false;
  out.assign(static_cast<uint8_t*>(p), static_cast<uint8_t*>(p) + len);
  return true;
}

uint32_t getU32(napi_env env, napi_value v) {
  uint32_t n = 0;
  napi_get_value_uint32(env, v, &n);
  return n;
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
std::string buildContext(Engine* e, const std::string& cert, const std::string& key, const std::string& ca, const std::string* crl, const std::vector<uint8_t>& keys, SSL_CTX** out) {
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!ctx) return lastSslError("cannot create a TLS context");
  SSL_CTX* x = ctx.get();
  SSL_CTX_set_min_proto_version(x, TLS1_2_VERSION);
  if (!SSL_CTX_set_cipher_list(x, CIPHERS) || !SSL_CTX_set1_groups_list(x, GROUPS)) return lastSslError("cannot set the cipher suites");
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

// ---- engine lifetime ----

void Engine::shutdown() {
  if (running) {
    running = false;
    command(Cmd{STOP});
    for (auto& l : loops) {
      if (l->thread.joinable()) l->thread.join();
    }
  }
  if (tsfn) {
    napi_release_threadsafe_function(tsfn, napi_tsfn_release);  // events already queued are still delivered
    tsfn = nullptr;
  }
  for (auto& l : loops) {
    if (l->ep >= 0) ::close(l->ep);
    if (l->wake >= 0) ::close(l->wake);
    l->ep = l->wake = -1;
  }
  std::lock_guard<std::mutex> g(mu);
  if (ctx) SSL_CTX_free(ctx);
  ctx = nullptr;
}

Engine::~Engine() { shutdown(); }

// The environment goes away (process exit, or a worker thread ending without destroy()): stop the threads before
// the thread-safe function they call is gone.
void cleanupHook(void* p) {
  auto* e = static_cast<Engine*>(p);
  e->env = nullptr;
  e->shutdown();
}

// The JavaScript engine object was collected: free everything (threads stopped first).
void finalizeEngine(napi_env env, void* p, void*) {
  auto* e = static_cast<Engine*>(p);
  if (e->env) napi_remove_env_cleanup_hook(env, cleanupHook, e);
  delete e;
}

// create(onEvent, threads): an engine with `threads` loops (one thread each).
napi_value Create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!getArgs(env, info, 2, argv)) return nullptr;
  uint32_t threads = getU32(env, argv[1]);
  if (threads < 1 || threads > 256) return throwError(env, "native relay: threads must be 1 to 256");
  std::unique_ptr<Engine> e(new Engine());
  for (uint32_t i = 0; i < threads; i++) {
    auto l = std::make_unique<Loop>(e.get());
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    l->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    bool ok = l->ep >= 0 && l->wake >= 0;
    int err = errno;
    e->loops.push_back(std::move(l));  // owned by the engine from here: closed by its destructor on failure
    if (!ok) return throwError(env, "native relay: cannot create epoll/eventfd: " + errnoName(err));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = WAKE;
    epoll_ctl(e->loops.back()->ep, EPOLL_CTL_ADD, e->loops.back()->wake, &ev);
  }
  napi_value name;
  napi_create_string_utf8(env, "mtls native relay", NAPI_AUTO_LENGTH, &name);
  NAPI(napi_create_threadsafe_function(env, argv[0], nullptr, name, 0, 1, nullptr, nullptr, nullptr, callJs, &e->tsfn));
  napi_unref_threadsafe_function(env, e->tsfn);  // the listener's server keeps the process alive, not this
  napi_value ext;
  NAPI(napi_create_external(env, e.get(), finalizeEngine, nullptr, &ext));
  Engine* engine = e.release();  // the external owns it now: freed by finalizeEngine
  engine->env = env;
  napi_add_env_cleanup_hook(env, cleanupHook, engine);
  for (auto& l : engine->loops) {
    Loop* lp = l.get();
    l->thread = std::thread([lp] { lp->run(); });
  }
  engine->running = true;
  return ext;
}

// configure(engine, certPem, keyPem, caPem, crlPem|null, ticketKeys(48), apply): builds a new context, born with
// its own ticket keys, and, with apply, swaps it in (live connections keep theirs); without, only proves that it
// builds. crlPem null: no revocation checking; a string must hold CRLs.
napi_value Configure(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  Engine* e = engineCall(env, info, 7, argv);
  if (!e) return nullptr;
  std::string cert, key, ca, crl;
  std::vector<uint8_t> keys;
  if (!getString(env, argv[1], cert) || !getString(env, argv[2], key) || !getString(env, argv[3], ca) || !getString(env, argv[4], crl)) return throwError(env, "native relay: configure takes PEM strings");
  if (!getBytes(env, argv[5], keys) || keys.size() != 48) return throwError(env, "native relay: ticket keys must be 48 bytes");
  napi_valuetype crlType;
  napi_typeof(env, argv[4], &crlType);
  bool haveCrl = crlType != napi_null && crlType != napi_undefined;
  SSL_CTX* ctx = nullptr;
  std::string err = buildContext(e, cert, key, ca, haveCrl ? &crl : nullptr, keys, &ctx);
  OPENSSL_cleanse(key.data(), key.size());
  OPENSSL_cleanse(keys.data(), keys.size());
  if (!err.empty()) return throwError(env, err);
  bool apply = false;
  napi_get_value_bool(env, argv[6], &apply);
  if (!apply) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  SSL_CTX* old;
  {
    std::lock_guard<std::mutex> g(e->mu);
    old = e->ctx;
    e->ctx = ctx;
  }
  SSL_CTX_free(old);
  return nullptr;
}

// setTicketKeys(engine, Buffer(48)): name, HMAC and AES keys (laid out as Node's server.setTicketKeys) of the
// current context; a context built later is born with the keys given to configure.
napi_value SetTicketKeys(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  Engine* e = engineCall(env, info, 2, argv);
  if (!e) return nullptr;
  std::vector<uint8_t> k;
  if (!getBytes(env, argv[1], k) || k.size() != 48) return throwError(env, "native relay: ticket keys must be 48 bytes");
  std::lock_guard<std::mutex> g(e->mu);
  CtxData* d = e->ctx ? ctxData(e->ctx) : nullptr;
  if (d) {
    memcpy(d->keys.name, k.data(), 16);
    memcpy(d->keys.hmac, k.data() + 16, 16);
    memcpy(d->keys.aes, k.data() + 32, 16);
    d->haveKeys = true;
  }
  OPENSSL_cleanse(k.data(), k.size());
  return nullptr;
}

// setLimits(engine, handshakeMs, idleMs, lifetimeMs): for connections accepted from now on (idle: all).
napi_value SetLimits(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  Engine* e = engineCall(env, info, 4, argv);
  if (!e) return nullptr;
  std::lock_guard<std::mutex> g(e->mu);
  e->limits.handshakeMs = getU32(env, argv[1]);
  e->limits.idleMs = getU32(env, argv[2]);
  e->limits.lifetimeMs = getU32(env, argv[3]);
  return nullptr;
}

uint64_t getId(napi_env env, napi_value v) {
  int64_t n = 0;
  napi_get_value_int64(env, v, &n);
  return n > 0 ? uint64_t(n) : 0;
}

napi_value idValue(napi_env env, uint64_t id) {
  napi_value out;
  napi_create_int64(env, int64_t(id), &out);  // exact in a JavaScript number up to 2^53
  return out;
}

// add(engine, fd): takes a duplicate of an accepted socket (the caller closes its own) and starts the
// handshake. Returns the connection's id.
napi_value Add(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  Engine* e = engineCall(env, info, 2, argv);
  if (!e) return nullptr;
  if (!e->running) return throwError(env, "native relay: the engine is stopped");
  // The duplicate shares the socket's status flags: O_NONBLOCK, set by libuv, holds for it too.
  int fd = fcntl(int(getU32(env, argv[1])), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return throwError(env, "native relay: cannot take the socket: " + errnoName(errno));
  Cmd c{ADD};
  c.fd = fd;
  c.id = e->nextId++;
  uint64_t id = c.id;
  e->command(std::move(c));
  return idValue(env, id);
}

// admit(engine, id, target, header|null): target is "unix:PATH" or "IP:PORT" / "[IPv6]:PORT" (resolved by the caller).
napi_value Admit(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  Engine* e = engineCall(env, info, 4, argv);
  if (!e) return nullptr;
  Cmd c{ADMIT};
  c.id = getId(env, argv[1]);
  std::string t;
  if (!getString(env, argv[2], t) || !getBytes(env, argv[3], c.header)) return throwError(env, "native relay: admit takes a target string and a Buffer");
  if (t.rfind("unix:", 0) == 0) {
    auto* un = reinterpret_cast<sockaddr_un*>(&c.addr);
    std::string p = t.substr(5);
    if (p.empty() || p.size() >= sizeof un->sun_path) return throwError(env, "native relay: unix socket path empty or too long");
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, p.data(), p.size());
    c.addrLen = socklen_t(offsetof(sockaddr_un, sun_path) + p.size() + 1);
  } else {
    size_t colon = t.rfind(':');
    if (colon == std::string::npos) return throwError(env, "native relay: target must be IP:PORT");
    std::string host = t.substr(0, colon);
    const char* portText = t.c_str() + colon + 1;
    char* end = nullptr;
    errno = 0;
    long port = strtol(portText, &end, 10);
    if (errno != 0 || end == portText || *end != '\0' || port < 1 || port > 65535) return throwError(env, "native relay: target port must be 1 to 65535");
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    auto* v4 = reinterpret_cast<sockaddr_in*>(&c.addr);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&c.addr);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      v4->sin_port = htons(uint16_t(port));
      c.addrLen = sizeof *v4;
    } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(uint16_t(port));
      c.addrLen = sizeof *v6;
    } else {
      return throwError(env, "native relay: target host must be an IP address");
    }
  }
  e->command(std::move(c));
  return nullptr;
}

napi_value simpleCommand(napi_env env, napi_callback_info info, CmdType type, bool withId) {
  napi_value argv[2];
  Engine* e = engineCall(env, info, withId ? 2 : 1, argv);
  if (!e) return nullptr;
  Cmd c{type};
  if (withId) c.id = getId(env, argv[1]);
  e->command(std::move(c));
  return nullptr;
}

napi_value Reject(napi_env env, napi_callback_info info) { return simpleCommand(env, info, REJECT, true); }
napi_value CloseAll(napi_env env, napi_callback_info info) { return simpleCommand(env, info, CLOSE_ALL, false); }

// destroy(engine): closes every connection and stops the threads; the descriptors, the TLS context and the event
// channel go with it (CLOSED events not yet delivered are dropped). The object is freed when collected.
napi_value Destroy(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  Engine* e = engineCall(env, info, 1, argv);
  if (!e) return nullptr;
  e->shutdown();
  return nullptr;
}

napi_value Init(napi_env env, napi_value exports) {
  struct {
    const char* name;
    napi_callback fn;
  } fns[] = {{"create", Create}, {"configure", Configure}, {"setTicketKeys", SetTicketKeys}, {"setLimits", SetLimits}, {"add", Add},
             {"admit", Admit}, {"reject", Reject}, {"closeAll", CloseAll}, {"destroy", Destroy}};
  for (auto& f : fns) {
    napi_value v;
    napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.fn, nullptr, &v);
    napi_set_named_property(env, exports, f.name, v);
  }
  if (ctxDataIndex < 0) ctxDataIndex = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, freeCtxData);
  napi_value ver;
  napi_create_string_utf8(env, OpenSSL_version(OPENSSL_VERSION), NAPI_AUTO_LENGTH, &ver);
  napi_set_named_property(env, exports, "openssl", ver);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
