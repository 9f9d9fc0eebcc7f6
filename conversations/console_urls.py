from django.urls import path

from conversations import console_views
from conversations.insights import views as insights_views

app_name = "console"

urlpatterns = [
    path("", console_views.conversation_list, name="list"),
    path("c/<uuid:conversation_id>/", console_views.conversation_detail, name="detail"),
    path("insights/", insights_views.insights, name="insights"),
    path("insights/export.csv", insights_views.export_csv, name="insights_export"),
    path("insights/reviews/<int:feedback_id>/", insights_views.review, name="insights_review"),
]
