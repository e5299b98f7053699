"""The Celery app. Creating it reads settings and connects to nothing.

    celery -A workers.app:app worker ...      # what `speechq worker` runs
    celery --broker=redis://... flower        # Flower needs nothing of ours
"""

from __future__ import annotations

from celery import Celery

from workers.settings import Settings, celery_config


def create_app(settings: Settings | None = None) -> Celery:
    app = Celery("speechq", include=["workers.tasks"], set_as_current=False)
    configure(app, settings or Settings.from_env())
    return app


def configure(app: Celery, settings: Settings) -> None:
    """(Re)apply settings, before the app has connected to anything."""
    app.conf.update(celery_config(settings))
    app.speechq_settings = settings


app = create_app()
