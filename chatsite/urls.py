from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog

from chatsite.health import healthz
from chatsite.metrics import metrics
from conversations import api as conversations_api

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),  # Prometheus text format; staff or METRICS_ALLOWED_NETWORKS
    # The chat page's JavaScript strings, translated (gettext() for static/chat/i18n.js; locale/*/djangojs.po).
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("kb/", include("knowledge.urls")),
    path("api/token/", conversations_api.token, name="api-token"),
    path("console/", include("conversations.console_urls")),  # the staff support console
    path("", include("conversations.urls")),
]

if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
    # Plain `daphne` (make run, the e2e tests) does not serve static files the way runserver does; the chat
    # page's CSS/JS modules and the admin's assets come from the finders. Production: collectstatic + a proxy.
    urlpatterns += staticfiles_urlpatterns()
