#include "parallel/tcp_rendezvous.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dserve::parallel {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMagic = 0x44535256;  // "DSRV"
constexpr std::chrono::seconds kHelloTimeout{5};

class Socket {
 public:
  explicit Socket(int fd = -1) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

int MillisLeft(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

// Waits until fd is readable/writable or the deadline passes.
absl::Status Wait(int fd, short events, Clock::time_point deadline, const char* what) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int n = ::poll(&p, 1, MillisLeft(deadline));
    if (n > 0) return absl::OkStatus();
    if (n == 0) return absl::DeadlineExceededError(absl::StrCat("rendezvous: timed out ", what));
    if (errno != EINTR) return Errno("rendezvous: poll");
  }
}

absl::Status SendAll(int fd, const void* data, size_t n, Clock::time_point deadline) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    if (absl::Status s = Wait(fd, POLLOUT, deadline, "sending"); !s.ok()) return s;
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Errno("rendezvous: send");
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
  return absl::OkStatus();
}

absl::Status RecvAll(int fd, void* data, size_t n, Clock::time_point deadline) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    if (absl::Status s = Wait(fd, POLLIN, deadline, "receiving"); !s.ok()) return s;
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k == 0) return absl::UnavailableError("rendezvous: the peer closed the connection");
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Errno("rendezvous: recv");
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
  return absl::OkStatus();
}

absl::StatusOr<sockaddr_in> Resolve(const HostPort& at) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(at.host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--dist-init-addr: cannot resolve '", at.host,
                                                   "': ", ::gai_strerror(rc)));
  }
  sockaddr_in addr = *reinterpret_cast<const sockaddr_in*>(found->ai_addr);
  ::freeaddrinfo(found);
  addr.sin_port = htons(static_cast<uint16_t>(at.port));
  return addr;
}

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(const std::string& text) {
  const size_t colon = text.rfind(':');
  HostPort hp;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(text.substr(colon + 1), &hp.port) || hp.port < 1 || hp.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dist-init-addr must be host:port (port 1-65535), got '", text, "'"));
  }
  hp.host = text.substr(0, colon);
  return hp;
}

absl::Status ServeRendezvous(const HostPort& at, int nnodes, const std::vector<uint8_t>& blob,
                             std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  if (nnodes <= 1) return absl::OkStatus();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);  // node 0 serves on every interface
  addr.sin_port = htons(static_cast<uint16_t>(at.port));
  Socket listener(::socket(AF_INET, SOCK_STREAM, 0));
  if (listener.fd() < 0) return Errno("rendezvous: socket");
  const int one = 1;
  ::setsockopt(listener.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(listener.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Errno(absl::StrCat("rendezvous: cannot listen on port ", at.port));
  }
  if (::listen(listener.fd(), nnodes) != 0) return Errno("rendezvous: listen");
  std::set<int> missing;
  for (int r = 1; r < nnodes; ++r) missing.insert(r);
  while (!missing.empty()) {
    if (absl::Status s = Wait(listener.fd(), POLLIN, deadline, "waiting for the nodes");
        !s.ok()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rendezvous on port ", at.port, ": node(s) ", absl::StrJoin(missing, ", "),
          " did not connect in time (are they started with the same --dist-init-addr?)"));
    }
    Socket peer(::accept(listener.fd(), nullptr, nullptr));
    if (peer.fd() < 0) continue;
    // A few seconds for the hello: a connection that says nothing (a port probe, a node that
    // died while connecting) must not hold up the others.
    const Clock::time_point hello_by = std::min(deadline, Clock::now() + kHelloTimeout);
    uint32_t hello[2] = {0, 0};
    if (!RecvAll(peer.fd(), hello, sizeof(hello), hello_by).ok() || ntohl(hello[0]) != kMagic) {
      continue;  // not one of ours: refuse it and keep waiting
    }
    const int node = static_cast<int>(ntohl(hello[1]));
    if (!missing.contains(node)) continue;
    const uint32_t header[2] = {htonl(kMagic), htonl(static_cast<uint32_t>(blob.size()))};
    if (SendAll(peer.fd(), header, sizeof(header), deadline).ok() &&
        SendAll(peer.fd(), blob.data(), blob.size(), deadline).ok()) {
      missing.erase(node);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> JoinRendezvous(const HostPort& at, int node_rank,
                                                    size_t bytes,
                                                    std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  absl::Status last = absl::UnavailableError("not tried");
  while (Clock::now() < deadline) {
    // Resolved on every try: node 0's name may not be published yet.
    const absl::StatusOr<sockaddr_in> addr = Resolve(at);
    if (!addr.ok()) {
      last = addr.status();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    if (s.fd() < 0) return Errno("rendezvous: socket");
    // Non-blocking, so an address that drops packets cannot hold us past the deadline.
    if (::connect(s.fd(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
      int error = errno;
      if (error == EINPROGRESS &&
          Wait(s.fd(), POLLOUT, std::min(deadline, Clock::now() + kHelloTimeout), "connecting")
              .ok()) {
        socklen_t len = sizeof(error);
        ::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &error, &len);
      } else if (error == EINPROGRESS) {
        error = ETIMEDOUT;
      }
      if (error != 0) {
        errno = error;
        last = Errno(absl::StrCat("rendezvous: connecting to ", at.host, ":", at.port));
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // node 0 may not be up
        continue;
      }
    }
    const uint32_t hello[2] = {htonl(kMagic), htonl(static_cast<uint32_t>(node_rank))};
    uint32_t header[2] = {0, 0};
    if (absl::Status st = SendAll(s.fd(), hello, sizeof(hello), deadline); !st.ok()) return st;
    if (absl::Status st = RecvAll(s.fd(), header, sizeof(header), deadline); !st.ok()) return st;
    if (ntohl(header[0]) != kMagic || ntohl(header[1]) != bytes) {
      return absl::DataLossError(absl::StrCat(
          "rendezvous: ", at.host, ":", at.port, " is not a dserve node 0 (or another version)"));
    }
    std::vector<uint8_t> blob(bytes);
    if (absl::Status st = RecvAll(s.fd(), blob.data(), bytes, deadline); !st.ok()) return st;
    return blob;
  }
  return absl::DeadlineExceededError(
      absl::StrCat("rendezvous: node 0 at ", at.host, ":", at.port, " did not answer in time (",
                   last.message(), ")"));
}

}  // namespace dserve::parallel
