// Shared declarations of the native relay (see binding.cc for what it is and why). One header, four parts:
//   loop.cc        the event loop: epoll, commands from JavaScript, limits, closing
//   connection.cc  one connection's state machine: handshake, decision, connect, relay both ways
//   context.cc     the TLS context: certificate, trust, CRLs, policy, session tickets; OpenSSL and errno names
//   binding.cc     the N-API binding and the engine's lifetime
#pragma once

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
#include <unordered_set>
#include <vector>

namespace mtls_relay {

constexpr size_t CHUNK = 64 * 1024;  // one read from either side
constexpr int SWEEP_MS = 250;        // limits are checked this often (as src/proxy/relay.ts does)
constexpr uint64_t WAKE = UINT64_MAX;

inline const unsigned char SESSION_CONTEXT[] = "mtlskit proxy";

uint64_t nowMs();
std::string errnoName(int e);
std::string verifyName(long v);
std::string sslCode(unsigned long e);

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
inline const char* stageName(Stage s) {
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

// Why a connection closed. The order is shared with TypeScript (CLOSE_REASONS in src/proxy/native.ts): the addon
// exports these names as `closeReasons`, and a test checks that both lists agree.
enum class CloseReason : uint32_t {
  Closed,             // both sides finished
  PeerClosed,         // a side went away without finishing
  Denied,             // the policy refused the client
  HandshakeFailed,    // TLS failed (code: Node's ERR_SSL_... or errno)
  VerifyFailed,       // the client's chain did not verify (code: Node's verify code)
  HandshakeTimeout,   // no decision within the handshake deadline
  IdleTimeout,
  MaxLifetime,
  DrainTimeout,       // closed by closeAll() (shutdown or a drain that ran out)
  TargetUnreachable,  // connecting to the target failed (code: errno)
  IoError,            // a socket error while relaying (code: errno or ERR_SSL_...)
  OutOfMemory,
  NoContext,          // the listener has no certificate loaded
  Stopped,            // the engine was destroyed
  Revoked,            // close(): its certificate was revoked (or its trust withdrawn) while it was open
  Count
};
inline const char* const CLOSE_REASON_NAMES[] = {"closed",       "peer closed",   "denied",        "handshake failed", "verify failed",
                                          "handshake timeout", "idle timeout", "max lifetime", "drain timeout",
                                          "target unreachable", "io error",   "out of memory", "no TLS context", "engine stopped",
                                          "revoked"};
static_assert(sizeof CLOSE_REASON_NAMES / sizeof *CLOSE_REASON_NAMES == size_t(CloseReason::Count), "one name per close reason");

enum EventType { SECURED = 1, CLOSED = 2 };
struct Event {
  EventType type;
  uint64_t id = 0;
  std::vector<uint8_t> der;
  std::vector<uint8_t> issuerDer;  // the verified issuer of der (full handshakes): what an OCSP check needs
  std::string version, cipher, sni, code, reason;
  CloseReason why = CloseReason::Closed;
  bool resumed = false;
  const char* stage = "";
  uint64_t bytesIn = 0, up = 0, down = 0;
};

enum CmdType { ADD, ADMIT, REJECT, CLOSE, CLOSE_ALL, STOP };
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
// The serials one CRL revokes, by the CRL's issuer (compared with X509_NAME_cmp, as OpenSSL matches a CRL).
struct RevokedSet {
  X509_NAME* issuer = nullptr;
  std::unordered_set<std::string> serials;  // the INTEGER content octets, as in the certificate's DER
};

struct CtxData {
  Engine* e;
  TicketKeys keys{};
  bool haveKeys = false;
  // Revocation, checked in the verify callback by hash lookup (Node's crl option made a handshake 2.8x dearer at
  // 100,000 entries). Empty: no revocation checking.
  std::vector<RevokedSet> revoked;
};
// Whether `cert` is listed by the revocation sets of `d`.
bool isRevoked(const CtxData* d, X509* cert);
// Parses the revocation sets JavaScript encodes (src/proxy/native.ts encodeRevocations); "" or an error.
std::string parseRevocations(const std::vector<uint8_t>& b, std::vector<RevokedSet>& out);
extern int ctxDataIndex;
void freeCtxData(void*, void* p, CRYPTO_EX_DATA*, int, long, void*);
inline CtxData* ctxData(SSL_CTX* ctx) { return static_cast<CtxData*>(SSL_CTX_get_ex_data(ctx, ctxDataIndex)); }

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
  void closeGracefully(Conn* c, CloseReason why, const std::string& code = "", const std::string& reason = "");
  void arm(Conn* c);
  void register_(Conn* c, bool target, uint32_t want);
  void close(Conn* c, CloseReason why, const std::string& code = "", const std::string& reason = "");
  void dropForMemory(Conn* c);
};

// A listener's engine: its loops (a connection stays on the loop its id picks) and what they share.
struct Engine {
  napi_threadsafe_function tsfn = nullptr;
  std::atomic<uint64_t> nextId{1};
  std::vector<std::unique_ptr<Loop>> loops;
  bool running = false;
  napi_env env = nullptr;

  std::mutex mu;  // guards ctx (and its CtxData keys), limits, staple
  SSL_CTX* ctx = nullptr;
  Limits limits;
  // The DER OCSP response stapled for the current certificate (src/tls/stapling.ts fetches and refreshes it; JS
  // clears it when the certificate changes or the response expires). Empty: nothing is stapled.
  std::shared_ptr<const std::vector<uint8_t>> staple;
  // Whether secured events carry the verified issuer (only JS's OCSP check of clients needs it).
  std::atomic<bool> reportIssuer{false};

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

// The TLS policy (ciphers, groups, minimum version) is the TypeScript side's (src/tls/options.ts), passed in: there
// is no second copy of it here.
struct TlsPolicy {
  std::string ciphers, groups;
  int minVersion = TLS1_2_VERSION;
};

std::string lastSslError(const char* what);
std::string buildContext(Engine* e, const std::string& cert, const std::string& key, const std::string& ca, const std::vector<uint8_t>* revoked,
                         const std::vector<uint8_t>& keys, const TlsPolicy& policy, SSL_CTX** out);
// The OCSP answer server's functions (answers.cc), added to the addon's exports.
void initAnswers(napi_env env, napi_value exports);
int ticketCallback(SSL* s, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, int enc);

}  // namespace mtls_relay
