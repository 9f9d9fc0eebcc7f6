from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog

from chatsite import sign_in
from chatsite.health import healthz
from chatsite.metrics import metrics
from conversations import api as conversations_api
from conversations import widget_views

# Sign-in is throttled everywhere a password is checked (chatsite/sign_in.py): the admin's form too.
admin.site.login_form = sign_in.ThrottledAdminAuthenticationForm

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),  # Prometheus text format; staff or METRICS_ALLOWED_NETWORKS
    # The chat page's JavaScript strings, translated (gettext() for static/chat/i18n.js; locale/*/djangojs.po).
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("admin/login/", sign_in.admin_sign_in),  # before admin.site.urls: the same page, 429 when throttled
    path("admin/", admin.site.urls),
    path("accounts/login/", sign_in.SignInView.as_view(), name="login"),  # throttled: 429 + Retry-After
    path("accounts/", include("django.contrib.auth.urls")),
    path("kb/", include("knowledge.urls")),
    path("api/token/", conversations_api.token, name="api-token"),
    path("api/token/revoke/", conversations_api.revoke, name="api-token-revoke"),  # "sign out everywhere"
    path("console/", include("conversations.console_urls")),  # the staff support console
    # The chat widget on the companies' own sites (docs/widget.md): the embed script, its frame, its visitor tokens.
    path("widget.js", widget_views.widget_script, name="widget-script"),
    path("widget/<slug:slug>/", widget_views.frame, name="widget-frame"),
    path("widget/<slug:slug>/visitor/", widget_views.visitor, name="widget-visitor"),
    path("attachments/", include("conversations.attachment_urls")),  # customers' images (conversations/attachments.py)
    path("", include("conversations.urls")),
]

# Uploads (MEDIA_ROOT) are never served from a URL of their own, not even in DEBUG: an uploaded .html would run
# its script on our origin. They go out only through knowledge's access-checked download, as attachments.
if settings.DEBUG:
    # Plain `daphne` (make run, the e2e tests) does not serve static files the way runserver does; the chat
    # page's CSS/JS modules and the admin's assets come from the finders. Production: collectstatic + a proxy.
    urlpatterns += staticfiles_urlpatterns()
