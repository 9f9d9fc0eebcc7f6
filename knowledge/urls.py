"""Knowledge-base pages for readers: the document view that citations link to."""

from django.urls import path

from knowledge import views

app_name = "knowledge"

urlpatterns = [
    path("documents/<int:document_id>/", views.document_detail, name="document"),
    path("documents/<int:document_id>/download/", views.document_download, name="document-download"),
]
