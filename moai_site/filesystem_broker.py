"""Celery's filesystem broker (the embedded defaults' broker), with messages that appear whole.

kombu's filesystem transport creates a message file in the folder the worker lists, then
locks and writes it; the worker moves any file it lists away at once, without taking that
lock. A worker that lists the folder between the file's creation and its write reads it
empty and dies on the JSON error ("Unrecoverable error: JSONDecodeError", seen in `make
demo`). Here a message is written under a name the worker does not look at and renamed into
place once whole: a rename within one folder is atomic.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:  # type: ignore[override]  # typed twice by kombu
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".part"  # "<queue>.msg.part": not a message of <queue> to the reader
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(message)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    """Make ``filesystem://`` this transport, in every process that reads the settings."""
    TRANSPORT_ALIASES["filesystem"] = f"{__name__}:Transport"
