"""The data folders a process writes into, created when a Django process starts.

Importing the settings creates nothing (a tool that only reads them, mypy, a test that
inspects them leaves the disk as it was). Every Django process (web, worker, beat,
manage.py, pytest, the benchmarks) runs ``base.apps.OpsConfig.ready``, which calls this
before any request, task or command needs the folders.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

# The filesystem broker (DEBUG's embedded default) refuses to publish or consume
# without these; its control folder it creates itself, inside the broker folder.
_BROKER_FOLDERS = ("data_folder_in", "data_folder_out", "processed_folder")


def worker_status_path(data_dir: Path, host: str, pid: int, kind: str) -> Path:
    """A worker process's file under ``data_dir/worker-status``: ``json``, a pool process's status;
    ``ready``, kept by the main process while it consumes. Django-free in use, for scripts.stack
    and the bench, which look for the files of processes they started."""
    return data_dir / "worker-status" / f"{host}-{pid}.{kind}"


def create_data_folders() -> None:
    # Uploads are spooled to FILE_UPLOAD_TEMP_DIR by Django before any view runs.
    folders = [Path(settings.MOAI_DATA_DIR), Path(settings.FILE_UPLOAD_TEMP_DIR)]
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        folders += [Path(str(options[name])) for name in _BROKER_FOLDERS if name in options]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
