// Socket addresses for the addon's bindings (binding.cc: the relay's targets; answers.cc: the OCSP front's listener).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace mtls_relay {

// Fills `addr` and `len` with the unix socket path `host` (unixPath) or the IP address `host` and `port`. Returns
// nullptr, or why it cannot (a host name is not resolved here: JavaScript does that).
inline const char* socketAddress(const std::string& host, bool unixPath, uint16_t port, sockaddr_storage& addr, socklen_t& len) {
  addr = sockaddr_storage{};
  if (unixPath) {
    auto* un = reinterpret_cast<sockaddr_un*>(&addr);
    if (host.empty() || host.size() >= sizeof un->sun_path) return "unix socket path empty or too long";
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, host.data(), host.size());
    len = socklen_t(offsetof(sockaddr_un, sun_path) + host.size() + 1);
    return nullptr;
  }
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    len = sizeof *v6;
  } else {
    return "the host must be an IP address";
  }
  return nullptr;
}

}  // namespace mtls_relay
