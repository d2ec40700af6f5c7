from __future__ import annotations

import io
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from base.audit import Actor
from base.staff import EnrollmentError, enroll_totp


class Command(BaseCommand):
    help = "Enroll a staff user's authenticator app (QR code in the terminal) and print backup codes once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--replace", action="store_true", help="replace an existing device (lost phone)")
        parser.add_argument("--backup-codes", type=int, default=10)
        parser.add_argument("--no-qr", action="store_true", help="print only the otpauth URL")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user named {options['username']!r}; create one with createsuperuser first")
        try:
            enrollment = enroll_totp(
                user, Actor.operator("enroll_totp"), replace=options["replace"], backup_codes=options["backup_codes"]
            )
        except EnrollmentError as exc:
            raise CommandError(str(exc)) from exc
        if not options["no_qr"]:
            import segno

            text = io.StringIO()
            segno.make(enrollment.otpauth_url).terminal(out=text, compact=True)
            self.stdout.write(text.getvalue())
        self.stdout.write(f"Scan the code above, or add this URL to an authenticator app:\n{enrollment.otpauth_url}")
        self.stdout.write("Backup codes (each works once; store them offline):")
        self.stdout.write(" ".join(enrollment.backup_codes))
