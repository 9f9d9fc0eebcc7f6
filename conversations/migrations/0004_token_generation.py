import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    """Per-user bearer-token generation: "sign out everywhere" revokes every token issued before it."""

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("conversations", "0003_message_lease"),
    ]

    operations = [
        migrations.CreateModel(
            name="TokenGeneration",
            fields=[
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                        related_name="token_generation", serialize=False, to=settings.AUTH_USER_MODEL,
                    ),
                ),
                ("generation", models.PositiveIntegerField(default=0)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
            ],
        ),
    ]
