#pragma once
// The man page, bulkhead(1), written from the same CLI11 definition as `--help` (cli_app.h): the
// description, every visible subcommand with its options, positionals and footer (examples and
// exit codes), and the top-level footer. The build writes it to build/bulkhead.1 by running the
// hidden `bulkhead man`.

#include <CLI/CLI.hpp>
#include <string>

namespace bulkhead::cli {

// roff for man(7); `version` goes into the page's header.
std::string manPage(const CLI::App& app, const std::string& version);

}  // namespace bulkhead::cli
