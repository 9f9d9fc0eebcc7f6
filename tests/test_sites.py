"""Sites in the admin (issue 20, point 4): the company websites the chat widget may be embedded on.

A site lists its pages' origins, normalised to exactly what a browser's ``Origin`` header says and matched exactly
(https only, but for this machine); a disabled site allows none. Business hours are kept on the wall clock of the
site's time zone, across days and DST changes. Staff add a site in the admin; its identity secret is write-only:
a generated one is shown once, on the next page, and no page holds it after that.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError
from django.urls import reverse

from conversations import sites
from conversations.models import Site
from knowledge.models import KnowledgeBase, Tool

OWN_SECRET = "typed-by-staff-7c1e9a44d05b3f28e6a1"


def site(**fields) -> Site:
    """An unsaved site; ``Site.clean`` and the field checks run without a database."""
    defaults = {"name": "Shop", "slug": "shop", "allowed_origins": "https://shop.example.com"}
    return Site(**{**defaults, **fields})


def clean(candidate: Site) -> Site:
    candidate.full_clean(exclude=["knowledge_bases", "tools"], validate_unique=False)
    return candidate


# --- Origins -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, origin",
    [
        ("https://shop.example.com", "https://shop.example.com"),
        ("https://shop.example.com/", "https://shop.example.com"),  # a trailing slash
        ("https://Shop.EXAMPLE.com", "https://shop.example.com"),  # an upper-case host
        ("HTTPS://shop.example.com", "https://shop.example.com"),
        ("https://shop.example.com:443", "https://shop.example.com"),  # the default port
        ("https://shop.example.com.", "https://shop.example.com"),  # the root's dot
        ("  https://shop.example.com  ", "https://shop.example.com"),
        ("https://shop.example.com:8443", "https://shop.example.com:8443"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),  # as the browser sends it: IDNA
        ("https://203.0.113.7", "https://203.0.113.7"),
        ("http://localhost", "http://localhost"),  # plain http for this machine only
        ("http://localhost:80", "http://localhost"),
        ("http://LOCALHOST:8121/", "http://localhost:8121"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("http://[0:0:0:0:0:0:0:1]:8000", "http://[::1]:8000"),
    ],
)
def test_an_allowed_origin_is_normalised_to_what_a_browser_sends(line, origin):
    assert sites.normalise_origin(line) == origin


@pytest.mark.parametrize(
    "line, says",
    [
        ("https://shop.example.com/help", "not an origin"),  # a path
        ("https://shop.example.com/?embed=1", "not an origin"),  # a query
        ("https://shop.example.com/#chat", "not an origin"),
        ("https://*.example.com", "no wildcards"),
        ("*", "no wildcards"),
        ("http://shop.example.com", "must be on https://"),  # plain http on a public host
        ("http://203.0.113.7:8000", "must be on https://"),
        ("http://shop.localhost", "must be on https://"),
        ("ftp://shop.example.com", "not an origin"),
        ("shop.example.com", "not an origin"),  # no scheme
        ("https://user@shop.example.com", "not an origin"),
        ("https://shop.example.com:99999", "not an origin"),
        ("null", "not an origin"),
        ("https://shop_example.com", "not a host name"),
        ("https://-shop.example.com", "not a host name"),
        ("https://shop example.com", "not a host name"),
        ("https://999.1.1.1", "not a host name"),
    ],
)
def test_anything_but_one_https_origin_is_refused_saying_why(line, says):
    with pytest.raises(ValidationError) as refused:
        sites.normalise_origin(line)
    assert says in refused.value.messages[0], refused.value.messages


def test_a_site_stores_its_origins_normalised_once_each_and_lists_every_bad_line():
    shop = clean(
        site(allowed_origins="https://Shop.example.com/\n\nhttps://shop.example.com:443\nhttp://localhost:8121")
    )
    assert shop.allowed_origins == "https://shop.example.com\nhttp://localhost:8121"
    assert shop.origins == ["https://shop.example.com", "http://localhost:8121"]

    with pytest.raises(ValidationError) as refused:
        clean(site(allowed_origins="https://shop.example.com\nhttp://shop.example.com\nhttps://*.example.com"))
    problems = refused.value.message_dict["allowed_origins"]
    assert len(problems) == 2 and "http://shop.example.com" in problems[0] and "*.example.com" in problems[1]


@pytest.mark.parametrize(
    "header, allowed",
    [
        ("https://shop.example.com", True),
        ("https://SHOP.example.com:443", True),
        ("http://localhost:8121", True),
        ("http://shop.example.com", False),  # another scheme
        ("https://shop.example.com:8443", False),  # another port
        ("https://www.shop.example.com", False),  # a subdomain is another origin
        ("https://shop.example.com.evil.test", False),  # not a prefix match
        ("https://evilshop.example.com", False),
        ("http://localhost:9999", False),  # another program on the machine
        ("http://127.0.0.1:8121", False),  # another name for the same machine is another origin
        ("null", False),
        ("", False),
    ],
)
def test_a_site_allows_exactly_its_origins(header, allowed):
    shop = clean(site(allowed_origins="https://shop.example.com\nhttp://localhost:8121"))
    assert shop.allows_origin(header) is allowed


def test_a_disabled_site_allows_no_origin():
    shop = clean(site(allowed_origins="https://shop.example.com\nhttp://localhost:8121", enabled=False))
    assert not shop.allows_origin("https://shop.example.com") and not shop.allows_origin("http://localhost:8121")
    shop.enabled = True
    assert shop.allows_origin("https://shop.example.com")


def test_a_site_without_origins_allows_none():
    assert not clean(site(allowed_origins="")).allows_origin("https://shop.example.com")


# --- Business hours ----------------------------------------------------------------------------------------------

WEEKDAYS_9_TO_5 = {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_empty_business_hours_are_always_open():
    shop = clean(site(business_hours={}, time_zone="Pacific/Kiritimati"))
    assert shop.is_open(utc(2026, 12, 6, 3, 0)) and shop.is_open(utc(2026, 12, 25, 23, 59))


@pytest.mark.parametrize(
    "time_zone, at, open_",
    [
        # Monday 2 March 2026, 16:30 UTC: 17:30 in Berlin (closed), 11:30 in New York (open).
        ("Europe/Berlin", utc(2026, 3, 2, 16, 30), False),
        ("America/New_York", utc(2026, 3, 2, 16, 30), True),
        # Monday 23:30 UTC is already Tuesday 08:30 in Tokyo (not yet open), 09:00 there (open).
        ("Asia/Tokyo", utc(2026, 3, 2, 23, 30), False),
        ("Asia/Tokyo", utc(2026, 3, 3, 0, 0), True),
        # Friday 6 March 22:00 UTC is Saturday in Tokyo (closed all day), Friday 17:00 in New York (just closed).
        ("Asia/Tokyo", utc(2026, 3, 6, 22, 0), False),
        ("America/New_York", utc(2026, 3, 6, 21, 59), True),
        ("America/New_York", utc(2026, 3, 6, 22, 0), False),
        # Sunday 1 March 2026, noon everywhere near: a day left out is closed.
        ("UTC", utc(2026, 3, 1, 12, 0), False),
    ],
)
def test_business_hours_are_kept_on_the_wall_clock_of_the_sites_time_zone(time_zone, at, open_):
    assert clean(site(business_hours=WEEKDAYS_9_TO_5, time_zone=time_zone)).is_open(at) is open_


def test_business_hours_move_with_daylight_saving_time():
    berlin = clean(site(business_hours=WEEKDAYS_9_TO_5, time_zone="Europe/Berlin"))
    # 07:30 UTC is 08:30 in Berlin in winter (CET, closed) and 09:30 a week later in summer time (CEST, open).
    assert not berlin.is_open(utc(2026, 3, 23, 7, 30))
    assert berlin.is_open(utc(2026, 3, 30, 7, 30))
    # On the night of the change (Sunday 29 March) 02:00–03:00 does not exist: 00:59 UTC is 01:59 CET, 01:00 UTC
    # is 03:00 CEST, so a shop open 03:00–04:00 opens at 01:00 UTC.
    night = clean(site(business_hours={"sun": [["03:00", "04:00"]]}, time_zone="Europe/Berlin"))
    assert not night.is_open(utc(2026, 3, 29, 0, 59))
    assert night.is_open(utc(2026, 3, 29, 1, 0))
    assert not night.is_open(utc(2026, 3, 29, 2, 0))  # 04:00 CEST: the end is not included
    # Back in October (25th), 01:30 local happens twice: both are within 01:00–02:00.
    twice = clean(site(business_hours={"sun": [["01:00", "02:00"]]}, time_zone="Europe/London"))
    assert twice.is_open(utc(2026, 10, 25, 0, 30)) and twice.is_open(utc(2026, 10, 25, 1, 30))
    assert not twice.is_open(utc(2026, 10, 25, 2, 0))


def test_a_range_may_run_to_midnight_and_a_day_may_have_several():
    split = {"fri": [["09:00", "12:30"], ["13:30", "24:00"]], "sat": [["00:00", "02:00"]]}
    shop = clean(site(business_hours=split, time_zone="UTC"))
    friday = [utc(2026, 3, 6, hour, minute) for hour, minute in ((9, 0), (12, 29), (12, 30), (13, 30), (23, 59))]
    assert [shop.is_open(at) for at in friday] == [True, True, False, True, True]
    assert shop.is_open(utc(2026, 3, 7, 1, 59)) and not shop.is_open(utc(2026, 3, 7, 2, 0))


def test_is_open_needs_an_aware_time():
    with pytest.raises(ValueError, match="aware"):
        clean(site(business_hours=WEEKDAYS_9_TO_5)).is_open(datetime(2026, 3, 2, 10, 0))


@pytest.mark.parametrize(
    "fields, field, says",
    [
        ({"business_hours": [["09:00", "17:00"]]}, "business_hours", "An object of weekdays"),
        ({"business_hours": {"monday": [["09:00", "17:00"]]}}, "business_hours", "not a weekday"),
        ({"business_hours": {"mon": ["09:00", "17:00"]}}, "business_hours", "not a range"),
        ({"business_hours": {"mon": [["9:00", "17:00"]]}}, "business_hours", "not a range"),
        ({"business_hours": {"mon": [["09:00", "24:30"]]}}, "business_hours", "not a range"),
        ({"business_hours": {"mon": [["22:00", "02:00"]]}}, "business_hours", "split over two days"),
        ({"business_hours": {"mon": [["24:00", "24:00"]]}}, "business_hours", "must start before it ends"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone", "not a time zone"),
        ({"time_zone": "europe/berlin"}, "time_zone", "not a time zone"),
        ({"time_zone": "../../etc/passwd"}, "time_zone", "not a time zone"),
        ({"greeting": {"xx": "Hi"}}, "greeting", "Languages xx"),
        ({"greeting": {"en": ["Hi"]}}, "greeting", "An object of languages"),
        ({"identity_secret": "short"}, "__all__", "at least 32 characters"),
    ],
)
def test_a_site_that_could_not_work_is_refused_when_saved(fields, field, says):
    with pytest.raises(ValidationError) as refused:
        clean(site(**fields))
    assert says in " ".join(refused.value.message_dict[field]), refused.value.message_dict


def test_the_greeting_follows_the_language_and_falls_back_to_the_default():
    shop = clean(site(greeting={"en": "Hi! How can we help?", "de": "Hallo! Wie können wir helfen?"}))
    assert shop.greeting_for("de") == "Hallo! Wie können wir helfen?"
    assert shop.greeting_for("de-CH") == "Hallo! Wie können wir helfen?"
    assert shop.greeting_for("fr") == "Hi! How can we help?"
    assert clean(site(greeting={})).greeting_for("en") == ""


# --- The admin ---------------------------------------------------------------------------------------------------


@pytest.fixture
def staff_client(admin_client):
    """A signed-in superuser (pytest-django's ``admin_client``)."""
    return admin_client


@pytest.fixture
def help_centre(db) -> KnowledgeBase:
    return KnowledgeBase.objects.create(name="Shop help", slug="shop-help")


def site_form(kb: KnowledgeBase, **overrides) -> dict:
    form = {
        "name": "North Shop",
        "slug": "north-shop",
        "enabled": "on",
        "allowed_origins": "https://Shop.example.com/\nhttp://localhost:8121",
        "knowledge_bases": [kb.pk],
        "greeting": '{"en": "Hi! How can we help?", "de": "Hallo!"}',
        "business_hours": '{"mon": [["09:00", "17:00"]]}',
        "time_zone": "Europe/Berlin",
        "new_identity_secret": "",
    }
    form.update(overrides)
    return {key: value for key, value in form.items() if value is not None}


def shown_secret(page: str) -> str:
    """The secret in the one-time message, as staff would copy it."""
    found = re.search(r"The identity secret of “[^”]*” is <code>([^<]+)</code>", page)
    assert found, page[:3000]
    return found.group(1)


@pytest.mark.django_db
def test_the_add_page_renders_with_every_field_and_no_secret(staff_client, help_centre):
    page = staff_client.get(reverse("admin:conversations_site_add"))
    assert page.status_code == 200
    html = page.content.decode()
    for name in ("name", "slug", "allowed_origins", "knowledge_bases", "tools", "greeting", "business_hours",
                 "time_zone", "new_identity_secret", "generate_identity_secret"):  # fmt: skip
        assert f'name="{name}"' in html, name
    assert 'type="password"' in html and "Left empty, one is generated and shown once." in html


@pytest.mark.django_db
def test_staff_add_a_site_and_its_generated_secret_is_shown_once_then_never(staff_client, help_centre):
    response = staff_client.post(reverse("admin:conversations_site_add"), site_form(help_centre), follow=True)
    assert response.status_code == 200 and response.redirect_chain, response.content.decode()[:3000]
    shop = Site.objects.get(slug="north-shop")
    assert shop.allowed_origins == "https://shop.example.com\nhttp://localhost:8121"
    assert list(shop.knowledge_bases.all()) == [help_centre] and shop.time_zone == "Europe/Berlin"
    assert shop.greeting["de"] == "Hallo!" and shop.business_hours == {"mon": [["09:00", "17:00"]]}
    assert shop.allows_origin("https://shop.example.com")
    assert len(shop.identity_secret) >= Site.MIN_SECRET_LENGTH
    assert shown_secret(response.content.decode()) == shop.identity_secret  # the next page, once

    change = staff_client.get(reverse("admin:conversations_site_change", args=[shop.pk])).content.decode()
    listing = staff_client.get(reverse("admin:conversations_site_changelist")).content.decode()
    history = staff_client.get(reverse("admin:conversations_site_history", args=[shop.pk])).content.decode()
    for page in (change, listing, history):
        assert shop.identity_secret not in page
    assert "Set (•••)." in change
    assert not any(shop.identity_secret in entry.change_message for entry in LogEntry.objects.all())
    assert re.search(r'field-origins_count">2<', listing), listing[:3000]


@pytest.mark.django_db
def test_a_typed_secret_is_stored_never_shown_and_kept_when_the_field_is_left_empty(staff_client, help_centre):
    response = staff_client.post(
        reverse("admin:conversations_site_add"), site_form(help_centre, new_identity_secret=OWN_SECRET), follow=True
    )
    shop = Site.objects.get(slug="north-shop")
    assert shop.identity_secret == OWN_SECRET
    assert OWN_SECRET not in response.content.decode() and "The identity secret of" not in response.content.decode()

    change_url = reverse("admin:conversations_site_change", args=[shop.pk])
    assert OWN_SECRET not in staff_client.get(change_url).content.decode()
    edited = site_form(help_centre, name="North Shop EU", enabled=None)  # unticked: off
    assert staff_client.post(change_url, edited).status_code == 302
    shop.refresh_from_db()
    assert shop.name == "North Shop EU" and shop.identity_secret == OWN_SECRET
    assert not shop.enabled and not shop.allows_origin("https://shop.example.com")


@pytest.mark.django_db
def test_generate_a_new_secret_replaces_it_and_shows_the_new_one_once(staff_client, help_centre):
    staff_client.post(reverse("admin:conversations_site_add"), site_form(help_centre, new_identity_secret=OWN_SECRET))
    shop = Site.objects.get(slug="north-shop")
    change_url = reverse("admin:conversations_site_change", args=[shop.pk])

    response = staff_client.post(change_url, site_form(help_centre, generate_identity_secret="on"), follow=True)
    shop.refresh_from_db()
    assert shop.identity_secret not in (OWN_SECRET, "")
    assert shown_secret(response.content.decode()) == shop.identity_secret
    again = staff_client.get(change_url).content.decode()
    assert shop.identity_secret not in again and "The identity secret of" not in again

    both = site_form(help_centre, new_identity_secret=OWN_SECRET, generate_identity_secret="on")
    refused = staff_client.post(change_url, both)
    assert refused.status_code == 200 and "not both" in refused.content.decode()
    assert OWN_SECRET not in refused.content.decode()  # not even re-rendered into the password box


@pytest.mark.parametrize(
    "overrides, field, says",
    [
        ({"allowed_origins": "https://shop.example.com/help"}, "allowed_origins", "not an origin"),
        ({"allowed_origins": "http://shop.example.com"}, "allowed_origins", "must be on https://"),
        ({"time_zone": "Berlin"}, "time_zone", "not a time zone"),
        ({"business_hours": '{"mon": [["17:00", "09:00"]]}'}, "business_hours", "must start before it ends"),
        ({"business_hours": "{mon: 9-5}"}, "business_hours", "Enter a valid JSON"),
        ({"greeting": '{"klingon": "nuqneH"}'}, "greeting", "Languages klingon"),
        ({"new_identity_secret": "too-short"}, "new_identity_secret", "at least 32 characters"),
        ({"knowledge_bases": []}, "knowledge_bases", "This field is required"),
    ],
)
@pytest.mark.django_db
def test_the_admin_refuses_a_site_that_could_not_work(staff_client, help_centre, overrides, field, says):
    response = staff_client.post(reverse("admin:conversations_site_add"), site_form(help_centre, **overrides))
    assert response.status_code == 200 and not Site.objects.exists()
    errors = response.context["adminform"].form.errors
    assert field in errors and says in " ".join(errors[field]), errors


@pytest.mark.django_db
def test_emptied_greeting_and_hours_boxes_mean_none_and_always_open(staff_client, help_centre):
    form = site_form(help_centre, greeting="", business_hours="")
    assert staff_client.post(reverse("admin:conversations_site_add"), form).status_code == 302
    shop = Site.objects.get(slug="north-shop")
    assert shop.greeting == {} and shop.business_hours == {} and shop.is_open(utc(2026, 3, 1, 3, 0))


@pytest.mark.django_db
def test_a_site_may_use_only_tools_of_its_knowledge_bases(staff_client, help_centre):
    other = KnowledgeBase.objects.create(name="Internal", slug="internal")
    orders = Tool.objects.create(
        name="Order status",
        description="Where an order is.",
        base_url="https://api.example.com",
        path_template="/orders/{order_number}",
        parameters=[{"name": "order_number", "pattern": r"\d{5}"}],
        secret="tool-secret",
    )
    orders.knowledge_bases.set([other])
    add = reverse("admin:conversations_site_add")

    refused = staff_client.post(add, site_form(help_centre, tools=[orders.pk]))
    assert refused.status_code == 200 and not Site.objects.exists()
    assert "Not used by any of the chosen knowledge bases: Order status" in " ".join(
        refused.context["adminform"].form.errors["tools"]
    )

    orders.knowledge_bases.add(help_centre)
    assert staff_client.post(add, site_form(help_centre, tools=[orders.pk])).status_code == 302
    assert list(Site.objects.get(slug="north-shop").tools.all()) == [orders]


@pytest.mark.django_db
def test_a_site_made_in_code_gets_a_secret_of_its_own():
    first = Site.objects.create(name="A", slug="a")
    second = Site.objects.create(name="B", slug="b")
    assert len(first.identity_secret) >= Site.MIN_SECRET_LENGTH and first.identity_secret != second.identity_secret
