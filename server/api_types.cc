#include "server/api_types.h"

#include <string>
#include <utility>

namespace dserve::server {
namespace {

ApiError Make(int status, std::string message, std::string type, std::string param,
              std::string code) {
  ApiError error;
  error.http_status = status;
  error.message = std::move(message);
  error.type = std::move(type);
  error.param = std::move(param);
  error.code = std::move(code);
  return error;
}

}  // namespace

ApiError ApiError::BadRequest(std::string message, std::string param) {
  return Make(400, std::move(message), "invalid_request_error", std::move(param), "");
}

// OpenAI reports an unknown model as an invalid request with a dedicated code, which SDKs
// match on.
ApiError ApiError::NotFound(std::string message, std::string param) {
  return Make(404, std::move(message), "invalid_request_error", std::move(param),
              "model_not_found");
}

ApiError ApiError::Unauthorized(std::string message) {
  return Make(401, std::move(message), "authentication_error", "", "invalid_api_key");
}

ApiError ApiError::TooLarge(std::string message) {
  return Make(413, std::move(message), "invalid_request_error", "", "");
}

// OpenAI's shape for 429s; clients retry with backoff on the code.
ApiError ApiError::TooManyRequests(std::string message) {
  return Make(429, std::move(message), "requests", "", "rate_limit_exceeded");
}

ApiError ApiError::Internal(std::string message) {
  return Make(500, std::move(message), "internal_error", "", "");
}

ApiError ApiError::Unavailable(std::string message) {
  return Make(503, std::move(message), "service_unavailable", "", "");
}

nlohmann::json ApiError::ToJson() const {
  nlohmann::json inner = nlohmann::json::object();
  inner["message"] = message;
  inner["type"] = type;
  inner["param"] = param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param);
  inner["code"] = code.empty() ? nlohmann::json(nullptr) : nlohmann::json(code);
  return nlohmann::json{{"error", std::move(inner)}};
}

}  // namespace dserve::server
