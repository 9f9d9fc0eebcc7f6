from django.urls import path

from conversations import console_views

app_name = "console"

urlpatterns = [
    path("", console_views.conversation_list, name="list"),
    path("c/<uuid:conversation_id>/", console_views.conversation_detail, name="detail"),
]
