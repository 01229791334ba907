#pragma once
// `bulkhead top`: the command-line side and the terminal (options, the refresh loop, raw input,
// the alternate screen and its restoration). The picture itself is cli/top_view.h; docs/top.md
// documents the command.

#include <CLI/CLI.hpp>
#include <memory>

namespace bulkhead::cli {

struct TopCommand;

// Adds the `top` subcommand to app; the returned handle keeps its option values.
std::shared_ptr<TopCommand> addTopCommand(CLI::App& app);
// True when `top` was the chosen subcommand.
bool topChosen(const TopCommand& command);
// Shows the live view (or one plain frame) and returns the process exit code.
int executeTop(const TopCommand& command);

}  // namespace bulkhead::cli
