#include "engine/tokenizer/added_tokens.h"

#include <algorithm>

#include "core/check.h"
#include "core/utf8.h"

namespace dserve::engine {
namespace {

// Rust's char::is_whitespace: the White_Space property.
bool IsWhiteSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Start of the character that ends at `end` (valid UTF-8 assumed).
size_t PrevCharStart(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

}  // namespace

// A byte trie over token contents; each node remembers the token ending there.
class AddedTokenMatcher::Trie {
 public:
  void Add(std::string_view content, int index) {
    int node = 0;
    for (unsigned char c : content) {
      auto& kids = nodes_[node].children;
      auto it = std::find_if(kids.begin(), kids.end(), [&](auto& k) { return k.first == c; });
      if (it == kids.end()) {
        nodes_.push_back({});
        // `kids` may dangle after push_back; index through nodes_ again.
        nodes_[node].children.push_back({c, static_cast<int>(nodes_.size() - 1)});
        node = static_cast<int>(nodes_.size() - 1);
      } else {
        node = it->second;
      }
    }
    if (!content.empty()) nodes_[node].token = index;
    if (!content.empty()) first_byte_[static_cast<unsigned char>(content[0])] = true;
  }

  // Longest token starting at text[i]: its index into tokens_ and its length, or -1.
  int LongestAt(std::string_view text, size_t i, size_t* length) const {
    if (!first_byte_[static_cast<unsigned char>(text[i])]) return -1;
    int node = 0, best = -1;
    for (size_t j = i; j < text.size(); ++j) {
      const auto& kids = nodes_[node].children;
      const unsigned char c = static_cast<unsigned char>(text[j]);
      auto it = std::find_if(kids.begin(), kids.end(), [&](auto& k) { return k.first == c; });
      if (it == kids.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        *length = j + 1 - i;
      }
    }
    return best;
  }

  bool empty() const { return nodes_.size() == 1; }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> children;
    int token = -1;
  };
  std::vector<Node> nodes_ = {Node{}};
  bool first_byte_[256] = {};
};

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens)
    : tokens_(tokens), raw_(std::make_unique<Trie>()), normalized_(std::make_unique<Trie>()) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    (tokens_[i].normalized ? *normalized_ : *raw_).Add(tokens_[i].content, static_cast<int>(i));
  }
  auto word = Regex::Compile("[\\p{L}\\p{N}]");
  DSERVE_CHECK(word.ok()) << word.status();
  word_char_ = std::move(word).value();
}

AddedTokenMatcher::~AddedTokenMatcher() = default;

std::vector<Segment> AddedTokenMatcher::Split(std::string_view text) const {
  std::vector<Segment> segments;
  if (!text.empty()) segments.push_back({{0, text.size()}, -1});
  SplitWith(*raw_, text, &segments);
  SplitWith(*normalized_, text, &segments);
  return segments;
}

void AddedTokenMatcher::SplitWith(const Trie& trie, std::string_view text,
                                  std::vector<Segment>* segments) const {
  if (trie.empty()) return;
  auto is_word = [&](size_t begin, size_t end) {
    std::vector<Span> m;
    word_char_->FindAll(text, {begin, end}, &m);
    return !m.empty();
  };
  std::vector<Segment> out;
  for (const Segment& seg : *segments) {
    if (seg.token >= 0) {
      out.push_back(seg);
      continue;
    }
    size_t pos = seg.span.begin;  // start of text not yet emitted
    for (size_t i = seg.span.begin; i < seg.span.end;) {
      size_t length = 0;
      const int t = trie.LongestAt(text.substr(0, seg.span.end), i, &length);
      if (t < 0) {
        ++i;
        continue;
      }
      const AddedToken& token = tokens_[t];
      size_t begin = i, end = i + length;
      if (token.single_word) {
        const bool word_before = begin > seg.span.begin &&
                                 is_word(PrevCharStart(text, begin), begin);
        const int n = end < seg.span.end ? std::max(1, ValidSequenceLength(text, end)) : 0;
        const bool word_after = n > 0 && is_word(end, end + n);
        if (word_before || word_after) {
          ++i;
          continue;
        }
      }
      if (token.lstrip) {
        while (begin > pos) {
          const size_t prev = PrevCharStart(text, begin);
          if (!IsWhiteSpace(DecodeCodePoint(text, prev, static_cast<int>(begin - prev)))) break;
          begin = prev;
        }
      }
      if (token.rstrip) {
        while (end < seg.span.end) {
          const int n = ValidSequenceLength(text, end);
          if (n == 0 || !IsWhiteSpace(DecodeCodePoint(text, end, n))) break;
          end += n;
        }
      }
      if (begin > pos) out.push_back({{pos, begin}, -1});
      out.push_back({{begin, end}, token.id});
      pos = i = end;
    }
    if (pos < seg.span.end) out.push_back({{pos, seg.span.end}, -1});
  }
  segments->swap(out);
}

}  // namespace dserve::engine
