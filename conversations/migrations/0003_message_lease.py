from django.db import migrations, models


class Migration(migrations.Migration):
    """Leases on streaming answers, so a node that dies mid-answer is noticed by the others."""

    dependencies = [
        ("conversations", "0002_console"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="lease_owner",
            field=models.CharField(
                blank=True, default="", help_text="Control channel of the node generating this answer.",
                max_length=200,
            ),
        ),
        migrations.AddField(
            model_name="message",
            name="lease_expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="cancel_requested",
            field=models.BooleanField(default=False, help_text="Stop asked from another node (durable)."),
        ),
    ]
