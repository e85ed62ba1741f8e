// The `dserve` subcommands. Each takes its arguments (after the subcommand name) and returns
// the process exit code: 0 on success, 2 on a usage error, 1 when the work itself failed.
#pragma once

#include <string>
#include <vector>

namespace dserve::cli {

using Args = std::vector<std::string>;

int RunMakeModel(const Args& args);
int RunLogits(const Args& args);
int RunGenerate(const Args& args);
int RunInspect(const Args& args);
int RunBench(const Args& args);
int RunTokenize(const Args& args);
int RunDetokenize(const Args& args);
int RunBenchTokenizer(const Args& args);
int RunChatTemplate(const Args& args);
int RunServe(const Args& args);
int RunBenchServe(const Args& args);

}  // namespace dserve::cli
