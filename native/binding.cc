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
// Verification is OpenSSL's, configured like Node's server with requestCert + rejectUnauthorized: the client
// certificate is required, its chain verified against the trust bundle with the "sslclient" purpose (the
// clientAuth EKU; a server certificate is refused). With CRLs, the verify callback looks every certificate of the
// chain up in hash sets built from them (context.cc isRevoked): Node's crl option made a handshake 2.8x
// dearer at 100,000 entries. Their freshness (nextUpdate) is checked in TypeScript at each admission.
// Secure defaults as in src/tls/options.ts: TLS 1.2 minimum, ECDHE with AEAD only, X25519/P-256/P-384.


#include "relay.h"
#include "napi-util.h"
#include "net-util.h"

namespace mtls_relay {

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

namespace {

// ---- JavaScript side ----

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
    if (!ev->issuerDer.empty()) {
      void* p;
      napi_value buf;
      napi_create_buffer_copy(env, ev->issuerDer.size(), ev->issuerDer.data(), &p, &buf);
      napi_set_named_property(env, obj, "issuer", buf);
    }
    setStr(env, obj, "version", ev->version);
    setStr(env, obj, "cipher", ev->cipher);
    setStr(env, obj, "servername", ev->sni);
    napi_value b;
    napi_get_boolean(env, ev->resumed, &b);
    napi_set_named_property(env, obj, "resumed", b);
  } else {
    setStr(env, obj, "stage", ev->stage);
    setNum(env, obj, "reason", double(uint32_t(ev->why)));
    setStr(env, obj, "code", ev->code);
    setStr(env, obj, "detail", ev->reason);
    setNum(env, obj, "bytesIn", double(ev->bytesIn));
    setNum(env, obj, "up", double(ev->up));
    setNum(env, obj, "down", double(ev->down));
  }
  napi_call_function(env, undef, fn, 1, &obj, nullptr);
}

// The arguments of a call whose first argument is an engine; null (with a JS exception pending) when wrong.
Engine* engineCall(napi_env env, napi_callback_info info, size_t want, napi_value* argv) {
  return externalCall<Engine>(env, info, want, argv, "native relay: not an engine");
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
  NAPI(napi_create_external(env, e.get(), finalizeOf<Engine>, nullptr, &ext));
  Engine* engine = e.release();  // the external owns it now: freed by finalizeOf<Engine>
  engine->env = env;
  napi_add_env_cleanup_hook(env, cleanupHookOf<Engine>, engine);
  for (auto& l : engine->loops) {
    Loop* lp = l.get();
    l->thread = std::thread([lp] { lp->run(); });
  }
  engine->running = true;
  return ext;
}

// configure(engine, certPem, keyPem, caPem, revoked|null, ticketKeys(48), ..., apply): builds a new context, born
// with its own ticket keys, and, with apply, swaps it in (live connections keep theirs); without, only proves that
// it builds. revoked null: no revocation checking; else a Buffer of revocation sets (context.cc parseRevocations).
// configure(engine, cert, key, ca, revoked|null, ticketKeys, ciphers, groups, minVersion, apply)
napi_value Configure(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  Engine* e = engineCall(env, info, 10, argv);
  if (!e) return nullptr;
  TlsPolicy policy;
  std::string minVersion;
  if (!getString(env, argv[6], policy.ciphers) || !getString(env, argv[7], policy.groups) || !getString(env, argv[8], minVersion)) {
    return throwError(env, "native relay: configure takes the ciphers, groups and minimum version as strings");
  }
  if (minVersion == "TLSv1.2") policy.minVersion = TLS1_2_VERSION;
  else if (minVersion == "TLSv1.3") policy.minVersion = TLS1_3_VERSION;
  else return throwError(env, "native relay: the minimum version must be TLSv1.2 or TLSv1.3");
  std::string cert, key, ca;
  std::vector<uint8_t> keys, revoked;
  if (!getString(env, argv[1], cert) || !getString(env, argv[2], key) || !getString(env, argv[3], ca)) return throwError(env, "native relay: configure takes PEM strings");
  if (!getBytes(env, argv[5], keys) || keys.size() != 48) return throwError(env, "native relay: ticket keys must be 48 bytes");
  napi_valuetype revokedType;
  napi_typeof(env, argv[4], &revokedType);
  bool haveRevoked = revokedType != napi_null && revokedType != napi_undefined;
  if (haveRevoked && !getBytes(env, argv[4], revoked)) return throwError(env, "native relay: revocation data must be a Buffer");
  SSL_CTX* ctx = nullptr;
  std::string err = buildContext(e, cert, key, ca, haveRevoked ? &revoked : nullptr, keys, policy, &ctx);
  OPENSSL_cleanse(key.data(), key.size());
  OPENSSL_cleanse(keys.data(), keys.size());
  if (!err.empty()) return throwError(env, err);
  bool apply = false;
  napi_get_value_bool(env, argv[9], &apply);
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

// setStaple(engine, Buffer|null): the DER OCSP response to staple from now on (null: none). At most 64 KiB.
napi_value SetStaple(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  Engine* e = engineCall(env, info, 2, argv);
  if (!e) return nullptr;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  std::shared_ptr<const std::vector<uint8_t>> next;
  if (t != napi_null && t != napi_undefined) {
    auto bytes = std::make_shared<std::vector<uint8_t>>();
    if (!getBytes(env, argv[1], *bytes) || bytes->size() > 65536)
      return throwError(env, "native relay: a staple is a Buffer of at most 64 KiB");
    next = std::move(bytes);
  }
  std::lock_guard<std::mutex> g(e->mu);
  e->staple = std::move(next);
  return nullptr;
}

// setReportIssuer(engine, bool): whether secured events carry the issuer OpenSSL verified the client with.
napi_value SetReportIssuer(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  Engine* e = engineCall(env, info, 2, argv);
  if (!e) return nullptr;
  bool on = false;
  napi_get_value_bool(env, argv[1], &on);
  e->reportIssuer.store(on, std::memory_order_relaxed);
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

// admit(engine, id, host, port, header|null): the target as the TypeScript side parsed it (src/io/address.ts is the
// one parser of HOST:PORT): port 0 means `host` is a unix socket path; otherwise `host` is an IP address (resolved
// by the caller).
napi_value Admit(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  Engine* e = engineCall(env, info, 5, argv);
  if (!e) return nullptr;
  Cmd c{ADMIT};
  c.id = getId(env, argv[1]);
  std::string host;
  uint32_t port = 0;
  if (!getString(env, argv[2], host) || napi_get_value_uint32(env, argv[3], &port) != napi_ok || !getBytes(env, argv[4], c.header)) {
    return throwError(env, "native relay: admit takes a host string, a port number and a Buffer");
  }
  if (port > 65535) return throwError(env, "native relay: target port must be 1 to 65535");
  // Port 0: `host` is a unix socket path.
  if (const char* why = socketAddress(host, port == 0, uint16_t(port), c.addr, c.addrLen))
    return throwError(env, std::string("native relay: target: ") + why);
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
// close(engine, id): ends one connection at any stage (its certificate was revoked while it relayed).
napi_value CloseOne(napi_env env, napi_callback_info info) { return simpleCommand(env, info, CLOSE, true); }

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
  } fns[] = {{"create", Create}, {"configure", Configure}, {"setTicketKeys", SetTicketKeys}, {"setLimits", SetLimits}, {"setStaple", SetStaple}, {"setReportIssuer", SetReportIssuer}, {"add", Add},
             {"admit", Admit}, {"reject", Reject}, {"close", CloseOne}, {"closeAll", CloseAll}, {"destroy", Destroy}};
  for (auto& f : fns) {
    napi_value v;
    napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.fn, nullptr, &v);
    napi_set_named_property(env, exports, f.name, v);
  }
  if (ctxDataIndex < 0) ctxDataIndex = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, freeCtxData);
  napi_value ver;
  napi_create_string_utf8(env, OpenSSL_version(OPENSSL_VERSION), NAPI_AUTO_LENGTH, &ver);
  napi_set_named_property(env, exports, "openssl", ver);
  napi_value reasons;
  napi_create_array_with_length(env, size_t(CloseReason::Count), &reasons);
  for (uint32_t i = 0; i < uint32_t(CloseReason::Count); i++) {
    napi_value name;
    napi_create_string_utf8(env, CLOSE_REASON_NAMES[i], NAPI_AUTO_LENGTH, &name);
    napi_set_element(env, reasons, i, name);
  }
  napi_set_named_property(env, exports, "closeReasons", reasons);
  initAnswers(env, exports);
  return exports;
}

}  // namespace
}  // namespace mtls_relay

NAPI_MODULE(NODE_GYP_MODULE_NAME, mtls_relay::Init)
