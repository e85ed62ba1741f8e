#include "engine/tokenizer/incremental_detokenizer.h"

#include <algorithm>

#include "core/utf8.h"

namespace dserve::engine {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer,
                                               bool skip_special_tokens,
                                               std::vector<std::string> stop_strings)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens), stops_(std::move(stop_strings)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

IncrementalDetokenizer::Delta IncrementalDetokenizer::Add(int32_t id) {
  if (stopped_) return {};
  if (!(skip_special_ && tokenizer_.IsSpecial(id))) {
    std::string_view bytes = tokenizer_.TokenBytes(id);
    if (at_start_ && !bytes.empty()) {
      if (tokenizer_.strips_leading_space() && bytes.front() == ' ') bytes.remove_prefix(1);
      at_start_ = false;
    }
    pending_bytes_.append(bytes);
  }
  return Emit(/*final=*/false);
}

IncrementalDetokenizer::Delta IncrementalDetokenizer::Finish() {
  if (stopped_) return {};
  return Emit(/*final=*/true);
}

IncrementalDetokenizer::Delta IncrementalDetokenizer::Emit(bool final) {
  // Decode all but an unfinished UTF-8 sequence at the end: lossy decoding of the rest is
  // then exactly what decoding everything at once gives for those bytes.
  const size_t keep = final ? 0 : IncompleteTailLength(pending_bytes_);
  AppendUtf8Lossy(std::string_view(pending_bytes_).substr(0, pending_bytes_.size() - keep),
                  &held_text_);
  pending_bytes_.erase(0, pending_bytes_.size() - keep);

  Delta d;
  // The earliest completed stop string ends the stream right before it.
  size_t stop_at = std::string::npos;
  const std::vector<std::string> no_stops;
  const std::vector<std::string>& stops = stops_armed_ ? stops_ : no_stops;
  for (size_t i = 0; i < stops.size(); ++i) {
    const size_t at = held_text_.find(stops[i]);
    if (at < stop_at) {
      stop_at = at;
      d.stop_index = static_cast<int>(i);
    }
  }
  if (stop_at != std::string::npos) {
    d.text = held_text_.substr(0, stop_at);
    d.stopped = stopped_ = true;
    held_text_.clear();
    pending_bytes_.clear();
  } else {
    // Hold back the longest tail that is a proper prefix of some stop string.
    size_t hold = 0;
    if (!final) {
      for (const std::string& s : stops) {
        for (size_t n = std::min(s.size() - 1, held_text_.size()); n > hold; --n) {
          if (held_text_.compare(held_text_.size() - n, n, s, 0, n) == 0) {
            hold = n;
            break;
          }
        }
      }
    }
    d.text = held_text_.substr(0, held_text_.size() - hold);
    held_text_.erase(0, held_text_.size() - hold);
  }
  emitted_ += d.text;
  return d;
}

}  // namespace dserve::engine
