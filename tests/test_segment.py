"""shm/segment.py is the posix_ipc boundary: only its own errors (and the stdlib's) leave it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.namespaces import unique_namespace
from zoldyq.shm import segment


@pytest.fixture
def base() -> Iterator[str]:
    """A POSIX name nobody uses; whatever a test made under it is unlinked afterwards."""
    name = f"/zoldyq.{unique_namespace()}"
    yield name
    for entry in segment.leftovers(name):
        segment.unlink_leftover(entry)


def test_missing_objects_are_gone(base: str) -> None:
    """Opening a segment or semaphore that does not exist raises segment.Gone."""
    with pytest.raises(segment.Gone):
        segment.open_shm(base)
    with pytest.raises(segment.Gone):
        segment.open_sem(base)


def test_an_exclusive_create_of_an_existing_object_is_file_exists(base: str) -> None:
    """Creating what exists raises FileExistsError; a shared create opens the same object."""
    segment.create_shm(base, 4096, 4096).close_fd()
    segment.create_sem(base, 1).close()
    with pytest.raises(FileExistsError):
        segment.create_shm(base, 4096, 0)
    with pytest.raises(FileExistsError):
        segment.create_sem(base, 1)
    shared = segment.create_shm(base, 4096, 0, exclusive=False)
    assert shared.size == 4096
    shared.close_fd()


def test_unlink_is_idempotent(base: str) -> None:
    """Unlinking what is already gone is no error, and leaves nothing behind."""
    segment.create_shm(base, 0, 0).close_fd()
    segment.create_sem(base, 0).close()
    for _ in range(2):
        segment.unlink_shm(base)
        segment.unlink_sem(base)
    assert segment.leftovers(base) == []
