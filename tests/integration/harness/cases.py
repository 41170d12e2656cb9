"""unittest support: `LogsOnFailure`, a TestCase that shows regpin's log tail when a test fails."""

from __future__ import annotations

import sys
import unittest

from .process import tail


class LogsOnFailure(unittest.TestCase):
    """A TestCase that prints the tail of regpin's log (and anything else failure_report()
    adds) when a test fails or errors, so a CI log shows why."""

    def failure_report(self) -> list[tuple[str, str]]:
        """(title, text) pairs to print on failure; by default the tail of self.regpin's log."""
        regpin = getattr(self, "regpin", None)
        if regpin is None:
            return []
        return [(f"regpin log ({regpin.log_path}), last lines", tail(regpin.log_path, 4000))]

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        outcome = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            for title, text in self.failure_report():
                sys.stderr.write(f"\n--- {title}, for {self.id()} ---\n{text}\n--- end ---\n")
        return outcome
