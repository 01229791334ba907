#pragma once
// The command line's definition: every subcommand, its options, its help text with examples and
// exit codes (CLI11 footers), `--version`, and the refusal of an unknown command. `bulkhead
// --help`, `bulkhead COMMAND --help` and the man page (cli/man_page.h) all come from this one
// definition. main.cc parses with it and runs what was chosen.
//
// Adding a subcommand: a `CLI::App*` member below, its options' values beside it, an
// `add...Command` in cli_app.cc called from defineCommands, and a line in main()'s dispatch.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "cli/run_command.h"
#include "cli/top_command.h"

namespace bulkhead::cli {

struct CommandLine {
  CLI::App app{"bulkhead: warm, isolated, supervised workers for crash-prone ML code"};

  // Option values, shared by the subcommands that take them.
  std::string configPath, listen, url, pool, payload, timeout;
  std::string logFormat = "text", logLevel = "info";
  bool stopWhenStdinCloses = false, imports = false;
  bool cluster = false;  // status --cluster
  int slot = 0;
  std::uint64_t since = 0;

  // The subcommands; after parsing, `*serve` is true when `serve` was chosen.
  CLI::App* serve = nullptr;
  CLI::App* check = nullptr;
  CLI::App* call = nullptr;
  CLI::App* status = nullptr;
  CLI::App* env = nullptr;
  CLI::App* events = nullptr;
  CLI::App* version = nullptr;
  CLI::App* man = nullptr;  // hidden: prints the man page
  std::shared_ptr<RunCommand> run;
  std::shared_ptr<TopCommand> top;
};

// Defines every subcommand of `line.app`.
void defineCommands(CommandLine& line);

// Parses argv into `line`. Returns an exit code when the process is to end here (help or version
// printed: 0; unknown command or bad usage: 2), nothing when a subcommand is to run.
std::optional<int> parseCommandLine(CommandLine& line, int argc, char** argv);

}  // namespace bulkhead::cli
