// The gRPC front end end to end: every dserve.v1 RPC through a real channel to a server on
// 127.0.0.1, streams that end with a Final whose usage matches the tokens received, error codes
// that name the field, cancellation that frees the KV cache, a client that never reads, health
// (and its drain), reflection and API keys.
#include "server/grpc_service.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dserve/v1/dserve.grpc.pb.h"
#include "dserve/v1/dserve.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "tests/server/server_test_env.h"

namespace dserve::server {
namespace {

using ::dserve::server::testing::SharedEnv;
using std::chrono::milliseconds;

// Generous: the model is tiny, but CI machines are slow and a hang must fail, not block.
constexpr auto kCallTimeout = std::chrono::seconds(120);

void SetDeadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
}

GrpcServer::Options LocalOptions() {
  GrpcServer::Options options;
  options.host = "127.0.0.1";
  options.port = 0;
  return options;
}

std::unique_ptr<GrpcServer> StartServer(const GrpcServer::Options& options) {
  absl::StatusOr<std::unique_ptr<GrpcServer>> server =
      GrpcServer::Start(SharedEnv().service(), options);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  EXPECT_GT((*server)->port(), 0);
  return *std::move(server);
}

std::unique_ptr<GrpcServer> StartServer(const std::string& api_key = "") {
  GrpcServer::Options options = LocalOptions();
  options.api_key = api_key;
  return StartServer(options);
}

std::shared_ptr<grpc::Channel> ChannelTo(const GrpcServer& server) {
  return grpc::CreateChannel(absl::StrCat("127.0.0.1:", server.port()),
                             grpc::InsecureChannelCredentials());
}

// A stream read to its end, with what the tests check derived from it.
struct StreamResult {
  std::vector<v1::GenerateResponse> messages;
  grpc::Status status;
  std::map<int, std::vector<int32_t>> tokens;  // per choice index, in order
  std::map<int, std::string> delta_finish;     // per choice, from its Delta
  int num_finals = 0;
  bool final_is_last = false;
  v1::Final final;
};

StreamResult Drain(grpc::ClientReaderInterface<v1::GenerateResponse>& reader) {
  StreamResult r;
  v1::GenerateResponse message;
  while (reader.Read(&message)) r.messages.push_back(message);
  r.status = reader.Finish();
  for (size_t i = 0; i < r.messages.size(); ++i) {
    const v1::GenerateResponse& m = r.messages[i];
    if (m.has_final()) {
      ++r.num_finals;
      r.final = m.final();
      r.final_is_last = i + 1 == r.messages.size();
    } else if (m.has_delta()) {
      const v1::Delta& d = m.delta();
      auto& ids = r.tokens[d.index()];
      ids.insert(ids.end(), d.token_ids().begin(), d.token_ids().end());
      if (!d.finish_reason().empty()) r.delta_finish[d.index()] = d.finish_reason();
    }
  }
  return r;
}

int64_t TotalTokens(const StreamResult& r) {
  int64_t total = 0;
  for (const auto& [index, ids] : r.tokens) total += static_cast<int64_t>(ids.size());
  return total;
}

// Waits until the engine holds no KV page (cached prefix pages do not count as used).
bool WaitForKvFree(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (SharedEnv().engine().gauges().kv_used_pages == 0) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return SharedEnv().engine().gauges().kv_used_pages == 0;
}

grpc::ByteBuffer ToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromByteBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

// grpc.health.v1.Health/Check without the health stubs (Debian does not ship them):
// HealthCheckRequest is field 1 (service, a string); HealthCheckResponse is field 1 (status,
// an enum), so SERVING (1) serialises as 08 01.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         std::string* response_bytes) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0A);
    request.push_back(static_cast<char>(service.size()));  // fits one varint byte below 128
    request += service;
  }
  const grpc::ByteBuffer request_buffer = ToByteBuffer(request);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                 &response, [&done](grpc::Status s) { done.set_value(std::move(s)); });
  grpc::Status status = done.get_future().get();
  if (status.ok()) *response_bytes = FromByteBuffer(response);
  return status;
}

// HealthCheckResponse bytes: status (field 1) SERVING = 1, NOT_SERVING = 2.
const std::string kServing("\x08\x01", 2);
const std::string kNotServing("\x08\x02", 2);

// A request for exactly `max_tokens` tokens per choice.
v1::GenerateRequest FixedLength(const std::string& text, int max_tokens) {
  v1::GenerateRequest request;
  request.set_text(text);
  request.mutable_params()->set_max_tokens(max_tokens);
  request.mutable_params()->set_ignore_eos(true);
  request.mutable_params()->set_temperature(0);
  return request;
}

class GrpcServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = StartServer();
    ASSERT_NE(server_, nullptr);
    channel_ = ChannelTo(*server_);
    stub_ = v1::Dserve::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(milliseconds(2000));
    // Every test leaves the shared engine idle for the next one.
    EXPECT_TRUE(WaitForKvFree(milliseconds(10000)));
  }

  StreamResult Generate(const v1::GenerateRequest& request) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    auto reader = stub_->Generate(&ctx, request);
    return Drain(*reader);
  }

  StreamResult Chat(const v1::ChatRequest& request) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    auto reader = stub_->Chat(&ctx, request);
    return Drain(*reader);
  }

  std::vector<int32_t> Tokenize(const std::string& text, bool add_special_tokens) {
    v1::TokenizeRequest request;
    request.set_text(text);
    request.set_add_special_tokens(add_special_tokens);
    v1::TokenizeResponse response;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    const grpc::Status status = stub_->Tokenize(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.count(), response.token_ids_size());
    return {response.token_ids().begin(), response.token_ids().end()};
  }

  int64_t MaxModelLen() {
    v1::ListModelsResponse response;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    EXPECT_TRUE(stub_->ListModels(&ctx, v1::ListModelsRequest(), &response).ok());
    return response.models_size() > 0 ? response.models(0).max_model_len() : 0;
  }

  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Dserve::Stub> stub_;
};

// The single point where ApiError's HTTP statuses become gRPC codes.
TEST(GrpcStatusTest, MapsApiErrors) {
  EXPECT_EQ(ToGrpcStatus(ApiError::BadRequest("m")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcStatus(ApiError::NotFound("m")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(ApiError::Unauthorized("m")).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ToGrpcStatus(ApiError::TooLarge("m")).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcStatus(ApiError::TooManyRequests("m")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(ApiError::Unavailable("m")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcStatus(ApiError::Internal("m")).error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(ToGrpcStatus(ApiError::BadRequest("top_p must be in (0, 1]")).error_message(),
            "top_p must be in (0, 1]");
}

TEST_F(GrpcServiceTest, ListModelsNamesTheServedModel) {
  v1::ListModelsResponse response;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  const grpc::Status status = stub_->ListModels(&ctx, v1::ListModelsRequest(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.models_size(), 1);
  EXPECT_EQ(response.models(0).id(), SharedEnv().model_name());
  EXPECT_GT(response.models(0).max_model_len(), 0);
  EXPECT_EQ(response.models(0).owned_by(), "dserve");
}

TEST_F(GrpcServiceTest, GenerateFromTokenIdsStreamsExactlyMaxTokens) {
  const std::vector<int32_t> prompt = Tokenize("The capital of France is", true);
  ASSERT_FALSE(prompt.empty());
  v1::GenerateRequest request = FixedLength("", 8);
  request.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());  // clears text

  const StreamResult r = Generate(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.num_finals, 1);
  EXPECT_TRUE(r.final_is_last);
  ASSERT_EQ(r.tokens.size(), 1u);
  EXPECT_EQ(r.tokens.begin()->first, 0);
  EXPECT_EQ(r.tokens.at(0).size(), 8u);
  EXPECT_EQ(r.final.usage().completion_tokens(), 8);
  EXPECT_EQ(r.final.usage().completion_tokens(), TotalTokens(r));
  EXPECT_EQ(r.final.usage().prompt_tokens(), static_cast<int64_t>(prompt.size()));
  ASSERT_EQ(r.final.choices_size(), 1);
  EXPECT_EQ(r.final.choices(0).index(), 0);
  EXPECT_EQ(r.final.choices(0).finish_reason(), "length");
  EXPECT_EQ(r.delta_finish.at(0), "length");
  EXPECT_FALSE(r.final.id().empty());
}

TEST_F(GrpcServiceTest, GenerateFromTextTokenisesLikeTokenize) {
  const std::string text = "Hello, world. Tell me a story";
  const StreamResult with_bos = Generate(FixedLength(text, 8));
  ASSERT_TRUE(with_bos.status.ok()) << with_bos.status.error_message();
  ASSERT_EQ(with_bos.num_finals, 1);
  EXPECT_TRUE(with_bos.final_is_last);
  EXPECT_EQ(TotalTokens(with_bos), 8);
  EXPECT_EQ(with_bos.final.usage().completion_tokens(), 8);
  EXPECT_EQ(with_bos.final.usage().prompt_tokens(),
            static_cast<int64_t>(Tokenize(text, true).size()));
  EXPECT_EQ(with_bos.final.choices(0).finish_reason(), "length");

  v1::GenerateRequest request = FixedLength(text, 8);
  request.set_add_special_tokens(false);
  const StreamResult without = Generate(request);
  ASSERT_TRUE(without.status.ok()) << without.status.error_message();
  EXPECT_EQ(without.final.usage().prompt_tokens(),
            static_cast<int64_t>(Tokenize(text, false).size()));
  EXPECT_EQ(TotalTokens(without), 8);
}

TEST_F(GrpcServiceTest, GenerateWithTwoSamplesNumbersThemZeroAndOne) {
  v1::GenerateRequest request = FixedLength("Once upon a time", 8);
  request.mutable_params()->set_n(2);
  request.mutable_params()->set_temperature(1.0f);
  request.mutable_params()->set_seed(7);
  const StreamResult r = Generate(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.tokens.size(), 2u);
  EXPECT_EQ(r.tokens.at(0).size(), 8u);
  EXPECT_EQ(r.tokens.at(1).size(), 8u);
  ASSERT_EQ(r.num_finals, 1);
  EXPECT_TRUE(r.final_is_last);
  EXPECT_EQ(r.final.usage().completion_tokens(), 16);
  ASSERT_EQ(r.final.choices_size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(r.final.choices(i).index(), i);
    EXPECT_EQ(r.final.choices(i).finish_reason(), "length");
  }
}

TEST_F(GrpcServiceTest, GenerateWithLogprobsReportsOnePerToken) {
  v1::GenerateRequest request = FixedLength("The sky is", 6);
  request.mutable_params()->set_logprobs(2);
  const StreamResult r = Generate(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  int entries = 0;
  for (const v1::GenerateResponse& m : r.messages) {
    if (!m.has_delta()) continue;
    const v1::Delta& d = m.delta();
    ASSERT_EQ(d.logprobs_size(), d.token_ids_size());
    for (int i = 0; i < d.logprobs_size(); ++i) {
      const v1::TokenLogprob& lp = d.logprobs(i);
      EXPECT_EQ(lp.token_id(), d.token_ids(i));
      EXPECT_LE(lp.logprob(), 0.0f);
      EXPECT_EQ(lp.top_logprobs_size(), 2);
      ++entries;
    }
  }
  EXPECT_EQ(entries, 6);
}

TEST_F(GrpcServiceTest, OutOfRangeSamplingParamIsInvalidArgumentNamingIt) {
  v1::GenerateRequest request = FixedLength("Hello", 4);
  request.mutable_params()->set_top_p(5.0f);
  const StreamResult r = Generate(request);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("top_p"), std::string::npos) << r.status.error_message();
  EXPECT_TRUE(r.messages.empty());
}

TEST_F(GrpcServiceTest, MissingInputIsInvalidArgument) {
  v1::GenerateRequest request;
  request.mutable_params()->set_max_tokens(4);
  const StreamResult r = Generate(request);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("token_ids"), std::string::npos)
      << r.status.error_message();
}

TEST_F(GrpcServiceTest, UnknownModelIsNotFound) {
  v1::GenerateRequest request = FixedLength("Hello", 4);
  request.set_model("no-such-model");
  const StreamResult r = Generate(request);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND) << r.status.error_message();
  EXPECT_TRUE(r.messages.empty());

  v1::TokenizeRequest tokenize;
  tokenize.set_model("no-such-model");
  tokenize.set_text("Hello");
  v1::TokenizeResponse response;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  EXPECT_EQ(stub_->Tokenize(&ctx, tokenize, &response).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(GrpcServiceTest, ChatStreamsAndEndsWithUsage) {
  v1::ChatRequest request;
  request.set_model(SharedEnv().model_name());
  v1::ChatMessage* system = request.add_messages();
  system->set_role("system");
  system->set_content("You are terse.");
  v1::ChatMessage* user = request.add_messages();
  user->set_role("user");
  user->set_content("Say hello.");
  request.mutable_params()->set_max_tokens(5);
  request.mutable_params()->set_ignore_eos(true);
  request.mutable_params()->set_temperature(0);
  const StreamResult r = Chat(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.num_finals, 1);
  EXPECT_TRUE(r.final_is_last);
  EXPECT_EQ(TotalTokens(r), 5);
  EXPECT_EQ(r.final.usage().completion_tokens(), 5);
  EXPECT_GT(r.final.usage().prompt_tokens(), 0);
  ASSERT_EQ(r.final.choices_size(), 1);
  EXPECT_EQ(r.final.choices(0).finish_reason(), "length");
}

// tools_json goes through the same validation as the HTTP tools array; with tools on, the
// random model may or may not emit tool markup, so only the stream's shape is checked.
TEST_F(GrpcServiceTest, ChatAcceptsToolsAndAssistantToolCalls) {
  v1::ChatRequest request;
  v1::ChatMessage* user = request.add_messages();
  user->set_role("user");
  user->set_content("What is the weather in Paris?");
  v1::ChatMessage* assistant = request.add_messages();
  assistant->set_role("assistant");
  assistant->set_tool_calls_json(
      R"([{"id":"call_1","type":"function","function":{"name":"get_weather",)"
      R"("arguments":"{\"city\":\"Paris\"}"}}])");
  v1::ChatMessage* tool = request.add_messages();
  tool->set_role("tool");
  tool->set_tool_call_id("call_1");
  tool->set_content("sunny");
  request.set_tools_json(
      R"([{"type":"function","function":{"name":"get_weather","description":"Weather",)"
      R"("parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}])");
  request.set_tool_choice("auto");
  request.mutable_params()->set_max_tokens(4);
  request.mutable_params()->set_ignore_eos(true);
  const StreamResult r = Chat(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.num_finals, 1);
  EXPECT_EQ(r.final.usage().completion_tokens(), 4);
  EXPECT_EQ(TotalTokens(r), 4);
}

TEST_F(GrpcServiceTest, ChatWithBadJsonFieldsIsInvalidArgumentNamingTheField) {
  auto base = [] {
    v1::ChatRequest request;
    v1::ChatMessage* user = request.add_messages();
    user->set_role("user");
    user->set_content("hi");
    request.mutable_params()->set_max_tokens(2);
    return request;
  };
  struct Case {
    const char* what;
    v1::ChatRequest request;
    const char* mention;
  };
  std::vector<Case> cases;
  cases.push_back({"tools_json not JSON", base(), "tools_json"});
  cases.back().request.set_tools_json("[{\"type\": ");
  cases.push_back({"tools_json not an array", base(), "tools_json"});
  cases.back().request.set_tools_json(R"({"type": "function"})");
  cases.push_back({"tool_choice names no tool", base(), "tool_choice"});
  cases.back().request.set_tool_choice("get_weather");
  // Without constrained decoding no tool call can be forced: "required" and a named function
  // are refused even when the tool exists.
  const std::string weather_tool =
      R"([{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}])";
  cases.push_back({"tool_choice required", base(), "tool_choice"});
  cases.back().request.set_tools_json(weather_tool);
  cases.back().request.set_tool_choice("required");
  cases.push_back({"tool_choice names a declared tool", base(), "tool_choice"});
  cases.back().request.set_tools_json(weather_tool);
  cases.back().request.set_tool_choice("get_weather");
  cases.push_back({"tools_json nested too deep", base(), "tools_json"});
  cases.back().request.set_tools_json(std::string(100, '[') + std::string(100, ']'));
  // Within the 64 levels of the HTTP body limit alone, but not once placed in the body.
  cases.push_back({"tools_json nested 64 deep", base(), "tools_json"});
  cases.back().request.set_tools_json(std::string(64, '[') + std::string(64, ']'));
  cases.push_back({"kwargs not JSON", base(), "chat_template_kwargs_json"});
  cases.back().request.set_chat_template_kwargs_json("{thinking: true}");
  cases.push_back({"bad role", base(), "role"});
  cases.back().request.mutable_messages(0)->set_role("robot");
  cases.push_back({"no messages", base(), "messages"});
  cases.back().request.clear_messages();
  cases.push_back({"tool_calls_json not JSON", base(), "messages[1].tool_calls_json"});
  {
    v1::ChatMessage* assistant = cases.back().request.add_messages();
    assistant->set_role("assistant");
    assistant->set_tool_calls_json("[");
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const StreamResult r = Chat(c.request);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(r.status.error_message().find(c.mention), std::string::npos)
        << r.status.error_message();
    EXPECT_TRUE(r.messages.empty());
  }
}

// ordered_json is quadratic in an object's members: an object with 5000 of them is refused
// by a linear scan before it is parsed, naming the field.
TEST_F(GrpcServiceTest, JsonFieldWithTooManyMembersIsRefusedQuickly) {
  std::string properties = "{";
  for (int i = 0; i < 5000; ++i) {
    absl::StrAppend(&properties, i == 0 ? "" : ",", "\"p", i, "\":{\"type\":\"string\"}");
  }
  properties += "}";
  v1::ChatRequest request;
  v1::ChatMessage* user = request.add_messages();
  user->set_role("user");
  user->set_content("hi");
  request.mutable_params()->set_max_tokens(2);
  request.set_tools_json(absl::StrCat(
      R"([{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":)",
      properties, "}}}]"));
  const auto start = std::chrono::steady_clock::now();
  StreamResult r = Chat(request);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("tools_json"), std::string::npos)
      << r.status.error_message();
  EXPECT_TRUE(r.messages.empty());

  request.clear_tools_json();
  request.set_chat_template_kwargs_json(properties);
  r = Chat(request);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("chat_template_kwargs_json"), std::string::npos)
      << r.status.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(GrpcServiceTest, TokenizeAndDetokenizeRoundTrip) {
  const std::string text = "Hello world, how are you?";
  const std::vector<int32_t> plain = Tokenize(text, false);
  ASSERT_FALSE(plain.empty());
  EXPECT_GE(Tokenize(text, true).size(), plain.size());

  v1::DetokenizeRequest request;
  request.mutable_token_ids()->Add(plain.begin(), plain.end());
  v1::DetokenizeResponse response;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  const grpc::Status status = stub_->Detokenize(&ctx, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.text(), text);

  v1::DetokenizeRequest bad;
  bad.add_token_ids(-1);
  grpc::ClientContext bad_ctx;
  SetDeadline(bad_ctx);
  EXPECT_EQ(stub_->Detokenize(&bad_ctx, bad, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(GrpcServiceTest, TokenizeMessagesThroughTheChatTemplate) {
  auto tokenize = [this](bool add_generation_prompt) {
    v1::TokenizeRequest request;
    v1::ChatMessage* user = request.add_messages();
    user->set_role("user");
    user->set_content("Hello there");
    request.set_add_generation_prompt(add_generation_prompt);
    v1::TokenizeResponse response;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    const grpc::Status status = stub_->Tokenize(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.count(), response.token_ids_size());
    EXPECT_GT(response.max_model_len(), 0);
    return response.count();
  };
  const int with_prompt = tokenize(true);
  const int without_prompt = tokenize(false);
  EXPECT_GT(without_prompt, 0);
  EXPECT_LT(without_prompt, with_prompt);  // the assistant header is left out

  v1::TokenizeRequest both;
  both.set_text("Hello");
  both.add_messages()->set_role("user");
  both.mutable_messages(0)->set_content("Hello");
  v1::TokenizeResponse response;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  EXPECT_EQ(stub_->Tokenize(&ctx, both, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

// A long generation whose room leaves no chance of finishing before the cancel lands.
v1::GenerateRequest LongRequest(int64_t max_model_len, int64_t prompt_tokens,
                                const std::string& text) {
  const int64_t room = max_model_len - prompt_tokens;
  EXPECT_GT(room, 64) << "the test model's context is too short for a cancellation test";
  return FixedLength(text, static_cast<int>(std::min<int64_t>(100000, room)));
}

TEST_F(GrpcServiceTest, CancellingTheCallCancelsTheGeneration) {
  const std::string text = "Count to a million:";
  const v1::GenerateRequest request =
      LongRequest(MaxModelLen(), static_cast<int64_t>(Tokenize(text, true).size()), text);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  auto reader = stub_->Generate(&ctx, request);
  v1::GenerateResponse message;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(reader->Read(&message));
    ASSERT_TRUE(message.has_delta());
  }
  EXPECT_GT(SharedEnv().engine().gauges().kv_used_pages, 0);
  ctx.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForKvFree(milliseconds(10000)))
      << "kv_used_pages " << SharedEnv().engine().gauges().kv_used_pages;
}

// Shutdown must not wait for a generation that would run for minutes: it cancels the call,
// which cancels the generation.
TEST_F(GrpcServiceTest, ShutdownEndsRunningStreams) {
  const std::string text = "Write a long essay:";
  const v1::GenerateRequest request =
      LongRequest(MaxModelLen(), static_cast<int64_t>(Tokenize(text, true).size()), text);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  auto reader = stub_->Generate(&ctx, request);
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));
  const auto start = std::chrono::steady_clock::now();
  server_->Shutdown(milliseconds(200));  // returns once the call is over
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  while (reader->Read(&message)) {
  }
  EXPECT_FALSE(reader->Finish().ok());
  EXPECT_TRUE(WaitForKvFree(milliseconds(10000)));
}

// A client that never reads: once HTTP/2 flow control stalls the writes, the queue reaches
// max_pending_bytes, the generation is cancelled (its KV pages freed without a single Read)
// and the call ends RESOURCE_EXHAUSTED after what was already sent.
TEST_F(GrpcServiceTest, AClientThatNeverReadsIsCutOffAndItsGenerationCancelled) {
  GrpcServer::Options options = LocalOptions();
  options.max_pending_bytes = 2048;
  std::unique_ptr<GrpcServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  // A small stream window that BDP probing does not grow: the writes stall after a few KiB
  // rather than after the whole generation.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 4096);
  const std::unique_ptr<v1::Dserve::Stub> stub = v1::Dserve::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", server->port()), grpc::InsecureChannelCredentials(), args));
  const std::string text = "Recite the digits of pi:";
  const v1::GenerateRequest request =
      LongRequest(MaxModelLen(), static_cast<int64_t>(Tokenize(text, true).size()), text);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  auto reader = stub->Generate(&ctx, request);
  std::this_thread::sleep_for(milliseconds(2000));  // not reading
  EXPECT_TRUE(WaitForKvFree(milliseconds(60000)))
      << "kv_used_pages " << SharedEnv().engine().gauges().kv_used_pages;
  const StreamResult r = Drain(*reader);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("not reading"), std::string::npos)
      << r.status.error_message();
  EXPECT_EQ(r.num_finals, 0);
  EXPECT_LT(TotalTokens(r), request.params().max_tokens());
  server->Shutdown(milliseconds(1000));
}

TEST_F(GrpcServiceTest, HealthReportsServing) {
  std::string bytes;
  grpc::Status status = HealthCheck(channel_, "", &bytes);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(bytes, kServing);
  status = HealthCheck(channel_, "dserve.v1.Dserve", &bytes);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(bytes, kServing);
  EXPECT_EQ(HealthCheck(channel_, "no.such.Service", &bytes).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// A drain starts with health alone: load balancers see NOT_SERVING while calls are still
// served, until Shutdown.
TEST_F(GrpcServiceTest, BeginDrainTurnsHealthNotServingButKeepsServing) {
  std::string bytes;
  ASSERT_TRUE(HealthCheck(channel_, "", &bytes).ok());
  ASSERT_EQ(bytes, kServing);
  server_->BeginDrain();
  server_->BeginDrain();  // idempotent
  for (const char* service : {"", "dserve.v1.Dserve"}) {
    SCOPED_TRACE(service);
    const grpc::Status status = HealthCheck(channel_, service, &bytes);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(bytes, kNotServing);
  }
  const StreamResult r = Generate(FixedLength("Still here", 2));
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(TotalTokens(r), 2);
}

// ServerReflectionInfo is a bidi stream; one list_services request (field 7, an empty string:
// bytes 3a 00) answers with the service names, which appear verbatim in the response bytes.
TEST_F(GrpcServiceTest, ReflectionListsTheServices) {
  grpc::GenericStub stub(channel_);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  grpc::CompletionQueue cq;
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  ASSERT_NE(call, nullptr);
  auto tag = [](intptr_t i) { return reinterpret_cast<void*>(i); };
  auto await = [&cq, &tag](intptr_t i) {
    void* got = nullptr;
    bool ok = false;
    return cq.Next(&got, &ok) && got == tag(i) && ok;
  };
  call->StartCall(tag(1));
  EXPECT_TRUE(await(1));
  const grpc::ByteBuffer request = ToByteBuffer(std::string("\x3a\x00", 2));
  call->Write(request, tag(2));
  EXPECT_TRUE(await(2));
  grpc::ByteBuffer response;
  call->Read(&response, tag(3));
  EXPECT_TRUE(await(3));
  call->WritesDone(tag(4));
  EXPECT_TRUE(await(4));
  grpc::Status status;
  call->Finish(&status, tag(5));
  EXPECT_TRUE(await(5));
  EXPECT_TRUE(status.ok()) << status.error_message();
  const std::string bytes = FromByteBuffer(response);
  EXPECT_NE(bytes.find("dserve.v1.Dserve"), std::string::npos);
  EXPECT_NE(bytes.find("grpc.health.v1.Health"), std::string::npos);
  cq.Shutdown();
  void* got = nullptr;
  bool ok = false;
  while (cq.Next(&got, &ok)) {
  }
}

TEST(GrpcServerTest, RefusesATakenPortAndBadOptions) {
  std::unique_ptr<GrpcServer> first = StartServer();
  ASSERT_NE(first, nullptr);
  GrpcServer::Options options;
  options.host = "127.0.0.1";
  options.port = first->port();
  EXPECT_FALSE(GrpcServer::Start(SharedEnv().service(), options).ok());
  options.port = 70000;
  EXPECT_EQ(GrpcServer::Start(SharedEnv().service(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.port = 0;
  options.max_pending_bytes = 0;
  EXPECT_EQ(GrpcServer::Start(SharedEnv().service(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  first->Shutdown(milliseconds(1000));
}

TEST(GrpcAuthTest, ApiKeyIsRequiredOnEveryDserveCallButNotHealth) {
  std::unique_ptr<GrpcServer> server = StartServer("s3cret");
  ASSERT_NE(server, nullptr);
  const std::shared_ptr<grpc::Channel> channel = ChannelTo(*server);
  const std::unique_ptr<v1::Dserve::Stub> stub = v1::Dserve::NewStub(channel);
  auto authorize = [](grpc::ClientContext& ctx, const std::string& authorization) {
    SetDeadline(ctx);
    if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
  };
  auto list_models = [&](const std::string& authorization) {
    grpc::ClientContext ctx;
    authorize(ctx, authorization);
    v1::ListModelsResponse response;
    return stub->ListModels(&ctx, v1::ListModelsRequest(), &response).error_code();
  };
  EXPECT_EQ(list_models(""), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(list_models("Bearer wrong"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(list_models("Bearer s3cret-and-more"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(list_models("s3cret"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(list_models("Bearer s3cret"), grpc::StatusCode::OK);

  auto generate = [&](const std::string& authorization) {
    grpc::ClientContext ctx;
    authorize(ctx, authorization);
    auto reader = stub->Generate(&ctx, FixedLength("Hi", 2));
    return Drain(*reader);
  };
  const StreamResult refused = generate("");
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(refused.messages.empty());
  const StreamResult accepted = generate("Bearer s3cret");
  EXPECT_TRUE(accepted.status.ok()) << accepted.status.error_message();
  EXPECT_EQ(TotalTokens(accepted), 2);

  {
    grpc::ClientContext ctx;
    authorize(ctx, "");
    v1::ChatRequest request;
    request.add_messages()->set_role("user");
    request.mutable_messages(0)->set_content("hi");
    auto reader = stub->Chat(&ctx, request);
    EXPECT_EQ(Drain(*reader).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    authorize(ctx, "");
    v1::TokenizeRequest request;
    request.set_text("hi");
    v1::TokenizeResponse response;
    EXPECT_EQ(stub->Tokenize(&ctx, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    authorize(ctx, "");
    v1::DetokenizeRequest request;
    request.add_token_ids(1);
    v1::DetokenizeResponse response;
    EXPECT_EQ(stub->Detokenize(&ctx, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }

  std::string bytes;
  const grpc::Status health = HealthCheck(channel, "", &bytes);
  EXPECT_TRUE(health.ok()) << health.error_message();
  EXPECT_EQ(bytes, kServing);
  server->Shutdown(milliseconds(1000));
}

}  // namespace
}  // namespace dserve::server
