#include "parallel/tcp_rendezvous.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

namespace dserve::parallel {
namespace {

using std::chrono::milliseconds;

// A port nothing listens on right now (the kernel's pick, released again).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(TcpRendezvousTest, EveryNodeGetsNodeZerosBlobAndStrangersAreRefused) {
  const HostPort at{"127.0.0.1", FreePort()};
  std::vector<uint8_t> blob(128);
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<uint8_t>(i * 37 + 5);
  absl::Status served;
  std::thread server([&] { served = ServeRendezvous(at, 3, blob, milliseconds(10000)); });
  // A stranger connects first and speaks nonsense: refused, the real nodes still get in.
  std::thread stranger([&] {
    std::this_thread::sleep_for(milliseconds(100));
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(at.port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
      const char junk[8] = {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T'};
      (void)::send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
    }
    ::close(fd);
  });
  std::vector<absl::StatusOr<std::vector<uint8_t>>> got(3, absl::UnknownError("not run"));
  std::vector<std::thread> nodes;
  for (int node = 1; node <= 2; ++node) {
    nodes.emplace_back([&, node] {
      std::this_thread::sleep_for(milliseconds(200 * node));
      got[node] = JoinRendezvous(at, node, blob.size(), milliseconds(10000));
    });
  }
  for (std::thread& t : nodes) t.join();
  stranger.join();
  server.join();
  EXPECT_TRUE(served.ok()) << served;
  for (int node = 1; node <= 2; ++node) {
    ASSERT_TRUE(got[node].ok()) << got[node].status();
    EXPECT_EQ(*got[node], blob);
  }
}

TEST(TcpRendezvousTest, ASilentConnectionDoesNotHoldUpTheNodes) {
  const HostPort at{"127.0.0.1", FreePort()};
  const std::vector<uint8_t> blob(128, 7);
  absl::Status served;
  std::thread server([&] { served = ServeRendezvous(at, 2, blob, milliseconds(20000)); });
  // Connects first and never says anything.
  const int silent = ::socket(AF_INET, SOCK_STREAM, 0);
  std::this_thread::sleep_for(milliseconds(100));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(at.port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(silent, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  const auto start = std::chrono::steady_clock::now();
  const auto got = JoinRendezvous(at, 1, blob.size(), milliseconds(20000));
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  server.join();
  ::close(silent);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, blob);
  EXPECT_TRUE(served.ok()) << served;
  EXPECT_LT(waited, 12.0) << "the silent connection held the node up";
}

TEST(TcpRendezvousTest, MissingNodesAndAbsentServersTimeOutNamingThem) {
  const HostPort at{"127.0.0.1", FreePort()};
  const absl::Status s = ServeRendezvous(at, 3, std::vector<uint8_t>(8), milliseconds(300));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(s.message().find("node(s) 1, 2 did not connect"), std::string::npos) << s;
  const auto joined = JoinRendezvous(at, 1, 8, milliseconds(500));
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kDeadlineExceeded) << joined.status();
  EXPECT_NE(joined.status().message().find("did not answer in time"), std::string::npos);
}

TEST(TcpRendezvousTest, HostPortIsParsedOrRefused) {
  const auto ok = ParseHostPort("node0.cluster:29500");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->host, "node0.cluster");
  EXPECT_EQ(ok->port, 29500);
  for (const char* bad : {"node0", ":29500", "node0:", "node0:0", "node0:70000", "node0:x"}) {
    const auto s = ParseHostPort(bad);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.status().message().find("--dist-init-addr must be host:port"), std::string::npos);
  }
  // A name that does not resolve is retried (it may not be published yet), then named.
  const auto unresolved = JoinRendezvous({"no-such-host.invalid", 1234}, 1, 8, milliseconds(300));
  EXPECT_EQ(unresolved.status().code(), absl::StatusCode::kDeadlineExceeded)
      << unresolved.status();
  EXPECT_NE(unresolved.status().message().find("cannot resolve 'no-such-host.invalid'"),
            std::string::npos)
      << unresolved.status();
}

}  // namespace
}  // namespace dserve::parallel
