"""The embedded defaults' broker (moai_site.filesystem_broker): a reader never sees a message
before it is whole. Real kombu channels on a temporary folder, a writer and a reader thread."""

from __future__ import annotations

import pytest
from kombu import Connection

from moai_site import filesystem_broker

filesystem_broker.register()


def _connection(folder) -> Connection:
    return Connection(
        "filesystem://",
        transport_options={"data_folder_in": str(folder), "data_folder_out": str(folder), "store_processed": False},
    )


def test_filesystem_urls_use_the_whole_message_transport(tmp_path):
    with _connection(tmp_path) as connection:
        assert isinstance(connection.default_channel, filesystem_broker.Channel)
        # Through kombu's producer and consumer, as Celery publishes (publish passes options).
        queue = connection.SimpleQueue("q")
        queue.put({"n": 2})
        assert queue.get(timeout=5).payload == {"n": 2}
        queue.close()


def test_no_message_file_is_visible_while_it_is_written(tmp_path, monkeypatch):
    """The worker lists ``*.<queue>.msg`` and takes what it finds: such a file must not exist
    before its bytes do. Checked at the moment the message is encoded for writing (kombu's own
    transport has created the file, empty, by then)."""
    seen: list[list[int]] = []
    from kombu.transport import filesystem as kombu_filesystem

    for module in (filesystem_broker, kombu_filesystem):
        real = module.str_to_bytes

        def spy(value, _real=real):
            seen.append([path.stat().st_size for path in tmp_path.glob("*.q.msg")])
            return _real(value)

        monkeypatch.setattr(module, "str_to_bytes", spy)
    with _connection(tmp_path) as connection:
        connection.default_channel._put("q", {"n": 1})
        assert connection.default_channel._get("q") == {"n": 1}
    assert seen == [[]]


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path):
    yield
    assert not list(tmp_path.glob("*.part"))
