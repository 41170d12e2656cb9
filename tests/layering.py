#!/usr/bin/env python3
"""Checks that every #include "..." of regpin's sources points one way (proxy/README.md,
"Layering"): a module includes itself and the modules this table allows, nothing else.
Run by ctest (test `layering`); exits 1 listing each include that goes the wrong way."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> the modules it may include (besides itself). A module is a top-level folder
# (config, storage) or a folder of proxy/; proxy/app.* and proxy/main.cpp are their own.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "storage": {"config"},
    "oci": {"config", "storage"},
    "http": {"config"},
    "upstream": {"config", "storage", "oci", "http"},
    "store": {"config", "storage"},
    "etcd": {"config", "storage", "http"},
    "cache": {"config", "storage", "oci", "http", "upstream", "store"},
    "pins": {"config", "storage", "oci", "http", "upstream", "store", "cache"},
    "registry": {"config", "storage", "oci", "http", "upstream", "store", "cache", "pins"},
    "console": {"config"},
    "admin": {"config", "storage", "oci", "http", "upstream", "store", "cache", "pins",
              "registry", "console"},
    "admission": {"config", "storage", "oci", "http", "upstream", "store", "cache", "pins",
                  "registry"},
    "bundle": {"config", "storage", "oci", "pins"},
    "cli": {"config", "storage", "oci", "http", "bundle", "etcd", "pins"},
    "app": {"config", "storage", "oci", "http", "upstream", "store", "cache", "pins",
            "registry", "admin", "admission", "etcd"},
    "main": {"config", "storage", "app", "cli"},
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def module_of(path: str) -> str | None:
    parts = Path(path).parts
    if not parts:
        return None
    if parts[0] in ("config", "storage"):
        return parts[0]
    if parts[0] != "proxy" or len(parts) < 2:
        return None
    if len(parts) == 2:  # proxy/app.cpp, proxy/main.cpp
        return "main" if parts[1] == "main.cpp" else Path(parts[1]).stem
    return parts[1]


def main() -> int:
    wrong: list[str] = []
    unknown: set[str] = set()
    for source in sorted(list(ROOT.glob("config/*.[ch]pp")) + list(ROOT.glob("storage/*.[ch]pp")) +
                         list(ROOT.glob("proxy/**/*.[ch]pp"))):
        rel = source.relative_to(ROOT).as_posix()
        mod = module_of(rel)
        if mod not in ALLOWED:
            unknown.add(rel)
            continue
        for target in INCLUDE.findall(source.read_text()):
            dep = module_of(target)
            if dep is None or dep == mod:
                continue
            if dep not in ALLOWED[mod]:
                wrong.append(f"{rel}: includes {target} ({mod} -> {dep} is not allowed)")
    for rel in sorted(unknown):
        wrong.append(f"{rel}: in no module of the table (tests/layering.py)")
    for line in wrong:
        print(line)
    if wrong:
        return 1
    print("layering: every include points one way")
    return 0


if __name__ == "__main__":
    sys.exit(main())
