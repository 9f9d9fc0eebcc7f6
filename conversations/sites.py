"""The plain rules of a widget ``Site`` (``conversations.models.Site``): which origins it may be embedded on, and
when it is open. No ORM here, so the socket's Origin check and the widget's "leave a message" can ask them cheaply.

Origins are kept in the one form a browser sends in its ``Origin`` header — ``scheme://host`` with the port only
when it is not the scheme's default, the host lower-case and IDNA-encoded — so an allowed origin is matched exactly
by a string comparison, never by a prefix or a pattern. A site's page must be on HTTPS: a page on plain HTTP can be
rewritten by anyone on its network, who would then speak for the site's verified customers. Plain HTTP is accepted
for this machine only (``localhost``, ``127.0.0.1``, ``[::1]``), for development.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import zoneinfo
from datetime import datetime, time

from django.core.exceptions import ValidationError

from chatsite.origins import DEFAULT_PORTS, Origin

#: Hosts a site may name with ``http://``: this machine, for development.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
#: ``business_hours`` keys, in ``datetime.weekday()`` order.
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_HH_MM = re.compile(r"([01]\d|2[0-3]):[0-5]\d|24:00")


def _host_text(host: str) -> str | None:
    """``host`` as an origin spells it (IDNA-encoded, IPv6 in brackets), or None when it is no host name or IP."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if all(label.isdigit() for label in labels):  # 1.2.3 or 999.1.1.1: not an IP, not a name either
        return None
    return ascii_host


def origin_text(origin: Origin) -> str:
    """``origin`` as a browser's ``Origin`` header spells it: the port only when it is not the default."""
    host = _host_text(origin.host) or origin.host
    default = DEFAULT_PORTS[origin.scheme] == origin.port
    return f"{origin.scheme}://{host}" if default else f"{origin.scheme}://{host}:{origin.port}"


def normalise_origin(text: str) -> str:
    """One allowed-origin line as the ``Origin`` header a browser would send from there; ``ValidationError`` (saying
    what is wrong) for anything that is not exactly one origin a site's page may be on.

    ``https://Shop.Example.com:443/`` → ``https://shop.example.com``. Refused: a path, query or fragment (an origin
    is the whole site; a path would suggest a narrower permission than the browser enforces), credentials,
    wildcards (each origin is listed: a forgotten subdomain is a smaller risk than a hijacked one), another scheme,
    and ``http://`` on any host but this machine's.
    """
    text = text.strip()
    if "*" in text:
        raise ValidationError(f"“{text}”: no wildcards; list each origin (https://shop.example.com).")
    origin = Origin.parse(text)
    if origin is None:
        raise ValidationError(
            f"“{text}”: not an origin. Write scheme://host[:port] only, without a path, query or user name "
            "(https://shop.example.com)."
        )
    host = _host_text(origin.host)
    if host is None:
        raise ValidationError(f"“{text}”: “{origin.host}” is not a host name or an IP address.")
    if origin.scheme == "http" and host not in LOCAL_HOSTS:
        raise ValidationError(
            f"“{text}”: a site must be on https://. Plain http:// is accepted only for localhost, 127.0.0.1 and "
            "[::1] (development)."
        )
    return origin_text(origin)


def normalise_origins(text: str) -> list[str]:
    """Every line of an allowed-origins text normalised, duplicates and blank lines dropped, in their order; one
    ``ValidationError`` listing every bad line."""
    origins: list[str] = []
    problems: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            origin = normalise_origin(line)
        except ValidationError as exc:
            problems.extend(exc.messages)
            continue
        if origin not in origins:
            origins.append(origin)
    if problems:
        raise ValidationError(problems)
    return origins


def header_origin(header: str) -> str | None:
    """A request's ``Origin`` header in the form allowed origins are kept in, or None when it names no origin
    (``null``, a path, garbage): such a request is never allowed."""
    origin = Origin.parse(header) if header else None
    if origin is None or _host_text(origin.host) is None:
        return None
    return origin_text(origin)


@functools.cache
def time_zone_names() -> frozenset[str]:
    """The IANA time zone names this machine knows (``tzdata``); read once, they change only with an upgrade."""
    return frozenset(zoneinfo.available_timezones())


def check_time_zone(name: str) -> None:
    """``ValidationError`` unless ``name`` is an IANA time zone (``Europe/Berlin``), exactly as spelled there."""
    if name not in time_zone_names():
        raise ValidationError(f"“{name}” is not a time zone name like Europe/Berlin or America/New_York.")


def check_business_hours(hours: object) -> None:
    """``ValidationError`` unless ``hours`` is ``{weekday: [[start, end], …]}``: weekdays ``mon``…``sun``, times
    ``HH:MM`` (``24:00`` only as an end), each range starting before it ends. A range cannot pass midnight: write
    ``"fri": [["22:00", "24:00"]], "sat": [["00:00", "02:00"]]``, so each day reads as it is."""
    if not isinstance(hours, dict):
        raise ValidationError('An object of weekdays: {"mon": [["09:00", "17:00"]], …}; {} is always open.')
    for day, ranges in hours.items():
        if day not in WEEKDAYS:
            raise ValidationError(f"“{day}” is not a weekday; use {', '.join(WEEKDAYS)}.")
        if not isinstance(ranges, list):
            raise ValidationError(f'{day}: a list of ranges, [["09:00", "17:00"]] ([] is closed all day).')
        for hours_range in ranges:
            if (
                not isinstance(hours_range, list)
                or len(hours_range) != 2
                or not all(isinstance(t, str) and _HH_MM.fullmatch(t) for t in hours_range)
            ):
                raise ValidationError(f'{day}: {hours_range!r} is not a range like ["09:00", "17:00"] (HH:MM).')
            start, end = hours_range
            if start == "24:00" or start >= end:
                raise ValidationError(
                    f"{day}: {start}–{end} must start before it ends; a range past midnight is split over two days."
                )


def is_open(hours: dict[str, list[list[str]]], time_zone: str, at: datetime) -> bool:
    """Whether ``at`` (an aware datetime) falls in ``hours`` on the wall clock of ``time_zone``. Empty ``hours``:
    always open; a weekday missing from non-empty ``hours``: closed all day. A range includes its start, not its
    end. The wall clock is what the company's staff keep, so a DST change moves the hours with it."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("is_open needs an aware datetime (django.utils.timezone.now()).")
    if not hours:
        return True
    local = at.astimezone(zoneinfo.ZoneInfo(time_zone))
    clock = local.time().replace(tzinfo=None)
    for start, end in hours.get(WEEKDAYS[local.weekday()], []):
        if _clock(start) <= clock and (end == "24:00" or clock < _clock(end)):
            return True
    return False


def _clock(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def is_colour(text: str) -> bool:
    """Whether a page's ``data-color`` is a colour the widget takes: ``#rrggbb`` only, so nothing else reaches CSS."""
    return bool(_COLOUR.fullmatch(text))
