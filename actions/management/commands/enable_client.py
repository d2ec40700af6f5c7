from __future__ import annotations

from actions.management.commands.disable_client import Command as DisableCommand


class Command(DisableCommand):
    help = "Enable a disabled API client again (its old sessions stay ended)."

    enable = True
