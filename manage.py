#!/usr/bin/env python
"""Django's command-line utility for the MOAI service."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moai_site.settings")
    if sys.argv[1:2] != ["runserver"]:
        # An operator reading a command's output sees only what the command says: the service's
        # INFO lines (an audit head after each write, "sessions ended") belong to the long-running
        # processes' log streams, where beat also publishes the audit head every minute.
        os.environ.setdefault("MOAI_LOG_LEVEL", "WARNING")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
