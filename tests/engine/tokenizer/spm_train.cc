#include "tests/engine/tokenizer/spm_train.h"

#include <sentencepiece_trainer.h>

namespace dserve::testing {

std::string TrainSentencePiece(const std::string& corpus_path, const std::string& prefix,
                               int vocab_size) {
  const std::string args = "--input=" + corpus_path + " --model_prefix=" + prefix +
                           " --vocab_size=" + std::to_string(vocab_size) +
                           " --model_type=bpe --byte_fallback=true --character_coverage=1.0"
                           " --minloglevel=2";
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  return status.ok() ? std::string() : status.ToString();
}

}  // namespace dserve::testing
