from django.db import migrations, models

from knowledge.language import detect


def detect_languages(apps, schema_editor):
    """Existing chunks get the language of their text, or their document's when the text alone can't tell."""
    Chunk = apps.get_model("knowledge", "Chunk")
    batch = []
    for document_id in Chunk.objects.values_list("document_id", flat=True).distinct().iterator():
        chunks = list(Chunk.objects.filter(document_id=document_id).only("pk", "text"))
        whole = detect(" ".join(c.text for c in chunks)[:20000]) or ""
        for chunk in chunks:
            chunk.language = detect(chunk.text) or whole
            batch.append(chunk)
        if len(batch) >= 500:
            Chunk.objects.bulk_update(batch, ["language"])
            batch = []
    Chunk.objects.bulk_update(batch, ["language"])


class Migration(migrations.Migration):
    """Chunk.language (knowledge/cross_lingual.py): a question is compared with passages of every language on
    one scale, and the lexical side weighs what it can see."""

    dependencies = [
        ("knowledge", "0004_knowledgebase_visibility"),
    ]

    operations = [
        migrations.AddField(
            model_name="chunk",
            name="language",
            field=models.CharField(blank=True, default="", db_default="", max_length=16),
        ),
        migrations.AddIndex(
            model_name="chunk",
            index=models.Index(fields=["knowledge_base", "language"], name="chunk_kb_language"),
        ),
        migrations.CreateModel(
            name="LanguageCentroid",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("model", models.CharField(max_length=200)),
                ("language", models.CharField(max_length=16)),
                ("messages", models.PositiveIntegerField(help_text="How many texts the mean is over.")),
                ("vector", models.BinaryField(help_text="float32, the model's dimensions.")),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("model", "language", "messages"), name="centroid_unique_per_model")
                ],
            },
        ),
        migrations.RunPython(detect_languages, migrations.RunPython.noop),
    ]
