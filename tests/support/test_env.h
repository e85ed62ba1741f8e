// Paths the tests share: the reference checkpoints in ../shared/testdata, the dserve binary,
// and a per-run scratch folder.
#pragma once

#include <string>

namespace dserve::testing {

// ../shared/testdata/<name>
std::string TestdataPath(const std::string& name);
// The dserve executable built with the tests.
std::string DserveBinary();
// A fresh folder under the system temp dir, removed at process exit.
std::string ScratchDir(const std::string& prefix);

// Runs a shell command; returns its exit status and fills *output with stdout+stderr.
int RunCommand(const std::string& command, std::string* output);

}  // namespace dserve::testing
