// The command line's definition: subcommands, options, help footers, version, unknown commands
// (see cli_app.h).

#include "cli/cli_app.h"

#include <cstdio>
#include <string_view>
#include <vector>

#include "cli/client_commands.h"
#include "cli/exit_codes.h"
#include "cli/version.h"

namespace bulkhead::cli {

namespace {

// The exit codes every client subcommand shares, for the footers.
constexpr std::string_view kClientExitCodes =
    "  0  ok\n"
    "  1  the job failed or the daemon answered with an error (printed on stderr)\n"
    "  2  bad usage (unknown option, missing argument)\n"
    "  3  the daemon cannot be reached\n";

std::string footer(std::string_view examples, std::string_view exitCodes) {
  return "\nExamples:\n" + std::string(examples) + "\nExit codes:\n" + std::string(exitCodes);
}

void addServeCommand(CommandLine& c) {
  c.serve = c.app.add_subcommand("serve", "run the supervisor daemon");
  c.serve->add_option("-c,--config", c.configPath, "config file (TOML, docs/config.md)")
      ->required();
  c.serve->add_option("--listen", c.listen, "override [server] listen (HOST:PORT or unix:PATH)");
  c.serve->add_option("--log-format", c.logFormat, "text (default) or json: one object per line");
  c.serve->add_option("--log-level", c.logLevel, "debug, info (default), warning or error");
  c.serve->add_flag("--stop-when-stdin-closes", c.stopWhenStdinCloses,
                    "drain and exit once stdin reaches end of file (a private daemon bound to "
                    "the process holding the other end of the pipe)");
  c.serve->footer(
      footer("  bulkhead serve -c /etc/bulkhead/bulkhead.toml\n"
             "  bulkhead serve -c bulkhead.toml --listen unix:/run/bulkhead.sock --log-format "
             "json\n",
             "  0  stopped after SIGTERM or SIGINT (jobs finished, workers stopped)\n"
             "  2  bad config (each error printed as FILE:LINE: KEY: MESSAGE), bad option,\n"
             "     cannot listen, or the journal cannot be opened\n"));
}

void addCheckCommand(CommandLine& c) {
  c.check = c.app.add_subcommand("check", "validate a config file (exit 2 if invalid)");
  c.check->add_option("-c,--config", c.configPath, "config file (TOML, docs/config.md)")
      ->required();
  c.check->add_flag("--import", c.imports,
                    "also import each pool's handler, preload and init with its python and "
                    "environment, in a throwaway process");
  c.check->footer(
      footer("  bulkhead check -c /etc/bulkhead/bulkhead.toml\n"
             "  bulkhead check --import -c bulkhead.toml\n",
             "  0  the config is valid (and, with --import, every entry point imports)\n"
             "  2  it is not: each problem printed as FILE:LINE: KEY: MESSAGE\n"));
}

void addCallCommand(CommandLine& c) {
  c.call = c.app.add_subcommand("call", "run one job and print its result or its outcome");
  c.call->add_option("pool", c.pool, "pool name")->required();
  c.call->add_option("payload", c.payload, "payload bytes, @file, or - for stdin");
  c.call->add_option("--url", c.url,
                     "supervisor URL (default $BULKHEAD_URL or http://127.0.0.1:8787)");
  c.call->add_option("--timeout", c.timeout, "job timeout, e.g. 5s");
  c.call->footer(
      footer("  bulkhead call faces @photo.jpg\n"
             "  echo '{\"text\": \"hi\"}' | bulkhead call embed - --timeout 5s\n"
             "  bulkhead call faces @photo.jpg --url unix:/run/bulkhead.sock\n",
             kClientExitCodes));
}

void addStatusCommand(CommandLine& c) {
  c.status = c.app.add_subcommand("status", "show pools and workers");
  c.status->add_option("--url", c.url,
                       "supervisor URL (default $BULKHEAD_URL or http://127.0.0.1:8787)");
  c.status->add_flag("--cluster", c.cluster,
                     "the nodes of the cluster ([cluster]) instead: address, pools, Redis state");
  c.status->footer(
      footer("  bulkhead status\n"
             "  bulkhead status --url http://10.0.0.5:8787\n"
             "  bulkhead status --cluster\n",
             "  0  printed\n"
             "  1  the daemon answered with an error\n"
             "  2  bad usage\n"
             "  3  the daemon cannot be reached\n"));
}

void addEnvCommand(CommandLine& c) {
  c.env = c.app.add_subcommand("env", "print the exact environment a pool's worker gets");
  c.env->add_option("pool", c.pool, "pool name")->required();
  c.env->add_option("-c,--config", c.configPath, "config file (TOML, docs/config.md)")->required();
  c.env->add_option("--slot", c.slot, "worker slot (GPU pinning depends on it)");
  c.env->footer(
      footer("  bulkhead env faces -c /etc/bulkhead/bulkhead.toml\n"
             "  bulkhead env faces -c bulkhead.toml --slot 1\n",
             "  0  printed: one KEY=VALUE per line, with where it came from\n"
             "  2  bad config, bad usage, or no such pool\n"));
}

void addEventsCommand(CommandLine& c) {
  c.events = c.app.add_subcommand("events", "follow worker and pool events as they happen");
  c.events->add_option("--url", c.url,
                       "supervisor URL (default $BULKHEAD_URL or http://127.0.0.1:8787)");
  c.events->add_option("--since", c.since, "replay kept events after this id (0: all kept)");
  c.events->footer(
      footer("  bulkhead events\n"
             "  bulkhead events --since 120 --url unix:/run/bulkhead.sock\n",
             "  0  the daemon ended the stream (it stopped)\n"
             "  2  bad usage\n"
             "  3  the daemon cannot be reached\n"));
}

void addVersionCommand(CommandLine& c) {
  c.version = c.app.add_subcommand("version", "print the version (as --version does)");
  c.version->footer(footer("  bulkhead version\n", "  0  printed\n"));
  c.app.set_version_flag("--version", versionText(), "print the version and exit");
}

void addManCommand(CommandLine& c) {
  c.man = c.app.add_subcommand("man", "print the man page (roff) built from this help");
  c.man->group("");  // hidden: the build writes bulkhead.1 with it
}

void addRunFooter(CommandLine& c) {
  CLI::App* run = c.app.get_subcommand("run");
  run->footer(
      footer("  bulkhead run --steps 1-3 --memory 8GiB --state runs/cv -- python3 train.py --fold "
             "{step}\n"
             "  bulkhead run --steps a,b --timeout 2h --retries 1 --json -- ./step.sh {step}\n",
             "  0    every step ended ok (in this run or, with --state, an earlier one)\n"
             "  1    some step did not end ok\n"
             "  2    bad usage: unknown option, bad --steps, size or duration, command not found\n"
             "  3    the state directory is unusable, or another bulkhead run holds it\n"
             "  130  interrupted by SIGINT: running steps were stopped and recorded cancelled\n"
             "  143  interrupted by SIGTERM: as above\n"));
}

// The names of the subcommands a user may type, in definition order (the hidden `man` left out).
std::vector<std::string> visibleCommands(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands({})) {
    if (!sub->get_group().empty()) names.push_back(sub->get_name());
  }
  return names;
}

bool isCommand(const CLI::App& app, const std::string& word) {
  for (const CLI::App* sub : app.get_subcommands({})) {
    if (sub->get_name() == word) return true;
  }
  return false;
}

int refuseCommand(const CLI::App& app, const std::string& problem) {
  std::string list;
  for (const auto& name : visibleCommands(app)) list += (list.empty() ? "" : ", ") + name;
  std::fprintf(stderr,
               "bulkhead: %s\n"
               "commands: %s\n"
               "`bulkhead --help` says what each does, `bulkhead COMMAND --help` how to use it\n",
               problem.c_str(), list.c_str());
  return kExitBadConfig;
}

}  // namespace

void defineCommands(CommandLine& c) {
  c.url = defaultUrl();
  c.app.require_subcommand(1);
  addServeCommand(c);
  addCheckCommand(c);
  addCallCommand(c);
  addStatusCommand(c);
  addEnvCommand(c);
  addEventsCommand(c);
  c.run = addRunCommand(c.app);
  addRunFooter(c);
  c.top = addTopCommand(c.app);
  addVersionCommand(c);
  addManCommand(c);
  c.app.footer(
      "\n`bulkhead COMMAND --help` shows a command's options, examples and exit codes.\n"
      "\nExit codes (every command but run, whose --help lists its own):\n"
      "  0  ok\n"
      "  1  the job failed or the daemon answered with an error (printed on stderr)\n"
      "  2  bad config, or bad usage (unknown command or option, missing argument)\n"
      "  3  the daemon cannot be reached\n"
      "\nEnvironment: BULKHEAD_URL (default URL of call, status, events), BULKHEAD_SDK_DIR\n"
      "(where workers import the bulkhead SDK from).\n");
}

std::optional<int> parseCommandLine(CommandLine& c, int argc, char** argv) {
  if (argc < 2) return refuseCommand(c.app, "no command given");
  std::string first = argv[1];
  if (!first.empty() && first[0] != '-' && !isCommand(c.app, first)) {
    return refuseCommand(c.app, "unknown command '" + first + "'");
  }
  argc = cutRunCommand(argc, argv, *c.run);
  try {
    c.app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return c.app.exit(e) == 0 ? kExitOk : kExitBadConfig;
  }
  return std::nullopt;
}

}  // namespace bulkhead::cli
