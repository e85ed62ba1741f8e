#include "engine/tokenizer/bpe_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/tokenizer/byte_level.h"
#include "core/utf8.h"
#include "nlohmann/json.hpp"

namespace dserve::engine {
namespace {

using Json = nlohmann::json;

// Only identity normalizers are accepted: anything else would change the text before BPE.
absl::Status CheckNormalizer(const Json& n) {
  if (n.is_null()) return absl::OkStatus();
  if (n.value("type", "") == "Sequence" && n.contains("normalizers") &&
      n["normalizers"].is_array() && n["normalizers"].empty()) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json normalizer '",
                                                 n.value("type", std::string("?")),
                                                 "' is not supported"));
}

absl::Status CheckDecoder(const Json& d) {
  if (d.is_null() || d.value("type", "") == "ByteLevel") return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json decoder '",
                                                 d.value("type", std::string("?")),
                                                 "' is not supported (expected ByteLevel)"));
}

// TemplateProcessing's "single" template: special tokens before and after the text.
void ReadTemplate(const Json& pp, const std::function<int32_t(const std::string&)>& id_of,
                  std::vector<int32_t>* prefix, std::vector<int32_t>* suffix) {
  if (pp.is_null() || pp.value("type", "") != "TemplateProcessing" || !pp.contains("single")) {
    return;
  }
  bool after = false;
  for (const Json& item : pp["single"]) {
    if (item.contains("Sequence")) {
      after = true;
    } else if (item.contains("SpecialToken")) {
      const int32_t id = id_of(item["SpecialToken"].value("id", std::string()));
      if (id >= 0) (after ? suffix : prefix)->push_back(id);
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(
    const std::string& tokenizer_json, const TokenizerConfig& config) {
  const Json j = Json::parse(tokenizer_json, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("model")) {
    return absl::InvalidArgumentError("tokenizer.json is not a JSON object with a \"model\"");
  }
  auto t = std::unique_ptr<BpeTokenizer>(new BpeTokenizer());
  DSERVE_RETURN_IF_ERROR(CheckNormalizer(j.value("normalizer", Json())));
  DSERVE_RETURN_IF_ERROR(CheckDecoder(j.value("decoder", Json())));
  DSERVE_ASSIGN_OR_RETURN(t->model_, BpeModel::Create(j["model"]));
  DSERVE_ASSIGN_OR_RETURN(t->pre_tokenizer_, PreTokenizer::Create(j.value("pre_tokenizer", Json())));

  std::vector<AddedToken> added;
  for (const Json& a : j.value("added_tokens", Json::array())) {
    AddedToken token;
    token.id = a.value("id", -1);
    token.content = a.value("content", std::string());
    token.special = a.value("special", false);
    token.lstrip = a.value("lstrip", false);
    token.rstrip = a.value("rstrip", false);
    token.single_word = a.value("single_word", false);
    token.normalized = a.value("normalized", !token.special);
    if (token.id < 0 || token.content.empty()) {
      return absl::InvalidArgumentError("tokenizer.json has an added token without id or content");
    }
    added.push_back(token);
  }

  int32_t size = t->model_->vocab_size();
  for (const AddedToken& a : added) size = std::max(size, a.id + 1);
  t->bytes_.resize(size);
  t->special_.assign(size, false);
  for (int32_t id = 0; id < t->model_->vocab_size(); ++id) {
    const std::string& token = t->model_->token(id);
    if (!ByteLevelToBytes(token, &t->bytes_[id])) t->bytes_[id] = token;
  }
  for (const AddedToken& a : added) {
    // As Hugging Face's ByteLevel decoder: a token spelled in the byte alphabet decodes to
    // those bytes, any other (e.g. "<｜User｜>") to its own text.
    std::string raw;
    t->bytes_[a.id] = ByteLevelToBytes(a.content, &raw) ? raw : a.content;
    t->special_[a.id] = a.special;
  }
  t->added_ = std::make_unique<AddedTokenMatcher>(added);

  auto id_of = [&](const std::string& content) -> int32_t {
    for (const AddedToken& a : added) {
      if (a.content == content) return a.id;
    }
    return t->model_->Find(content);
  };
  if (!config.bos_token.empty()) t->bos_id_ = id_of(config.bos_token);
  if (!config.eos_token.empty()) t->eos_id_ = id_of(config.eos_token);
  if (config.has_add_flags) {
    if (config.add_bos_token && t->bos_id_ >= 0) t->prefix_.push_back(t->bos_id_);
    if (config.add_eos_token && t->eos_id_ >= 0) t->suffix_.push_back(t->eos_id_);
  } else {
    ReadTemplate(j.value("post_processor", Json()), id_of, &t->prefix_, &t->suffix_);
  }
  return t;
}

void BpeTokenizer::EncodeText(std::string_view text, std::vector<int32_t>* ids) const {
  std::vector<Span> pieces;
  std::string prefixed;
  if (pre_tokenizer_->add_prefix_space() && !text.starts_with(' ')) {
    prefixed = absl::StrCat(" ", std::string(text));
    text = prefixed;
  }
  pre_tokenizer_->Split(text, {0, text.size()}, &pieces);
  for (const Span& p : pieces) model_->Encode(text.substr(p.begin, p.end - p.begin), ids);
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::Encode(std::string_view text,
                                                          bool add_special_tokens) const {
  if (const size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is not valid UTF-8 (byte ", bad, " of ", text.size(), ")"));
  }
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = prefix_;
  for (const Segment& s : added_->Split(text)) {
    if (s.token >= 0) {
      ids.push_back(s.token);
    } else {
      EncodeText(text.substr(s.span.begin, s.span.end - s.span.begin), &ids);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

absl::StatusOr<std::string> BpeTokenizer::Decode(const std::vector<int32_t>& ids,
                                                 bool skip_special_tokens) const {
  std::string raw;
  for (int32_t id : ids) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is negative"));
    if (skip_special_tokens && IsSpecial(id)) continue;
    raw += TokenBytes(id);
  }
  std::string text;
  AppendUtf8Lossy(raw, &text);
  return text;
}

std::string_view BpeTokenizer::TokenBytes(int32_t id) const {
  // Ids without a token (a model's padded vocabulary) decode to nothing, as in Hugging Face.
  return id >= 0 && id < vocab_size() ? std::string_view(bytes_[id]) : std::string_view();
}

bool BpeTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && special_[id];
}

}  // namespace dserve::engine
