"""`manage.py ingest PATH... [--kb NAME] [--force]`: synchronous ingestion for scripts and operators."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from knowledge.ingest.pipeline import ingest_path


class Command(BaseCommand):
    help = "Ingest files or folders (recursively) into a knowledge base, creating it if needed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, help="Files or folders to ingest.")
        parser.add_argument("--kb", default=settings.DEFAULT_KNOWLEDGE_BASE, help="Knowledge base name.")
        parser.add_argument("--force", action="store_true", help="Re-ingest documents whose content is already there.")

    def handle(self, *args, paths: list[Path], kb: str, force: bool, **options) -> None:
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise CommandError(f"No such file or folder: {', '.join(missing)}")
        results = ingest_path(paths, kb, force=force)
        if not results:
            raise CommandError(
                f"No {'/'.join(settings.UPLOAD_ALLOWED_EXTENSIONS)} files found in {', '.join(map(str, paths))}."
            )
        for result in results:
            name = result.path.name
            if result.status == "ok":
                self.stdout.write(f"ok      {name}  ({result.document.chunk_count} chunks)")
            elif result.status == "skipped":
                self.stdout.write(f"skipped {name}  (already ingested)")
            else:
                self.stdout.write(f"FAILED  {name}: {result.error}")
        failed = sum(r.status == "failed" for r in results)
        summary = (
            f"{len(results)} file(s) into “{kb}”: {sum(r.status == 'ok' for r in results)} ingested, "
            f"{sum(r.status == 'skipped' for r in results)} skipped, {failed} failed."
        )
        if failed:
            self.stderr.write(summary)
            raise SystemExit(1)
        self.stdout.write(summary)
