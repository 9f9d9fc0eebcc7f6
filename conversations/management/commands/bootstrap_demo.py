"""First-start setup for `make run`: the demo knowledge base and, in DEBUG, demo accounts and the demo tools."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from conversations import demo_host
from conversations.models import Site
from knowledge.demo import load_demo_knowledge_base
from knowledge.models import KnowledgeBase, Tool
from knowledge.tools import demo_api

DEMO_ACCOUNTS = [
    # (username, password, is_staff, first name, last name): people are shown by their full name
    ("customer", "customer-demo-pass", False, "Chris", "Miller"),
    ("customer2", "customer2-demo-pass", False, "Alex", "Weber"),
    ("staff", "staff-demo-pass", True, "Sam", "Taylor"),
]
#: The e-mail the demo order API knows each demo customer by (the signed identity carries it).
DEMO_EMAILS = {customer.username: customer.email for customer in demo_api.CUSTOMERS}


class Command(BaseCommand):
    help = "Load the demo knowledge base on first start and (DEBUG only) create demo accounts and demo tools."

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
            email = DEMO_EMAILS.get(username, "")
            # Demo accounts made before they had names or e-mails get them too (the demo API knows them by e-mail).
            if created or not user.get_full_name() or (email and not user.email):
                user.first_name = user.first_name or first_name
                user.last_name = user.last_name or last_name
                user.email = user.email or email
                user.save()
            orders = ", ".join(order.number for c in demo_api.CUSTOMERS if c.username == username for order in c.orders)
            role = "staff   " if is_staff else "customer"
            lines.append(f"  {role}  {username} / {password}" + (f"   orders {orders}" if orders else ""))
        tools = self.demo_tools(kb)
        site = self.demo_site(kb)
        self.stdout.write(
            "\nDemo accounts (DEBUG only):\n" + "\n".join(lines)
            + f"\n\nDemo tools: {', '.join(tools)}, calling the demo order API at {settings.DEMO_API_URL}"
            + f"\n\nOpen {url}  (admin: {url}admin/)"
            + f"\nThe chat widget on a demo company site (site '{site.slug}'): {settings.DEMO_HOST_URL}/"
            + f"  (signed in as Chris Miller: {settings.DEMO_HOST_URL}/account/)\n"
        )  # fmt: skip

    def demo_site(self, kb: KnowledgeBase) -> Site:
        """Create or update the widget's demo site: embedded on the demo host (``DEMO_HOST_URL``,
        conversations/demo_host.py), answering from ``kb`` with its tools, verifying the demo host's customer with
        the secret they share (``DEMO_SITE_SECRET``)."""
        site = Site.objects.filter(slug="demo").first() or Site(slug="demo")
        site.name = "Northwind Outfitters"
        site.allowed_origins = settings.DEMO_HOST_URL
        site.identity_secret = demo_host.default_secret()
        site.greeting = {"en": "Hi! Ask about orders, delivery or returns.", "de": "Hallo! Fragen Sie zu Bestellungen, Versand oder Rückgaben."}
        site.enabled = True
        site.full_clean()
        site.save()
        site.knowledge_bases.set([kb])
        site.tools.set(Tool.objects.filter(knowledge_bases=kb, name__in=[d["name"] for d in demo_api.DEMO_TOOLS]))
        return site

    def demo_tools(self, kb: KnowledgeBase) -> list[str]:
        """Create or update the "Order status" and "Refund status" tools for ``kb``, pointing at the demo API
        (``DEMO_API_URL``, signed with ``DEMO_TOOLS_SECRET``): the definition in knowledge/tools/demo_api.py is
        the demo's, so a second run puts back whatever was changed, and a changed API URL or port is taken up."""
        names = []
        for definition in demo_api.DEMO_TOOLS:
            tool = Tool.objects.filter(name=definition["name"]).first() or Tool(name=definition["name"])
            for field, value in definition.items():
                setattr(tool, field, value)
            tool.base_url = settings.DEMO_API_URL
            tool.secret = settings.DEMO_TOOLS_SECRET
            tool.headers = {}
            tool.enabled = True
            tool.needs_signed_in = True
            tool.full_clean()
            tool.save()
            tool.knowledge_bases.add(kb)
            names.append(tool.name)
        return names
