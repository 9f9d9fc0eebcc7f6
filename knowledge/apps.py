from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class KnowledgeConfig(AppConfig):
    name = "knowledge"

    def ready(self) -> None:
        # A curated answer is indexed at every save, wherever it is saved from (knowledge/curated/indexing.py).
        from knowledge.curated import indexing  # noqa: PLC0415  (models are loaded only once the app is ready)
        from knowledge.models import CuratedAnswer  # noqa: PLC0415

        post_save.connect(indexing.on_save, sender=CuratedAnswer, dispatch_uid="curated-answer-index")
        post_delete.connect(indexing.on_delete, sender=CuratedAnswer, dispatch_uid="curated-answer-remove")
