#pragma once
// One way to read the command line, for every subcommand: CLI11 (Debian's libcli11-dev,
// header-only). Consistent --help, errors that name the option, exit status 2 on a usage error.
//
//   CLI::App app{"Lists pins", "regpin pins list"};
//   app.add_option("--registry", registry, "only this registry");
//   if (auto exit = cli::parse(app, argc, argv)) return *exit;

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

namespace regpin::proxy::cli {

// Parses argv[0..argc) (the words after the subcommand's name). nullopt when the command should
// run; else the exit status: 0 after printing --help, 2 after a usage error (printed on stderr
// with a pointer to --help).
std::optional<int> parse(CLI::App& app, int argc, char** argv);

// A usage error found after parsing (a rule CLI11 cannot express): printed like parse's, 2.
int usage_error(const CLI::App& app, const std::string& message);

}  // namespace regpin::proxy::cli
