// One connection's state machine on its loop: TLS handshake, the decision, connecting to the target, and the
// relay both ways (with back-pressure, half-close and hang-ups).
#include "relay.h"

namespace mtls_relay {

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
  close(c, verify != X509_V_OK ? CloseReason::VerifyFailed : CloseReason::HandshakeFailed, code, reason);
}

// Whether the verified peer still passes the engine's current trust bundle and CRLs. The connection took the
// context current at its accept; a reload may have replaced it while the handshake ran (issue 18.1: a TCP
// connection opened before a CRL reload and handshaking after it was verified against the old CRL). Then the
// chain is verified again, by OpenSSL, against the current store, and looked up in the current revocation sets,
// as the handshake would have done.
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
    // and the current revocation sets, for each certificate of the verified chain
    STACK_OF(X509)* verified = ok ? X509_STORE_CTX_get0_chain(v) : nullptr;
    for (int i = 0; verified && i < sk_X509_num(verified); i++) {
      if (isRevoked(ctxData(cur), sk_X509_value(verified, i))) {
        ok = false;
        err = X509_V_ERR_CERT_REVOKED;
        break;
      }
    }
  }
  X509_STORE_CTX_free(v);
  SSL_CTX_free(cur);
  if (!ok) {
    if (err == X509_V_OK) err = X509_V_ERR_UNSPECIFIED;
    close(c, CloseReason::VerifyFailed, verifyName(err), std::string(X509_verify_cert_error_string(err)) + " (the trust bundle or CRLs changed during the handshake)");
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
    // The issuer OpenSSL verified the leaf with (a client may send impostors beside it): for OCSP checks in JS.
    STACK_OF(X509)* verified = e->reportIssuer.load(std::memory_order_relaxed) ? SSL_get0_verified_chain(c->ssl) : nullptr;
    X509* issuer = verified && sk_X509_num(verified) > 1 ? sk_X509_value(verified, 1) : nullptr;
    int m = issuer ? i2d_X509(issuer, nullptr) : 0;
    if (m > 0) {
      ev->issuerDer.resize(size_t(m));
      unsigned char* q = ev->issuerDer.data();
      i2d_X509(issuer, &q);
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

// A client that is denied, or whose target cannot be reached, gets a FIN, not a reset: what it sent meanwhile is
// read and dropped first (closing a socket with unread bytes makes the kernel send RST). Only the unreachable
// target gets close_notify too: after the handshake, close_notify tells the client we accepted its certificate
// (mtls connect reads it so), which a denial must not say. OpenSSL has no public call to send access_denied here.
void Loop::closeGracefully(Conn* c, CloseReason why, const std::string& code, const std::string& reason) {
  for (int i = 0; i < 16; i++) {
    if (recv(c->cfd, scratch.get(), CHUNK, MSG_DONTWAIT) <= 0) break;
  }
  if (why != CloseReason::Denied) {
    ERR_clear_error();
    SSL_shutdown(c->ssl);
  }
  shutdown(c->cfd, SHUT_WR);
  close(c, why, code, reason);
}

void Loop::admit(Conn* c, const Cmd& cmd) {
  int fd = socket(cmd.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return closeGracefully(c, CloseReason::TargetUnreachable, errnoName(errno));
  c->tfd = fd;
  if (cmd.addr.ss_family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  if (!cmd.header.empty() && !c->toTarget.set(cmd.header.data(), cmd.header.size())) return closeGracefully(c, CloseReason::OutOfMemory);
  c->stage = Stage::Connecting;
  epoll_event ev{};
  ev.events = EPOLLOUT;
  ev.data.u64 = (uint64_t(c->id) << 1) | 1;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) return close(c, CloseReason::TargetUnreachable, errnoName(errno));
  c->tev = EPOLLOUT;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&cmd.addr), cmd.addrLen) != 0 && errno != EINPROGRESS) {
    int err = errno == EAGAIN ? ECONNREFUSED : errno;  // a unix socket with a full backlog
    return closeGracefully(c, CloseReason::TargetUnreachable, errnoName(err));
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
        return close(c, CloseReason::IoError, errnoName(errno));
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
        return close(c, CloseReason::IoError, err ? sslCode(err) : (errno ? errnoName(errno) : "ECONNRESET"));
      }
      break;
    }
    if (got) {
      c->up += got;
      ssize_t n = send(c->tfd, buf, got, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) return close(c, CloseReason::IoError, errnoName(errno));
        n = 0;
      }
      if (size_t(n) < got) {
        if (!c->toTarget.set(buf + n, got - size_t(n))) return close(c, CloseReason::OutOfMemory);
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
      return close(c, CloseReason::IoError, err ? sslCode(err) : (errno ? errnoName(errno) : "EPIPE"));
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
      return close(c, CloseReason::IoError, errnoName(errno));
    }
    c->down += uint64_t(n);
    if (!c->toClient.set(buf, size_t(n))) return close(c, CloseReason::OutOfMemory);
  }
}

}  // namespace mtls_relay
