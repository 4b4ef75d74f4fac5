"""schema.extensions_runner: stream-result hooks found once per operation behave as
strawberry's own (entered in order around each result, exited in reverse, seeing what
went wrong while the result was out); a streaming subscription lets go of the
extensions whose part is over."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import pytest
import strawberry
from strawberry.extensions import SchemaExtension

from schema import CommitcastSchema

calls: list[str] = []


class AsyncHook(SchemaExtension):
    async def on_stream_result(self, result: Any) -> AsyncIterator[None]:
        calls.append(f"async enter {(result.data or {}).get('count')}")
        try:
            yield
        except BaseException as error:
            calls.append(f"async saw {type(error).__name__}")
            raise
        calls.append("async exit")


class SyncHook(SchemaExtension):
    def on_stream_result(self, result: Any) -> Iterator[None]:
        result.extensions = {"seen": True}
        calls.append("sync enter")
        yield
        calls.append("sync exit")


class BeforeHook(SchemaExtension):
    """Work before each result only: the runner calls before_stream_result directly."""

    def before_stream_result(self, result: Any) -> None:
        calls.append(f"before {result.data['count']}")

    async def on_stream_result(self, result: Any) -> AsyncIterator[None]:
        calls.append("generator driven")  # strawberry's own runner would use this
        yield


class AsyncBeforeHook(SchemaExtension):
    async def before_stream_result(self, result: Any) -> None:
        count = (result.data or {}).get("count")
        if count == 1:
            raise RuntimeError("refused")
        calls.append(f"async before {count}")

    async def on_stream_result(self, result: Any) -> AsyncIterator[None]:
        calls.append("generator driven")
        await self.before_stream_result(result)
        yield


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self) -> AsyncGenerator[int, None]:
        for n in range(3):
            yield n


def build(*extensions: type[SchemaExtension]) -> CommitcastSchema:
    return CommitcastSchema(
        query=Query, subscription=Subscription, extensions=list(extensions or (AsyncHook, SyncHook))
    )


async def test_hooks_wrap_each_result_in_order() -> None:
    calls.clear()
    results = await build().subscribe("subscription { count }")
    seen = [result async for result in results]  # type: ignore[union-attr]

    assert [r.data for r in seen] == [{"count": 0}, {"count": 1}, {"count": 2}]
    assert all(r.extensions == {"seen": True} for r in seen)
    assert calls == [
        step
        for n in range(3)
        for step in (f"async enter {n}", "sync enter", "sync exit", "async exit")
    ]


async def test_hooks_see_the_consumer_stop_at_a_result() -> None:
    calls.clear()
    results = await build().subscribe("subscription { count }")

    async def stop_at_first() -> None:
        async for _ in results:  # type: ignore[union-attr]
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        await stop_at_first()
    await results.aclose()  # type: ignore[union-attr]
    # The sync hook's generator is closed at its yield (no exit line); the async one
    # sees the stream closed at that result.
    assert calls[:2] == ["async enter 0", "sync enter"]
    assert calls[2:] == ["async saw GeneratorExit"]


async def test_before_hooks_run_in_their_place_without_their_generator() -> None:
    calls.clear()
    results = await build(AsyncHook, BeforeHook, SyncHook).subscribe("subscription { count }")
    seen = [result async for result in results]  # type: ignore[union-attr]

    assert [r.data for r in seen] == [{"count": 0}, {"count": 1}, {"count": 2}]
    assert calls == [
        step
        for n in range(3)
        for step in (f"async enter {n}", f"before {n}", "sync enter", "sync exit", "async exit")
    ]


async def test_a_failing_before_hook_ends_the_stream_as_with_strawberrys_runner() -> None:
    async def run(schema: strawberry.Schema) -> tuple[list[Any], list[str]]:
        calls.clear()
        results = await schema.subscribe("subscription { count }")
        seen: list[Any] = []
        with contextlib.suppress(RuntimeError):
            async for result in results:  # type: ignore[union-attr]
                seen.append((result.data, [e.message for e in result.errors or []]))
        return seen, [c for c in calls if c != "generator driven"]

    extensions = [AsyncHook, AsyncBeforeHook, SyncHook]
    ours = await run(build(*extensions))
    assert "generator driven" not in calls
    theirs = await run(
        strawberry.Schema(query=Query, subscription=Subscription, extensions=extensions)
    )
    assert "generator driven" in calls
    assert ours == theirs
    assert ours[1][:5] == [
        "async enter 0",
        "async before 0",
        "sync enter",
        "sync exit",
        "async exit",
    ]


def test_our_extensions_take_the_direct_path() -> None:
    from schema.extensions import CloseSession, ErrorCodes
    from schema.extensions_runner import BeforeStreamResult

    assert issubclass(CloseSession, BeforeStreamResult)
    assert issubclass(ErrorCodes, BeforeStreamResult)


class AsyncOperation(SchemaExtension):
    async def on_operation(self) -> AsyncIterator[None]:
        calls.append("async operation enter")
        try:
            yield
        except BaseException as error:
            calls.append(f"async operation saw {type(error).__name__}")
            raise
        calls.append("async operation exit")


class SyncOperation(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        calls.append("sync operation enter")
        yield
        calls.append("sync operation exit")


async def test_operation_hooks_stay_entered_for_the_subscriptions_life() -> None:
    calls.clear()
    schema = CommitcastSchema(
        query=Query, subscription=Subscription, extensions=[AsyncOperation, SyncOperation]
    )
    results = await schema.subscribe("subscription { count }")
    seen = [result.data async for result in results]  # type: ignore[union-attr]

    assert seen == [{"count": 0}, {"count": 1}, {"count": 2}]
    assert calls == [
        "async operation enter",
        "sync operation enter",
        "sync operation exit",
        "async operation exit",
    ]


async def test_operation_hooks_see_the_subscription_closed() -> None:
    calls.clear()
    schema = CommitcastSchema(
        query=Query, subscription=Subscription, extensions=[AsyncOperation, SyncOperation]
    )
    results = await schema.subscribe("subscription { count }")
    async for _ in results:  # type: ignore[union-attr]
        break
    await results.aclose()  # type: ignore[union-attr]
    # Exited last first: the sync hook's generator is closed at its yield, the async
    # one sees the close.
    assert calls == [
        "async operation enter",
        "sync operation enter",
        "async operation saw GeneratorExit",
    ]


# Apart from `calls`: a generator another test left unclosed may be finalized (and
# append to it) while these run.
steps: list[str] = []


class OuterOperation(SchemaExtension):
    async def on_operation(self) -> AsyncIterator[None]:
        steps.append("async operation enter")
        try:
            yield
        except BaseException as error:
            steps.append(f"async operation saw {type(error).__name__}")
            raise
        steps.append("async operation exit")


class InnerOperation(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        steps.append("sync operation enter")
        yield
        steps.append("sync operation exit")


class BoundedOperation(SchemaExtension):
    """Work before and after the operation: the runner calls start_operation and
    end_operation directly, keeping no generator."""

    async def start_operation(self) -> None:
        steps.append("bounded start")

    def end_operation(self, error: BaseException | None) -> None:
        steps.append(f"bounded end {type(error).__name__ if error else None}")

    async def on_operation(self) -> AsyncIterator[None]:
        steps.append("generator driven")  # strawberry's own runner would use this
        yield


class FailingEnd(SchemaExtension):
    def start_operation(self) -> None:
        steps.append("failing start")

    def end_operation(self, error: BaseException | None) -> None:
        raise RuntimeError("end failed")

    def on_operation(self) -> Iterator[None]:
        yield


@strawberry.type
class FailingSubscription:
    @strawberry.subscription
    async def count(self) -> AsyncGenerator[int, None]:
        yield 0
        raise RuntimeError("body failed")


def bounded_schema(*extensions: type[SchemaExtension]) -> CommitcastSchema:
    return CommitcastSchema(query=Query, subscription=Subscription, extensions=list(extensions))


async def test_operation_bounds_run_in_their_place_without_a_generator() -> None:
    steps.clear()
    schema = bounded_schema(OuterOperation, BoundedOperation, InnerOperation)
    results = await schema.subscribe("subscription { count }")
    seen = [result.data async for result in results]  # type: ignore[union-attr]

    assert seen == [{"count": 0}, {"count": 1}, {"count": 2}]
    assert steps == [
        "async operation enter",
        "bounded start",
        "sync operation enter",
        "sync operation exit",
        "bounded end None",
        "async operation exit",
    ]


async def test_operation_bounds_see_the_subscription_closed() -> None:
    steps.clear()
    schema = bounded_schema(OuterOperation, BoundedOperation)
    results = await schema.subscribe("subscription { count }")
    async for _ in results:  # type: ignore[union-attr]
        break
    await results.aclose()  # type: ignore[union-attr]

    assert steps == [
        "async operation enter",
        "bounded start",
        "bounded end GeneratorExit",
        "async operation saw GeneratorExit",
    ]


async def test_operation_bounds_see_the_subscription_cancelled() -> None:
    steps.clear()
    schema = bounded_schema(BoundedOperation)
    results = await schema.subscribe("subscription { count }")
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in results:  # type: ignore[union-attr]
            started.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await results.aclose()  # type: ignore[union-attr]

    assert steps == ["bounded start", "bounded end GeneratorExit"]


async def test_an_end_operation_error_replaces_the_one_in_flight() -> None:
    steps.clear()
    schema = CommitcastSchema(
        query=Query,
        subscription=FailingSubscription,
        extensions=[OuterOperation, FailingEnd, BoundedOperation],
    )
    results = await schema.subscribe("subscription { count }")
    seen: list[Any] = []

    async def consume() -> None:
        async for result in results:  # type: ignore[union-attr]
            seen.append(result.errors[0].message if result.errors else result.data)

    with pytest.raises(RuntimeError, match="end failed"):
        await consume()

    # The body's error is a result (strawberry turns it into one); the hooks then exit
    # normally, last first, and FailingEnd's own error is what the ones before it see
    # and what leaves the operation.
    assert seen == [{"count": 0}, "body failed"]
    assert steps == [
        "async operation enter",
        "failing start",
        "bounded start",
        "bounded end None",
        "async operation saw RuntimeError",
    ]


def test_our_operation_hooks_take_the_direct_path() -> None:
    from schema.extensions import CloseSession, ErrorCodes
    from schema.extensions_runner import OperationBounds
    from schema.limits import ValidationRules, _TokenLimit

    for extension in (CloseSession, ErrorCodes, ValidationRules, _TokenLimit):
        assert issubclass(extension, OperationBounds), extension
    # The limits' work is all at the start: not kept to be ended.
    assert ValidationRules.operation_end_does_nothing
    assert _TokenLimit.operation_end_does_nothing


parse_only: weakref.WeakSet[SchemaExtension] = weakref.WeakSet()


class ParseOnly(SchemaExtension):
    """An extension whose part is over once the operation is parsed."""

    def on_parse(self) -> Iterator[None]:
        parse_only.add(self)
        yield


class StartOnly(SchemaExtension):
    """Bounded, with nothing to do at the end."""

    operation_end_does_nothing = True

    def start_operation(self) -> None:
        parse_only.add(self)
        calls.append("start only")

    def end_operation(self, error: BaseException | None) -> None:
        calls.append("start only ended")  # never called: it says so

    def on_operation(self) -> Iterator[None]:
        self.start_operation()
        yield


async def test_a_streaming_subscription_keeps_only_the_extensions_it_still_uses() -> None:
    calls.clear()
    parse_only.clear()
    schema = build(AsyncOperation, ParseOnly, StartOnly, SyncHook)
    results: Any = await schema.subscribe("subscription { count }")
    first = await results.__anext__()
    assert first.data == {"count": 0}
    gc.collect()
    # Parsed and started, then let go: nothing holds them any more.
    assert list(parse_only) == []
    assert [type(e) for e in results._runner.extensions] == [SyncHook]
    rest = [result.data async for result in results]
    assert rest == [{"count": 1}, {"count": 2}]
    # The stream-result hook ran around every result, and the operation hook still
    # exited at the end.
    assert calls == [
        "async operation enter",
        "start only",
        "sync enter",
        "sync exit",
        "sync enter",
        "sync exit",
        "sync enter",
        "sync exit",
        "async operation exit",
    ]


# -- parsing, validation and execution hooks (PhaseHooks) ------------------------------


class GeneratorPhases(SchemaExtension):
    def on_parse(self) -> Iterator[None]:
        calls.append("generator parse enter")
        yield
        calls.append("generator parse exit")

    async def on_execute(self) -> AsyncIterator[None]:
        calls.append("async generator execute enter")
        try:
            yield
        except BaseException as error:
            calls.append(f"async generator execute saw {type(error).__name__}")
            raise
        calls.append("async generator execute exit")


class FunctionPhases(SchemaExtension):
    def on_validate(self) -> None:  # type: ignore[override]
        calls.append("function validate")

    async def on_execute(self) -> None:  # type: ignore[override]
        calls.append("async function execute")


class FailingExecute(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        calls.append("failing execute enter")
        raise RuntimeError("refused")
        yield  # (a generator)


def strawberrys(*extensions: type[SchemaExtension]) -> strawberry.Schema:
    """The same schema with strawberry's own extension runner."""
    return strawberry.Schema(query=Query, subscription=Subscription, extensions=list(extensions))


async def calls_of(schema: strawberry.Schema, query: str = "{ ok }") -> tuple[list[str], Any]:
    calls.clear()
    result = await schema.execute(query)
    return list(calls), result


@pytest.mark.parametrize(
    "extensions",
    [(GeneratorPhases, FunctionPhases), (FunctionPhases, GeneratorPhases), (FailingExecute,)],
    ids=["generators-first", "functions-first", "failing"],
)
async def test_phase_hooks_run_as_with_strawberrys_runner(
    extensions: tuple[type[SchemaExtension], ...],
) -> None:
    ours, ours_result = await calls_of(build(*extensions, GeneratorPhases))
    theirs, their_result = await calls_of(strawberrys(*extensions, GeneratorPhases))
    assert ours == theirs
    assert ours_result.data == their_result.data
    assert [e.message for e in ours_result.errors or []] == [
        e.message for e in their_result.errors or []
    ]
    assert ours  # (the hooks did run)


def test_synchronous_execution_refuses_an_async_phase_hook_as_strawberrys() -> None:
    def messages(result: Any) -> list[str]:
        return [re.sub(r" at 0x[0-9a-f]+", "", error.message) for error in result.errors]

    ours = build(FunctionPhases).execute_sync("{ ok }")
    assert messages(ours) == messages(strawberrys(FunctionPhases).execute_sync("{ ok }"))
    assert "failed to complete synchronously" in messages(ours)[0]
    # Sync hooks only: run as strawberry's.
    calls.clear()
    assert build(FailingExecute).execute_sync("{ ok }").errors is not None
    assert calls == ["failing execute enter"]


def test_each_class_hook_is_made_into_a_factory_once() -> None:
    from schema.extensions_runner import PhaseHooks, phase_hook

    factory = phase_hook(GeneratorPhases, "on_parse")
    assert factory is not None
    assert phase_hook(GeneratorPhases, "on_parse") is factory
    assert phase_hook(GeneratorPhases, "on_validate") is None
    runner: Any = build(GeneratorPhases).create_extensions_runner(Any, [GeneratorPhases()])
    assert isinstance(runner.parsing(), PhaseHooks)
    assert isinstance(runner.validation(), PhaseHooks)
    assert isinstance(runner.executing(), PhaseHooks)
