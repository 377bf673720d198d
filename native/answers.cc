// The native front of `mtls ca ocsp` (src/ca/ocsp-native.ts drives it): an HTTP/1.1 server on its own thread that
// answers the requests it has seen before from a cache, and hands every other request to JavaScript.
//
// Why it exists: the responder in Node answered 0.38-0.40x as many requests per second as `openssl ocsp` here, and a
// Node HTTP server that answers a constant, with no OCSP work at all, reached only 0.89x (BENCHMARKS.md): Node's
// per-request cost alone rules out the 2x the issue asks. Most OCSP requests repeat (RFC 5019: no nonce, the same
// CertID asked by every relying party), so their signed answers can be served again until they are due.
//
// What decides stays in JavaScript: it parses the request, reads the inventory, signs, and says whether an answer
// may be served again and for how long (only good and revoked answers to requests without a nonce). The cache is
// keyed by the request's method, URL and body, and every entry carries the epoch it was made in: invalidate()
// starts a new epoch (JavaScript calls it when the inventory's revocation counter moves, or the responder's
// certificate changes), after which no entry of an older epoch is served, and no answer to a request made before
// it is stored.
//
// Bounded: 1,024 connections (more are closed at accept), 8 KiB of request head, 16 KiB of body, 10 s to send a
// request, 5 s of idle keep-alive, 10 s for JavaScript to answer, 10 s for the client to read the answer, 10,000
// cached answers with keys of at most 2 KiB. One request at a time per connection; pipelined ones wait their turn.

#include "napi-util.h"
#include "net-util.h"
#include "relay.h"

#include <sys/stat.h>

namespace mtls_relay {
namespace {

constexpr size_t MAX_SIGNERS = 4;
constexpr size_t MAX_HEAD = 8192, MAX_BODY = 16384, MAX_KEY = 2048, MAX_CONNS = 1024, MAX_CACHED = 10000;
constexpr uint64_t REQUEST_MS = 10000, KEEPALIVE_MS = 5000, ANSWER_MS = 10000, WRITE_MS = 10000, LINGER_MS = 2000;
constexpr size_t LINGER_BYTES = 256 * 1024;
constexpr uint64_t LISTENER = UINT64_MAX - 1;

// An answer as JavaScript made it: the status line and headers (no content-length or connection), and the body.
struct Answer {
  std::string head, body;
};
// What the revocation marker file looked like (absent: all zero). `mtls revoke` replaces it after each revocation
// commits (src/ca/authority.ts), so an answer is served again only while the marker is as it was when its request
// came in: a revocation on this home is seen by the very next request, with no wait for JavaScript to notice.
struct Mark {
  uint64_t dev = 0, ino = 0, size = 0;
  int64_t sec = 0, nsec = 0;
  bool operator==(const Mark& o) const { return dev == o.dev && ino == o.ino && size == o.size && sec == o.sec && nsec == o.nsec; }
};
// What answers about the same CertIDs share, whatever the nonce (src/pki/ocsp.ts OcspAnswerParts): an answer to a
// request with a nonce is these signed again, here, with the responder's key.
struct Parts {
  std::string responderId, responses, certs;
};
// The responder's key as JavaScript last gave it; `gen` ties parts to the key they were made for.
struct SignerKey {
  EVP_PKEY* key = nullptr;
  const EVP_MD* md = nullptr;  // null: the key signs the message itself (Ed25519)
  std::string algorithm;       // the AlgorithmIdentifier, DER
  uint64_t gen = 0;
  // Made once and reused for each answer, on the server's thread only: the digest, fetched from the provider once,
  // a context to hash with, and a signing context initialized once. (A DigestSign init per answer fetched the
  // algorithms again, about the cost of the signature; copying an initialized context, as DigestSignFinal also
  // does, was ~1.5% of an answer by perf.) Null for Ed25519, which signs the message itself (the responders' keys
  // are P-256: src/ca/ocsp-signers.ts), and when a key's context cannot be made.
  EVP_MD* fetched = nullptr;
  EVP_MD_CTX* hash = nullptr;
  EVP_PKEY_CTX* sign = nullptr;
  ~SignerKey() {
    EVP_PKEY_CTX_free(sign);
    EVP_MD_CTX_free(hash);
    EVP_MD_free(fetched);
    EVP_PKEY_free(key);
  }
};
// A cache entry: the whole answer to a request without a nonce, and the parts to sign one with a nonce (either may
// be missing). Served only while epoch and marker are as they were when its request came in.
struct Cached {
  std::shared_ptr<const Answer> answer;
  std::shared_ptr<const Parts> parts;
  uint64_t gen = 0, until = 0, epoch = 0;
  Mark mark;
};

struct HttpConn {
  uint64_t id = 0;
  int fd = -1;
  enum State { Reading, Waiting, Writing, Lingering } state = Reading;
  std::string in;   // bytes read and not yet a whole request
  std::string out;  // the answer being written
  size_t outOff = 0;
  bool keepAlive = false, continued = false;
  bool unread = false;  // answered before the whole request was read (a refusal): linger before closing
  uint64_t deadline = 0;
  std::string key;  // the cache key of the request waiting for JavaScript ("" when it is not to be cached)
  bool hasNonce = false;
  uint64_t epoch = 0;
  Mark mark;
  uint32_t events = 0;
  bool registered = false;
};

// A request for JavaScript, and its answer back.
struct Request {
  uint64_t id;
  std::string method, url, ifNoneMatch, body;
};
struct Reply {
  uint64_t id;
  std::shared_ptr<const Answer> answer;
  uint64_t cacheMs;
  std::shared_ptr<const Parts> parts;  // with cacheMs: what later answers to the same CertIDs are signed from
  uint64_t gen = 0;
  std::shared_ptr<const SignerKey> signer;  // set: not an answer, but the responder's key from now on
};

struct Server {
  napi_threadsafe_function tsfn = nullptr;
  napi_env env = nullptr;
  int lfd = -1, ep = -1, wake = -1;
  std::string markerPath;  // "" : no marker (only invalidate() drops answers)
  std::thread thread;
  bool running = false;
  std::mutex mu;  // guards replies, stop
  std::vector<Reply> replies;
  bool stop = false;
  std::atomic<uint64_t> epoch{1};
  std::atomic<uint64_t> hits{0}, misses{0}, refused{0};

  // the server's thread only
  std::unordered_map<uint64_t, HttpConn*> conns;
  std::unordered_map<std::string, Cached> cache;
  // The responder keys JavaScript gave, by generation (one per responder certificate: the intermediate's and the
  // root's), the newest few.
  std::unordered_map<uint64_t, std::shared_ptr<const SignerKey>> signers;
  uint64_t nextId = 1, lastSweep = 0;
  bool listening = true;

  void run();
  void accept();
  void readable(HttpConn* c);
  void handle(HttpConn* c);
  bool fromCache(HttpConn* c, const std::string& key, const std::string& nonce, uint64_t now, uint64_t epochNow, const Mark& markNow);
  void respond(HttpConn* c, const Answer& a);
  void respondPlain(HttpConn* c, const char* status, const char* text);
  void flush(HttpConn* c);
  void interest(HttpConn* c, uint32_t want);
  void closeConn(HttpConn* c);
  void deliver(Reply& r);
  void sweep(uint64_t now);
  void shutdown();
  // Queues a reply (or a key) for the server's thread; false when it is stopping.
  bool post(Reply r) {
    {
      std::lock_guard<std::mutex> g(mu);
      if (stop || !running) return false;
      replies.push_back(std::move(r));
    }
    uint64_t one = 1;
    (void)!write(wake, &one, sizeof one);
    return true;
  }
  Mark marker() const {
    struct stat st;
    Mark m;
    if (!markerPath.empty() && stat(markerPath.c_str(), &st) == 0)
      m = Mark{uint64_t(st.st_dev), uint64_t(st.st_ino), uint64_t(st.st_size), int64_t(st.st_mtim.tv_sec), int64_t(st.st_mtim.tv_nsec)};
    return m;
  }
  ~Server() { shutdown(); }
};


// ---- DER: just enough to find a request's CertIDs and nonce, and to sign an answer ----

const uint8_t NONCE_OID[] = {0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02};  // 1.3.6.1.5.5.7.48.1.2
const uint8_t BASIC_OID[] = {0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01};  // id-pkix-ocsp-basic

struct Tlv {
  uint8_t tag = 0;
  const uint8_t* start = nullptr;  // the tag
  const uint8_t* v = nullptr;      // the contents
  size_t len = 0;
  const uint8_t* end() const { return v + len; }
};

// One TLV at p (a one-byte tag, a definite length in at most 3 octets, DER's shortest form), within [p, end).
bool readTlv(const uint8_t*& p, const uint8_t* end, Tlv& t) {
  if (end - p < 2) return false;
  t.start = p;
  t.tag = p[0];
  if ((t.tag & 0x1f) == 0x1f) return false;
  size_t len = p[1], at = 2;
  if (len & 0x80) {
    size_t n = len & 0x7f;
    if (n == 0 || n > 3 || size_t(end - p) < 2 + n || p[2] == 0) return false;
    len = 0;
    for (size_t i = 0; i < n; i++) len = (len << 8) | p[2 + i];
    if (len < 0x80) return false;
    at = 2 + n;
  }
  if (size_t(end - p) - at < len) return false;
  t.v = p + at;
  t.len = len;
  p = t.v + len;
  return true;
}

// The requests this front understands without JavaScript: OCSPRequest { TBSRequest { requestList, [2] { nonce } } }
// with nothing else (no version, requestor name, other extension or signature). `list`: the requestList's DER (the
// cache key); `nonce`: the nonce extension's value (an OCTET STRING of 1 to 32 octets, RFC 8954), or empty.
// Anything else goes to JavaScript, which answers it (or says malformedRequest).
bool simpleRequest(const std::string& body, std::string& list, std::string& nonce) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(body.data());
  const uint8_t* end = p + body.size();
  Tlv outer, tbs, req, exts, extList, ext, oid, value, inner;
  if (!readTlv(p, end, outer) || outer.tag != 0x30 || p != end) return false;
  p = outer.v;
  if (!readTlv(p, outer.end(), tbs) || tbs.tag != 0x30 || p != outer.end()) return false;
  p = tbs.v;
  if (!readTlv(p, tbs.end(), req) || req.tag != 0x30) return false;
  list.assign(reinterpret_cast<const char*>(req.start), size_t(req.end() - req.start));
  nonce.clear();
  if (p == tbs.end()) return true;
  if (!readTlv(p, tbs.end(), exts) || exts.tag != 0xa2 || p != tbs.end()) return false;
  p = exts.v;
  if (!readTlv(p, exts.end(), extList) || extList.tag != 0x30 || p != exts.end()) return false;
  p = extList.v;
  if (!readTlv(p, extList.end(), ext) || ext.tag != 0x30 || p != extList.end()) return false;
  p = ext.v;
  if (!readTlv(p, ext.end(), oid) || size_t(oid.end() - oid.start) != sizeof NONCE_OID || memcmp(oid.start, NONCE_OID, sizeof NONCE_OID) != 0)
    return false;
  if (!readTlv(p, ext.end(), value) || value.tag != 0x04 || p != ext.end()) return false;
  p = value.v;
  if (!readTlv(p, value.end(), inner) || inner.tag != 0x04 || p != value.end() || inner.len < 1 || inner.len > 32) return false;
  nonce.assign(reinterpret_cast<const char*>(value.v), value.len);
  return true;
}

std::string der(uint8_t tag, const std::string& content) {
  std::string out(1, char(tag));
  size_t n = content.size();
  if (n < 0x80) out += char(n);
  else if (n < 0x100) out += {char(0x81), char(n)};
  else if (n < 0x10000) out += {char(0x82), char(n >> 8), char(n & 0xff)};
  else out += {char(0x83), char(n >> 16), char((n >> 8) & 0xff), char(n & 0xff)};
  return out + content;
}

// A successful OCSPResponse: `parts` signed now, with the nonce echoed (as src/pki/ocsp.ts signOcspAnswer does).
// Empty when signing failed.
std::string signAnswer(const Parts& parts, const SignerKey& k, const std::string& nonce) {
  char when[16];
  time_t now = time(nullptr);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(when, sizeof when, "%Y%m%d%H%M%SZ", &tm);
  std::string nonceExt = der(0xa1, der(0x30, der(0x30, std::string(reinterpret_cast<const char*>(NONCE_OID), sizeof NONCE_OID) + der(0x04, nonce))));
  std::string tbs = der(0x30, parts.responderId + der(0x18, when) + parts.responses + nonceExt);
  size_t sigLen = size_t(EVP_PKEY_get_size(k.key));
  std::string sig(sigLen, '\0');
  auto* out = reinterpret_cast<uint8_t*>(sig.data());
  auto* in = reinterpret_cast<const uint8_t*>(tbs.data());
  bool ok;
  if (k.sign) {
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int digestLen = 0;
    ok = EVP_DigestInit_ex2(k.hash, k.fetched, nullptr) == 1 && EVP_DigestUpdate(k.hash, in, tbs.size()) == 1 &&
         EVP_DigestFinal_ex(k.hash, digest, &digestLen) == 1 && EVP_PKEY_sign(k.sign, out, &sigLen, digest, digestLen) == 1;
  } else {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ok = ctx && EVP_DigestSignInit(ctx, nullptr, k.md, nullptr, k.key) == 1 && EVP_DigestSign(ctx, out, &sigLen, in, tbs.size()) == 1;
    EVP_MD_CTX_free(ctx);
  }
  sig.resize(ok ? sigLen : 0);
  if (!ok) {
    ERR_clear_error();
    return "";
  }
  std::string basic = der(0x30, tbs + k.algorithm + der(0x03, std::string(1, '\0') + sig) + parts.certs);
  std::string bytes = der(0x04, basic);
  return der(0x30, std::string("\x0a\x01\x00", 3) + der(0xa0, der(0x30, std::string(reinterpret_cast<const char*>(BASIC_OID), sizeof BASIC_OID) + bytes)));
}

const char OCSP_HEAD[] = "HTTP/1.1 200 OK\r\ncontent-type: application/ocsp-response\r\n";

void Server::interest(HttpConn* c, uint32_t want) {
  if (c->registered && c->events == want) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = c->id;
  epoll_ctl(ep, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev);
  c->registered = true;
  c->events = want;
}

void Server::closeConn(HttpConn* c) {
  ::close(c->fd);  // leaves the epoll set with it
  conns.erase(c->id);
  delete c;
}

void Server::accept() {
  for (int i = 0; i < 128; i++) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: stop accepting until the next sweep, instead of spinning on a listener that stays ready.
        epoll_ctl(ep, EPOLL_CTL_DEL, lfd, nullptr);
        listening = false;
      }
      return;
    }
    if (conns.size() >= MAX_CONNS) {
      refused++;
      ::close(fd);
      continue;
    }
    // TCP_NODELAY comes from the listener (Linux passes it on to accepted sockets): one system call less per
    // connection, which costs ~1.5 us on these VMs.
    auto* c = new (std::nothrow) HttpConn();
    if (!c) {
      ::close(fd);
      continue;
    }
    c->id = nextId++;
    c->fd = fd;
    c->deadline = nowMs() + REQUEST_MS;
    conns[c->id] = c;
    // With TCP_DEFER_ACCEPT the request is usually there already: read it now rather than after another wait, and
    // join the epoll set only if the connection is still open and has not joined it meanwhile (a whole request
    // answered from the cache is closed without ever joining it).
    uint64_t id = c->id;
    readable(c);
    auto it = conns.find(id);
    if (it != conns.end() && !it->second->registered) interest(it->second, EPOLLIN);
  }
}

// Case-insensitive comparison of a header name.
bool nameIs(const char* p, size_t n, const char* want) { return strlen(want) == n && strncasecmp(p, want, n) == 0; }

void Server::respondPlain(HttpConn* c, const char* status, const char* text) {
  Answer a;
  a.head = std::string("HTTP/1.1 ") + status + "\r\ncontent-type: text/plain\r\n";
  a.body = std::string(text) + "\n";
  c->keepAlive = false;
  c->unread = true;
  respond(c, a);
}

void Server::respond(HttpConn* c, const Answer& a) {
  c->out = a.head;
  c->out += "content-length: " + std::to_string(a.body.size()) + "\r\nconnection: " + (c->keepAlive ? "keep-alive" : "close") + "\r\n\r\n";
  c->out += a.body;
  c->outOff = 0;
  c->state = HttpConn::Writing;
  c->deadline = nowMs() + WRITE_MS;
  flush(c);
}

void Server::flush(HttpConn* c) {
  // An answer the connection closes after is held (MSG_MORE) until the close or shutdown below, which sends it with
  // the FIN in one segment instead of two: one segment less to send and to receive, for us and the client.
  int flags = MSG_NOSIGNAL | (c->keepAlive ? 0 : MSG_MORE);
  while (c->outOff < c->out.size()) {
    ssize_t n = ::send(c->fd, c->out.data() + c->outOff, c->out.size() - c->outOff, flags);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      interest(c, EPOLLOUT);
      return;
    }
    if (n <= 0) return closeConn(c);
    c->outOff += size_t(n);
  }
  c->out.clear();
  c->outOff = 0;
  if (!c->keepAlive && (c->unread || !c->in.empty())) {
    // Closing with unread bytes would reset the connection, and the client could lose the answer before it reads
    // it: end our side, and read what the client still sends, for a while.
    ::shutdown(c->fd, SHUT_WR);
    c->state = HttpConn::Lingering;
    c->deadline = nowMs() + LINGER_MS;
    c->in.clear();
    interest(c, EPOLLIN);
    return;
  }
  if (!c->keepAlive) return closeConn(c);
  c->state = HttpConn::Reading;
  c->continued = false;
  c->deadline = nowMs() + (c->in.empty() ? KEEPALIVE_MS : REQUEST_MS);
  interest(c, EPOLLIN);
  if (!c->in.empty()) handle(c);  // a pipelined request
}

void Server::readable(HttpConn* c) {
  char buf[16384];
  if (c->state == HttpConn::Lingering) {
    for (size_t got = 0; got < LINGER_BYTES;) {
      ssize_t n = ::recv(c->fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n <= 0) break;
      got += size_t(n);
    }
    return closeConn(c);  // the client finished (or sent too much)
  }
  for (;;) {
    ssize_t n = ::recv(c->fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) return closeConn(c);  // the client went away (or reset): nothing to answer
    if (c->in.empty()) c->deadline = nowMs() + REQUEST_MS;  // the request's time starts at its first byte
    c->in.append(buf, size_t(n));
    if (c->in.size() > MAX_HEAD + MAX_BODY) break;  // handle() refuses it
    // A short read emptied the socket: no read that only says EAGAIN. What comes later is reported by the
    // level-triggered epoll set once the connection waits for it there.
    if (size_t(n) < sizeof buf) break;
  }
  handle(c);
}

// Looks at what `c` has read: waits for more, answers from the cache, refuses, or hands the request to JavaScript.
void Server::handle(HttpConn* c) {
  if (c->state != HttpConn::Reading) return;
  size_t headEnd = c->in.find("\r\n\r\n");
  if (headEnd == std::string::npos) {
    if (c->in.size() > MAX_HEAD) respondPlain(c, "431 Request Header Fields Too Large", "a request head is at most 8 KiB");
    return;
  }
  if (headEnd > MAX_HEAD) return respondPlain(c, "431 Request Header Fields Too Large", "a request head is at most 8 KiB");
  const char* h = c->in.data();
  size_t lineEnd = c->in.find("\r\n");
  size_t sp1 = c->in.find(' ');
  size_t sp2 = sp1 == std::string::npos ? sp1 : c->in.find(' ', sp1 + 1);
  if (sp1 == std::string::npos || sp2 == std::string::npos || sp2 > lineEnd || sp1 == 0 || sp2 == sp1 + 1)
    return respondPlain(c, "400 Bad Request", "not an HTTP request");
  std::string method(h, sp1), url(h + sp1 + 1, sp2 - sp1 - 1), version(h + sp2 + 1, lineEnd - sp2 - 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return respondPlain(c, "505 HTTP Version Not Supported", "HTTP/1.0 or 1.1 only");
  bool keepAlive = version == "HTTP/1.1", expectContinue = false, chunked = false;
  long long length = 0;
  std::string ifNoneMatch;
  for (size_t p = lineEnd + 2; p < headEnd;) {
    size_t e = c->in.find("\r\n", p);
    size_t colon = c->in.find(':', p);
    if (colon == std::string::npos || colon > e || colon == p) return respondPlain(c, "400 Bad Request", "a header line without a name");
    size_t v = colon + 1;
    while (v < e && (h[v] == ' ' || h[v] == '\t')) v++;
    size_t ve = e;
    while (ve > v && (h[ve - 1] == ' ' || h[ve - 1] == '\t')) ve--;
    const char* name = h + p;
    size_t nameLen = colon - p;
    std::string value(h + v, ve - v);
    if (nameIs(name, nameLen, "content-length")) {
      if (value.empty() || value.size() > 9 || value.find_first_not_of("0123456789") != std::string::npos)
        return respondPlain(c, "400 Bad Request", "content-length is not a number");
      long long n = std::stoll(value);
      if (length && n != length) return respondPlain(c, "400 Bad Request", "two content-lengths that differ");
      length = n;
    } else if (nameIs(name, nameLen, "transfer-encoding")) {
      chunked = true;
    } else if (nameIs(name, nameLen, "connection")) {
      if (strcasestr(value.c_str(), "close")) keepAlive = false;
      else if (strcasestr(value.c_str(), "keep-alive")) keepAlive = true;
    } else if (nameIs(name, nameLen, "expect")) {
      expectContinue = strcasecmp(value.c_str(), "100-continue") == 0;
    } else if (nameIs(name, nameLen, "if-none-match")) {
      ifNoneMatch = value.substr(0, 256);
    }
    p = e + 2;
  }
  if (chunked) return respondPlain(c, "411 Length Required", "send the request with a content-length");
  if (length > static_cast<long long>(MAX_BODY)) return respondPlain(c, "413 Payload Too Large", "an OCSP request is at most 16 KiB");
  size_t total = headEnd + 4 + size_t(length);
  if (c->in.size() < total) {
    if (expectContinue && !c->continued) {
      c->continued = true;
      static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
      (void)!::send(c->fd, cont, sizeof cont - 1, MSG_NOSIGNAL);
    }
    return;
  }
  std::string body = c->in.substr(headEnd + 4, size_t(length));
  c->in.erase(0, total);
  c->keepAlive = keepAlive;
  if (method != "GET" && method != "POST") {
    Answer a{"HTTP/1.1 405 Method Not Allowed\r\nallow: GET, POST\r\ncontent-type: text/plain\r\n", "GET or POST\n"};
    return respond(c, a);
  }
  // An OCSP POST this front understands is keyed by its CertIDs alone (a nonce aside); anything else by all of it.
  std::string key, list, nonce;
  if (method == "POST" && (url == "/ocsp" || url == "/") && simpleRequest(body, list, nonce)) key = "R" + list;
  else key = method + ' ' + url + '\n' + body;
  if (key.size() > MAX_KEY) key.clear();
  uint64_t now = nowMs(), epochNow = epoch.load();
  Mark markNow = marker();
  if (!key.empty() && ifNoneMatch.empty() && fromCache(c, key, nonce, now, epochNow, markNow)) return;
  misses++;
  c->key = ifNoneMatch.empty() ? std::move(key) : std::string();
  c->hasNonce = !nonce.empty();
  c->epoch = epochNow;
  c->mark = markNow;
  c->state = HttpConn::Waiting;
  c->deadline = now + ANSWER_MS;
  interest(c, 0);  // nothing to read until it is answered (a client that hangs up is noticed when it is written to)
  auto* r = new (std::nothrow) Request{c->id, std::move(method), std::move(url), std::move(ifNoneMatch), std::move(body)};
  if (!r || napi_call_threadsafe_function(tsfn, r, napi_tsfn_nonblocking) != napi_ok) {
    delete r;
    respondPlain(c, "503 Service Unavailable", "the responder is stopping");
  }
}

// Answers `c` from the cache when an entry for `key` is still good: whole (no nonce), or signed here (a nonce).
bool Server::fromCache(HttpConn* c, const std::string& key, const std::string& nonce, uint64_t now, uint64_t epochNow, const Mark& markNow) {
  auto it = cache.find(key);
  if (it == cache.end() || it->second.epoch != epochNow || it->second.until <= now || !(it->second.mark == markNow)) return false;
  const Cached& e = it->second;
  if (nonce.empty()) {
    if (!e.answer) return false;
    hits++;
    auto answer = e.answer;  // respond() may close c, not the entry
    respond(c, *answer);
    return true;
  }
  auto signer = signers.find(e.gen);
  if (!e.parts || signer == signers.end()) return false;
  std::string body = signAnswer(*e.parts, *signer->second, nonce);
  if (body.empty()) return false;  // JavaScript answers it (and says what went wrong)
  hits++;
  respond(c, Answer{OCSP_HEAD, std::move(body)});
  return true;
}

void Server::deliver(Reply& r) {
  if (r.signer) {
    signers[r.signer->gen] = r.signer;
    while (signers.size() > MAX_SIGNERS) {
      auto oldest = signers.begin();
      for (auto it = signers.begin(); it != signers.end(); ++it)
        if (it->first < oldest->first) oldest = it;
      signers.erase(oldest);
    }
    return;
  }
  auto it = conns.find(r.id);
  if (it == conns.end() || it->second->state != HttpConn::Waiting) return;  // it timed out, or went away
  HttpConn* c = it->second;
  // An answer to a request made before the last invalidate() is sent, but not stored: it may predate a revocation.
  if (r.cacheMs && !c->key.empty() && c->epoch == epoch.load()) {
    if (cache.size() >= MAX_CACHED) cache.clear();
    Cached& e = cache[c->key];
    uint64_t until = nowMs() + r.cacheMs;
    // What the entry holds of the same epoch, marker and key stays (a whole answer, when this one had a nonce).
    bool same = e.epoch == c->epoch && e.mark == c->mark && e.gen == r.gen && e.until > nowMs();
    if (!same) e = Cached{};
    if (!c->hasNonce) e.answer = r.answer;
    if (r.parts) e.parts = r.parts;
    e.gen = r.gen;
    e.until = same ? std::min(e.until, until) : until;
    e.epoch = c->epoch;
    e.mark = c->mark;
  }
  c->key.clear();
  respond(c, *r.answer);
}

void Server::sweep(uint64_t now) {
  std::vector<HttpConn*> expired;
  for (auto& [id, c] : conns)
    if (c->deadline <= now) expired.push_back(c);
  for (HttpConn* c : expired) closeConn(c);
  for (auto it = cache.begin(); it != cache.end();) it = it->second.until <= now || it->second.epoch != epoch.load() ? cache.erase(it) : std::next(it);
  if (!listening) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = LISTENER;
    listening = epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) == 0;
  }
}

void Server::run() {
  epoll_event events[128];
  for (;;) {
    int n = epoll_wait(ep, events, 128, 250);
    uint64_t now = nowMs();
    for (int i = 0; i < n; i++) {
      uint64_t tag = events[i].data.u64;
      if (tag == WAKE) {
        uint64_t v;
        (void)!read(wake, &v, sizeof v);
        std::vector<Reply> batch;
        {
          std::lock_guard<std::mutex> g(mu);
          if (stop) goto done;
          batch.swap(replies);
        }
        for (auto& r : batch) deliver(r);
      } else if (tag == LISTENER) {
        accept();
      } else {
        auto it = conns.find(tag);
        if (it == conns.end()) continue;
        HttpConn* c = it->second;
        // A connection waiting for JavaScript is out of the read set, but a reset is reported anyway: close it, or
        // the level-triggered hang-up would spin this loop until the answer comes.
        if (c->state == HttpConn::Waiting && (events[i].events & (EPOLLHUP | EPOLLERR))) closeConn(c);
        else if (c->state == HttpConn::Writing) flush(c);
        else if (c->state == HttpConn::Reading || c->state == HttpConn::Lingering) readable(c);
      }
    }
    if (now - lastSweep >= 250) {
      sweep(now);
      lastSweep = now;
    }
  }
done:
  for (auto& [id, c] : conns) {
    ::close(c->fd);
    delete c;
  }
  conns.clear();
}

void Server::shutdown() {
  if (running) {
    running = false;
    {
      std::lock_guard<std::mutex> g(mu);
      stop = true;
    }
    uint64_t one = 1;
    (void)!write(wake, &one, sizeof one);
    if (thread.joinable()) thread.join();
  }
  if (tsfn) {
    napi_release_threadsafe_function(tsfn, napi_tsfn_abort);
    tsfn = nullptr;
  }
  for (int* fd : {&lfd, &ep, &wake}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

// ---- JavaScript side ----

void callJs(napi_env env, napi_value fn, void*, void* data) {
  std::unique_ptr<Request> r(static_cast<Request*>(data));
  if (!env) return;
  napi_value obj, undef, body;
  napi_create_object(env, &obj);
  napi_get_undefined(env, &undef);
  setNum(env, obj, "id", double(r->id));
  setStr(env, obj, "method", r->method);
  // The URL as bytes (latin1), not UTF-8: JavaScript decides what a byte it does not expect means.
  napi_value url;
  napi_create_string_latin1(env, r->url.data(), r->url.size(), &url);
  napi_set_named_property(env, obj, "url", url);
  setStr(env, obj, "ifNoneMatch", r->ifNoneMatch);
  void* p;
  napi_create_buffer_copy(env, r->body.size(), r->body.data(), &p, &body);
  napi_set_named_property(env, obj, "body", body);
  napi_call_function(env, undef, fn, 1, &obj, nullptr);
}

Server* serverCall(napi_env env, napi_callback_info info, size_t want, napi_value* argv) {
  return externalCall<Server>(env, info, want, argv, "native answers: not an answer server");
}

// answersListen(onRequest, host, port, markerPath): listens on HOST:PORT (an IP address; port 0 picks one) or, with
// port -1, on the unix socket `host`; returns [server, port]. markerPath: the revocation marker file (see Mark).
napi_value Listen(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!getArgs(env, info, 4, argv)) return nullptr;
  std::string host, markerPath;
  int32_t port = 0;
  if (!getString(env, argv[1], host) || !getString(env, argv[3], markerPath) || napi_get_value_int32(env, argv[2], &port) != napi_ok || port < -1 || port > 65535)
    return throwError(env, "native answers: listen takes a host string and a port number");
  sockaddr_storage addr{};
  socklen_t len = 0;
  // Port -1: `host` is a unix socket path.
  if (const char* why = socketAddress(host, port == -1, uint16_t(port < 0 ? 0 : port), addr, len))
    return throwError(env, std::string("EINVAL: ") + why);
  std::unique_ptr<Server> s(new Server());
  s->markerPath = markerPath;
  s->lfd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->lfd < 0) return throwError(env, errnoName(errno));
  int one = 1;
  if (addr.ss_family != AF_UNIX) setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  // A connection is handed to accept() once its first bytes have come (or after 1 s): one wait less per request.
  if (addr.ss_family != AF_UNIX) setsockopt(s->lfd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof one);
  if (addr.ss_family != AF_UNIX) setsockopt(s->lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (bind(s->lfd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(s->lfd, 511) != 0) return throwError(env, errnoName(errno));
  sockaddr_storage bound{};
  socklen_t boundLen = sizeof bound;
  getsockname(s->lfd, reinterpret_cast<sockaddr*>(&bound), &boundLen);
  int boundPort = bound.ss_family == AF_INET    ? ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port)
                  : bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                                : 0;
  s->ep = epoll_create1(EPOLL_CLOEXEC);
  s->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->ep < 0 || s->wake < 0) return throwError(env, errnoName(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = WAKE;
  epoll_ctl(s->ep, EPOLL_CTL_ADD, s->wake, &ev);
  ev.data.u64 = LISTENER;
  epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &ev);
  napi_value name;
  napi_create_string_utf8(env, "mtls OCSP answers", NAPI_AUTO_LENGTH, &name);
  NAPI(napi_create_threadsafe_function(env, argv[0], nullptr, name, 0, 1, nullptr, nullptr, nullptr, callJs, &s->tsfn));
  napi_value ext;
  NAPI(napi_create_external(env, s.get(), finalizeOf<Server>, nullptr, &ext));
  Server* server = s.release();  // the external owns it now
  server->env = env;
  napi_add_env_cleanup_hook(env, cleanupHookOf<Server>, server);
  server->lastSweep = nowMs();
  server->thread = std::thread([server] { server->run(); });
  server->running = true;
  napi_value out, portValue;
  napi_create_array_with_length(env, 2, &out);
  napi_set_element(env, out, 0, ext);
  napi_create_int32(env, boundPort, &portValue);
  napi_set_element(env, out, 1, portValue);
  return out;
}

// answersReply(server, id, head, body, cacheMs, parts|null, gen): the answer to request `id` (head: the status line and
// headers, each ending in CRLF, without content-length or connection); cacheMs > 0 lets the same request be answered
// with it again for that long, unless invalidate() comes first. parts: [responderId, responses, certs] (DER) to sign
// answers to the same CertIDs with a nonce, by the key of answersSigner's generation `gen`.
napi_value ReplyTo(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  Server* s = serverCall(env, info, 7, argv);
  if (!s) return nullptr;
  int64_t id = 0;
  uint32_t cacheMs = 0;
  napi_get_value_int64(env, argv[1], &id);
  napi_get_value_uint32(env, argv[4], &cacheMs);
  auto answer = std::make_shared<Answer>();
  std::vector<uint8_t> body;
  if (!getString(env, argv[2], answer->head) || !getBytes(env, argv[3], body))
    return throwError(env, "native answers: reply takes a head string and a body Buffer");
  if (answer->head.compare(0, 9, "HTTP/1.1 ") != 0 || answer->head.size() < 4 || answer->head.compare(answer->head.size() - 2, 2, "\r\n") != 0)
    return throwError(env, "native answers: the head is a status line and headers, each ending in CRLF");
  answer->body.assign(body.begin(), body.end());
  std::shared_ptr<Parts> parts;
  bool isArray = false;
  napi_is_array(env, argv[5], &isArray);
  if (isArray) {
    parts = std::make_shared<Parts>();
    std::string* fields[] = {&parts->responderId, &parts->responses, &parts->certs};
    for (uint32_t i = 0; i < 3; i++) {
      napi_value v;
      std::vector<uint8_t> b;
      if (napi_get_element(env, argv[5], i, &v) != napi_ok || !getBytes(env, v, b) || b.empty())
        return throwError(env, "native answers: parts are three DER Buffers");
      fields[i]->assign(b.begin(), b.end());
    }
  }
  int64_t gen = 0;
  napi_get_value_int64(env, argv[6], &gen);
  Reply reply{uint64_t(id > 0 ? id : 0), std::move(answer), cacheMs, std::move(parts), uint64_t(gen > 0 ? gen : 0), nullptr};
  if (!s->post(std::move(reply))) return nullptr;
  return nullptr;
}

// answersSigner(server, pkcs8Der, algorithmDer, hash, gen): the responder's key (hash "" for Ed25519), for the parts
// of generation `gen`. The key bytes are wiped here; the caller wipes its own.
napi_value SetSigner(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  Server* s = serverCall(env, info, 5, argv);
  if (!s) return nullptr;
  std::vector<uint8_t> keyDer, alg;
  std::string hash;
  int64_t gen = 0;
  if (!getBytes(env, argv[1], keyDer) || !getBytes(env, argv[2], alg) || !getString(env, argv[3], hash) || napi_get_value_int64(env, argv[4], &gen) != napi_ok)
    return throwError(env, "native answers: signer takes a key Buffer, an algorithm Buffer, a hash name and a generation");
  auto k = std::make_shared<SignerKey>();
  const uint8_t* p = keyDer.data();
  k->key = d2i_AutoPrivateKey(nullptr, &p, long(keyDer.size()));
  OPENSSL_cleanse(keyDer.data(), keyDer.size());
  k->md = hash.empty() ? nullptr : EVP_get_digestbyname(hash.c_str());
  if (!k->key || (!hash.empty() && !k->md)) {
    ERR_clear_error();
    return throwError(env, "native answers: the responder key or its hash is not usable");
  }
  k->algorithm.assign(alg.begin(), alg.end());
  k->gen = uint64_t(gen);
  if (k->md) {
    k->fetched = EVP_MD_fetch(nullptr, hash.c_str(), nullptr);
    k->hash = EVP_MD_CTX_new();
    k->sign = EVP_PKEY_CTX_new_from_pkey(nullptr, k->key, nullptr);
    if (!k->fetched || !k->hash || !k->sign || EVP_PKEY_sign_init(k->sign) != 1 || EVP_PKEY_CTX_set_signature_md(k->sign, k->fetched) != 1) {
      EVP_PKEY_CTX_free(k->sign);
      k->sign = nullptr;  // signed with a context made per answer
      ERR_clear_error();
    }
  }
  Reply r{0, nullptr, 0, nullptr, 0, std::move(k)};
  s->post(std::move(r));
  return nullptr;
}

// answersInvalidate(server): no cached answer is served from now on, nor any answer to an earlier request stored.
napi_value Invalidate(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  Server* s = serverCall(env, info, 1, argv);
  if (s) s->epoch++;
  return nullptr;
}

// answersStats(server): {hits, misses, refused} since it started.
napi_value Stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  Server* s = serverCall(env, info, 1, argv);
  if (!s) return nullptr;
  napi_value obj;
  napi_create_object(env, &obj);
  setNum(env, obj, "hits", double(s->hits.load()));
  setNum(env, obj, "misses", double(s->misses.load()));
  setNum(env, obj, "refused", double(s->refused.load()));
  return obj;
}

// answersClose(server): stops listening, closes every connection and stops the thread.
napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  Server* s = serverCall(env, info, 1, argv);
  if (s) s->shutdown();
  return nullptr;
}

}  // namespace

void initAnswers(napi_env env, napi_value exports) {
  struct {
    const char* name;
    napi_callback fn;
  } fns[] = {{"answersListen", Listen}, {"answersReply", ReplyTo}, {"answersSigner", SetSigner}, {"answersInvalidate", Invalidate}, {"answersStats", Stats}, {"answersClose", Close}};
  for (auto& f : fns) {
    napi_value v;
    napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.fn, nullptr, &v);
    napi_set_named_property(env, exports, f.name, v);
  }
}

}  // namespace mtls_relay
