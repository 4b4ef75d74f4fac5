"""The garbage collector's tuning (app/gc_tuning.py): what `python -m app`'s server does
to the process once started, undone when it stops; cycles still collected."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator

import httpx
import pytest

from app.gc_tuning import MIDDLE_THRESHOLD, OLD_THRESHOLD, YOUNG_THRESHOLD, CollectorTuning
from app.settings import Settings, SettingsError
from tests.live import live_server

TUNED = (YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)


@pytest.fixture
def untuned() -> Iterator[tuple[int, int, int]]:
    """The process's own collector settings, checked to be back after the test."""
    assert not CollectorTuning.active()
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    yield before
    while CollectorTuning.active():  # a failed test must not leave the process tuned
        CollectorTuning.stop()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def tracked(thing: object) -> bool:
    """Whether a collection of some generation walks `thing` (frozen objects are in
    none)."""
    return any(candidate is thing for candidate in gc.get_objects())


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_start_freezes_what_exists_and_stop_restores(untuned: tuple[int, int, int]) -> None:
    existing = Cycle()
    assert tracked(existing)
    CollectorTuning.start()
    assert gc.get_threshold() == TUNED
    assert gc.get_freeze_count() > 1000  # this process's modules and objects
    assert not tracked(existing)  # frozen: no collection walks it
    CollectorTuning.stop()
    assert gc.get_threshold() == untuned
    assert tracked(existing)


def test_nested_servers_keep_the_tuning_until_the_last_stops(
    untuned: tuple[int, int, int],
) -> None:
    CollectorTuning.start()
    frozen = gc.get_freeze_count()
    CollectorTuning.start()  # a second server in the process: nothing collected again
    assert gc.get_freeze_count() == frozen
    CollectorTuning.stop()
    assert CollectorTuning.active()
    assert gc.get_threshold() == TUNED
    CollectorTuning.stop()
    assert not CollectorTuning.active()
    assert gc.get_threshold() == untuned
    CollectorTuning.stop()  # one stop too many: harmless
    assert gc.get_threshold() == untuned


def test_cycles_made_after_start_are_still_collected_without_asking(
    untuned: tuple[int, int, int],
) -> None:
    CollectorTuning.start()
    try:
        garbage = weakref.ref(Cycle())
        assert garbage() is not None  # a cycle: reference counting alone cannot free it
        # Enough new container objects, kept alive, to trigger a young collection.
        kept = [[] for _ in range(YOUNG_THRESHOLD + 1000)]
        assert garbage() is None
        del kept
    finally:
        CollectorTuning.stop()


async def test_the_server_tunes_once_started_and_restores_when_stopped(
    untuned: tuple[int, int, int], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(database_url=sqlite_url)
    with caplog.at_level(logging.INFO, logger="commitcast.gc"):
        async with live_server(settings, tune_collector=True) as live:
            assert CollectorTuning.active()
            assert gc.get_threshold() == TUNED
            (said,) = [r.getMessage() for r in caplog.records if r.name == "commitcast.gc"]
            assert "objects frozen" in said
            assert "GC_TUNING=false" in said
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{live.http_url}/healthz")).status_code == 200
    assert not CollectorTuning.active()
    assert gc.get_threshold() == untuned


async def test_a_server_told_not_to_tune_leaves_the_collector_alone(
    untuned: tuple[int, int, int], sqlite_url: str
) -> None:
    async with live_server(Settings(database_url=sqlite_url), tune_collector=False):
        assert not CollectorTuning.active()
        assert gc.get_threshold() == untuned


def test_gc_tuning_is_on_unless_the_environment_turns_it_off() -> None:
    assert Settings.from_env({}).gc_tuning
    assert Settings.from_env({"GC_TUNING": "true"}).gc_tuning
    assert not Settings.from_env({"GC_TUNING": " False "}).gc_tuning
    with pytest.raises(SettingsError, match="GC_TUNING"):
        Settings.from_env({"GC_TUNING": "sometimes"})
