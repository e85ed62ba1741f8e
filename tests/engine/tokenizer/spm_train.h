// Trains a tiny SentencePiece model for the tests (Debian's trainer header clashes with real
// Abseil, so spm_train.cc includes nothing else).
#pragma once

#include <string>

namespace dserve::testing {

// Writes prefix + ".model" from the lines of `corpus`; returns "" or the trainer's error.
std::string TrainSentencePiece(const std::string& corpus_path, const std::string& prefix,
                               int vocab_size);

}  // namespace dserve::testing
