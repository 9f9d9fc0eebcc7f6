"""Customers' images (conversations/attachment_views.py): upload one, and see one."""

from django.urls import path

from conversations import attachment_views

app_name = "attachments"

urlpatterns = [
    path("", attachment_views.upload, name="upload"),
    path("<uuid:attachment_id>/", attachment_views.serve, name="serve"),
]
