#pragma once
// The operator's subcommands, all through the admin API of a running regpin:
//   regpin pins list|show|approve|unpin|set|check ...
//   regpin events [--since TIME] [--after ID] [--follow]
//   regpin cache
//   regpin backup DIR
//   regpin verify [--data DIR]
//   regpin resolve [FILE...] [--lock FILE] [--check] [--data DIR]
// Human-readable tables by default, --json for scripts. Exit status 0 on success, 1 when the
// API refused or failed (the message says why), 2 on a usage error.

namespace regpin::proxy::cli {

int pins_command(int argc, char** argv);
int events_command(int argc, char** argv);
int cache_command(int argc, char** argv);
// regpin audit: who pulled which digest (GET /api/v1/audit).
int audit_command(int argc, char** argv);
int backup_command(int argc, char** argv);
int verify_command(int argc, char** argv);
// regpin resolve: Kubernetes YAML with each image's tag pinned to its digest (resolve_command.cpp).
int resolve_command(int argc, char** argv);

}  // namespace regpin::proxy::cli
