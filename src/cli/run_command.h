#pragma once
// `bulkhead run`: the command-line side (options, their validation, exit 2 on bad usage). The
// step runner itself is src/run/step_runner.h; docs/run.md documents the command.

#include <CLI/CLI.hpp>
#include <memory>

namespace bulkhead::cli {

struct RunCommand;

// Adds the `run` subcommand to app; the returned handle keeps its option values.
std::shared_ptr<RunCommand> addRunCommand(CLI::App& app);
// Takes what follows the first "--" of `bulkhead run ...` as the command; returns the argc CLI11
// is to parse (argv up to that "--").
int cutRunCommand(int argc, char** argv, RunCommand& command);
// True when `run` was the chosen subcommand.
bool runChosen(const RunCommand& command);
// Validates the options and runs the steps; returns the process exit code.
int executeRun(const RunCommand& command);

}  // namespace bulkhead::cli
