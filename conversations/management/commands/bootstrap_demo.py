"""First-start setup for `make run`: the demo knowledge base and, in DEBUG, demo accounts."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from knowledge.demo import load_demo_knowledge_base

DEMO_ACCOUNTS = [
    # (username, password, is_staff, first name, last name): people are shown by their full name
    ("customer", "customer-demo-pass", False, "Chris", "Miller"),
    ("staff", "staff-demo-pass", True, "Sam", "Taylor"),
]


class Command(BaseCommand):
    help = "Load the demo knowledge base on first start and (DEBUG only) create demo accounts."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="the URL printed for people to open")

    def handle(self, *args, url: str, **options):
        kb, results = load_demo_knowledge_base()
        if results:
            failed = [r for r in results if r.error]
            self.stdout.write(f"Loaded the demo knowledge base '{kb.name}': {len(results) - len(failed)} documents.")
            for result in failed:
                self.stderr.write(f"  FAILED {result.path}: {result.error}")
        else:
            self.stdout.write(f"Knowledge base '{kb.name}' already loaded ({kb.documents.count()} documents).")

        if not settings.DEBUG:
            self.stdout.write(f"Serving on {url}")
            return
        User = get_user_model()
        lines = []
        for username, password, is_staff, first_name, last_name in DEMO_ACCOUNTS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": is_staff, "is_superuser": is_staff}
            )
            if created:
                user.set_password(password)
            if created or not user.get_full_name():  # demo accounts made before they had names get them too
                user.first_name, user.last_name = first_name, last_name
                user.save()
            lines.append(f"  {'staff   ' if is_staff else 'customer'}  {username} / {password}")
        self.stdout.write(
            "\nDemo accounts (DEBUG only):\n" + "\n".join(lines) + f"\n\nOpen {url}  (admin: {url}admin/)\n"
        )
