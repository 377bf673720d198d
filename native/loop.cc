// The event loop of one engine thread: epoll, the commands JavaScript queued, the limits sweep, closing.
#include "relay.h"

namespace mtls_relay {

// The event goes to JavaScript; when that is no longer possible (the engine is closing), it is freed here.
void Loop::post(std::unique_ptr<Event> ev) {
  Event* raw = ev.release();
  if (napi_call_threadsafe_function(e->tsfn, raw, napi_tsfn_nonblocking) != napi_ok) delete raw;
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
  for (auto it = conns.begin(); it != conns.end();) close((it++)->second, CloseReason::Stopped);
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
      for (auto it = conns.begin(); it != conns.end();) close((it++)->second, CloseReason::DrainTimeout);
      continue;
    }
    auto it = conns.find(c.id);
    if (it == conns.end()) {
      continue;  // gone meanwhile (its CLOSED event is on the way)
    }
    Conn* conn = it->second;
    if (c.type == CLOSE) {
      close(conn, CloseReason::Revoked);  // at any stage, relaying included
      continue;
    }
    if (conn->stage != Stage::Deciding) continue;
    if (c.type == REJECT) closeGracefully(conn, CloseReason::Denied);
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
    ev->why = CloseReason::OutOfMemory;
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
  if (!ctx) return close(c, CloseReason::NoContext, "HANDSHAKE_FAILED", "the listener has no certificate loaded");
  c->ssl = SSL_new(ctx);
  SSL_CTX_free(ctx);
  if (!c->ssl || !SSL_set_fd(c->ssl, fd)) return close(c, CloseReason::OutOfMemory, "HANDSHAKE_FAILED", "SSL_new failed");
  SSL_set_accept_state(c->ssl);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails harmlessly on a unix socket
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = uint64_t(id) << 1;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) return close(c, CloseReason::IoError, errnoName(errno), "epoll_ctl failed");
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
      if (events & (EPOLLHUP | EPOLLERR)) close(c, CloseReason::PeerClosed);
      return;
    case Stage::Connecting: {
      if (!target) {
        if (events & (EPOLLHUP | EPOLLERR)) close(c, CloseReason::PeerClosed);
        return;
      }
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c->tfd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err) return closeGracefully(c, CloseReason::TargetUnreachable, errnoName(err));
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
        return close(c, CloseReason::IoError, err ? errnoName(err) : "ECONNRESET");
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
      if ((events & EPOLLHUP) && !progressed && !waitsForOther && !doneBoth) return close(c, CloseReason::PeerClosed);
      return settle(id);
    }
  }
}

// After the pumps ran (either may have closed the connection): finished both ways, or wait for what is next.
void Loop::settle(uint64_t id) {
  auto it = conns.find(id);
  if (it == conns.end()) return;
  Conn* c = it->second;
  if (c->targetShut && c->clientShut) return close(c, CloseReason::Closed);
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
  std::vector<std::pair<Conn*, CloseReason>> doomed;
  for (auto& [id, c] : conns) {
    if (c->stage == Stage::Handshake || c->stage == Stage::Deciding) {
      if (now >= c->handshakeDeadline) doomed.emplace_back(c, CloseReason::HandshakeTimeout);
      continue;
    }
    if (now >= c->lifeDeadline) {
      doomed.emplace_back(c, CloseReason::MaxLifetime);
    } else if (c->up + c->down != c->seen) {
      c->seen = c->up + c->down;
      c->last = now;
    } else if (lim.idleMs && now - c->last >= lim.idleMs) {
      doomed.emplace_back(c, CloseReason::IdleTimeout);
    }
  }
  for (auto& [c, why] : doomed) close(c, why);
}

void Loop::close(Conn* c, CloseReason why, const std::string& code, const std::string& reason) {
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
    close(c, CloseReason::OutOfMemory);
  } catch (const std::bad_alloc&) {
    if (c->ssl) SSL_free(c->ssl);
    if (c->cfd >= 0) ::close(c->cfd);
    if (c->tfd >= 0) ::close(c->tfd);
    conns.erase(c->id);
    delete c;
  }
}

}  // namespace mtls_relay
