#pragma once
// regpin prefetch (through a running regpin), export and import (on a data folder).

namespace regpin::proxy::cli {

int prefetch_command(int argc, char** argv);
int export_command(int argc, char** argv);
int import_command(int argc, char** argv);

}  // namespace regpin::proxy::cli
