// IncrementalDetokenizer: turns a stream of generated ids into text deltas for streaming.
// The deltas concatenate to exactly the full decode of the ids; no delta ends inside a UTF-8
// character (bytes that can never be valid become U+FFFD, as the full decode does); text that
// could still grow into a stop string is held back until it cannot.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace dserve::engine {

class IncrementalDetokenizer {
 public:
  struct Delta {
    std::string text;     // ready to send
    bool stopped = false;  // a stop string was completed; `text` ends right before it
    int stop_index = -1;   // which one
  };

  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens,
                         std::vector<std::string> stop_strings = {});

  // Adds one generated id. After a stop, further ids are ignored.
  Delta Add(int32_t id);
  // End of generation: releases what was held back (an unfinished UTF-8 sequence becomes
  // U+FFFD; a partial stop string is plain text after all).
  Delta Finish();

  // While disarmed, stop strings are neither matched nor held back (min_tokens: a request may
  // not stop before then); text emitted meanwhile is never part of a later match.
  void SetStopsArmed(bool armed) { stops_armed_ = armed; }
  // Everything emitted so far.
  const std::string& text() const { return emitted_; }

 private:
  // Decodes the complete part of pending_bytes_ and emits what cannot start a stop string.
  Delta Emit(bool final);

  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<std::string> stops_;
  std::string pending_bytes_;  // raw bytes not yet decoded (an unfinished UTF-8 sequence)
  std::string held_text_;      // decoded, held back as a possible stop-string start
  std::string emitted_;
  bool at_start_ = true;
  bool stopped_ = false;
  bool stops_armed_ = true;
};

}  // namespace dserve::engine
