"""schema/operation_stream.py does what strawberry's `Schema._stream` generator does:
the same results and the same extension hooks, in the same order, for subscriptions
that end, fail or are closed early, pre-execution errors, and queries. A subscription's
source stream is closed as graphql-core's `subscribe` closes it, and an idle one holds
no more of graphql-core than its executor (without per-event state) and the source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from types import AsyncGeneratorType
from typing import Any, ClassVar

import pytest
import strawberry
from graphql import parse
from strawberry.extensions import SchemaExtension

from schema import CommitcastSchema
from schema.execution import SubscriptionSafeExecutionContext
from schema.operation_stream import OperationStream


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "hi"


@strawberry.type
class Pair:
    n: int
    fail: strawberry.Private[bool]

    @strawberry.field
    def double(self) -> int:
        if self.fail:
            raise ValueError("no double today")
        return 2 * self.n


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(
        self, upto: int, fail_at: int = -1, null_at: int = -1
    ) -> AsyncGenerator[int, None]:
        try:
            for n in range(upto):
                if n == fail_at:
                    raise RuntimeError("the source broke")
                yield None if n == null_at else n  # type: ignore[misc]
        finally:
            Recorder.log.append("source:closed")

    @strawberry.subscription
    async def pairs(self, upto: int, fail_at: int = -1) -> AsyncGenerator[list[Pair], None]:
        for n in range(upto):
            yield [Pair(n=n, fail=n == fail_at), Pair(n=n + 1, fail=False)]

    @strawberry.subscription
    def not_iterable(self) -> AsyncGenerator[int, None]:
        return 3  # type: ignore[return-value]

    @strawberry.subscription
    async def awaited(self, upto: int) -> AsyncIterator[int]:
        return Events(upto)  # type: ignore[return-value]

    @strawberry.subscription
    async def awaited_not_iterable(self) -> AsyncIterator[int]:
        return 3  # type: ignore[return-value]

    @strawberry.subscription
    def refuses(self) -> AsyncGenerator[int, None]:
        raise RuntimeError("no events for you")

    @strawberry.subscription
    def events(self, upto: int, kind: str = "iterable") -> AsyncIterator[int]:
        made = {"iterable": Events, "unclosable": Unclosable}[kind]
        return made(upto)  # type: ignore[return-value]

    @strawberry.subscription
    async def forever(self) -> AsyncGenerator[int, None]:
        WAITING.set()
        await asyncio.Event().wait()
        yield 0  # pragma: no cover - never reached


# Set by `forever` once it waits (the test's own, made in its loop).
WAITING = asyncio.Event()


class Events:
    """An async iterable that is not its own iterator (graphql-core reads and closes
    the iterator `aiter` returns)."""

    def __init__(self, upto: int) -> None:
        self.upto = upto

    def __aiter__(self) -> EventsIterator:
        Recorder.log.append("source:aiter")
        return EventsIterator(self.upto)


class EventsIterator:
    def __init__(self, upto: int) -> None:
        self.left = list(range(upto))

    def __aiter__(self) -> EventsIterator:
        return self

    async def __anext__(self) -> int:
        if not self.left:
            raise StopAsyncIteration
        return self.left.pop(0)

    async def aclose(self) -> None:
        Recorder.log.append("source:closed")


class Unclosable:
    """An async iterator without aclose() (graphql-core leaves it as it is)."""

    def __init__(self, upto: int) -> None:
        self.left = list(range(upto))

    def __aiter__(self) -> Unclosable:
        return self

    async def __anext__(self) -> int:
        if not self.left:
            raise StopAsyncIteration
        return self.left.pop(0)


class Recorder(SchemaExtension):
    """Logs every hook it passes, in order, into the class-wide `log`."""

    log: ClassVar[list[str]] = []

    def on_operation(self) -> Iterator[None]:
        self.log.append("operation:enter")
        try:
            yield
        finally:
            self.log.append("operation:exit")

    def on_parse(self) -> Iterator[None]:
        self.log.append("parse")
        yield

    def on_validate(self) -> Iterator[None]:
        self.log.append("validate")
        yield

    def on_execute(self) -> Iterator[None]:
        self.log.append("execute:enter")
        yield
        self.log.append("execute:exit")

    async def on_stream_result(self, result: Any) -> AsyncIterator[None]:  # type: ignore[override]
        self.log.append(f"result:enter {describe(result)}")
        yield
        self.log.append("result:exit")


def describe(result: Any) -> str:
    errors = [error.message for error in result.errors or ()]
    return f"{result.data} {errors}"


class Reference(CommitcastSchema):
    """The same schema, streaming with strawberry's own generator."""

    stream = strawberry.Schema.stream  # type: ignore[assignment]


def schemas() -> tuple[CommitcastSchema, CommitcastSchema]:
    options: dict[str, Any] = {
        "query": Query,
        "subscription": Subscription,
        "extensions": [Recorder],
        "execution_context_class": SubscriptionSafeExecutionContext,  # (as schema's)
    }
    return CommitcastSchema(**options), Reference(**options)


async def run(
    schema: CommitcastSchema,
    query: str,
    take: int | None = None,
    variables: dict[str, Any] | None = None,
) -> list[str]:
    Recorder.log = []
    stream = await schema.stream(query, variable_values=variables)
    seen: list[str] = []
    try:
        async for result in stream:
            seen.append(f"got {describe(result)}")
            Recorder.log.append(seen[-1])
            if take is not None and len(seen) >= take:
                break
    finally:
        await stream.aclose()
    Recorder.log.append("closed")
    return list(Recorder.log)


@pytest.mark.parametrize(
    ("query", "take", "variables"),
    [
        ("subscription { count(upto: 3) }", None, None),  # runs to its end
        ("subscription { count(upto: 5, failAt: 2) }", None, None),  # the source raises
        ("subscription { count(upto: 5, failAt: 0) }", None, None),  # ... at once
        ("subscription { count(upto: 3, nullAt: 1) }", None, None),  # an event's error
        ("subscription { pairs(upto: 3, failAt: 1) { n double } }", None, None),  # lists
        ("subscription { count(upto: 5) }", 2, None),  # closed early by the consumer
        ("subscription { count(upto: 5) }", 1, None),  # ... after its first result
        ("subscription { count(upto: 0) }", None, None),  # nothing to send
        ("subscription { nope }", None, None),  # a validation error
        ("subscription { count(upto: 2", None, None),  # a syntax error
        ("subscription($n: Int!) { count(upto: $n) }", None, None),  # a variable missing
        ("subscription($n: Int!) { count(upto: $n) }", None, {"n": "x"}),  # not an Int
        ("subscription($n: Int!) { count(upto: $n) }", None, {"n": 2}),
        ("subscription { notIterable }", None, None),  # the resolver's result is no stream
        ("subscription { awaitedNotIterable }", None, None),  # ... once awaited
        ("subscription { refuses }", None, None),  # the resolver raises
        ("subscription { awaited(upto: 2) }", None, None),  # an awaited async iterable
        ("subscription { awaited(upto: 3) }", 1, None),
        ("subscription { events(upto: 2) }", None, None),  # an iterable, not an iterator
        ('subscription { events(upto: 2, kind: "unclosable") }', None, None),  # no aclose
        ('subscription { events(upto: 3, kind: "unclosable") }', 1, None),
        ("{ hello }", None, None),  # a query over a stream
    ],
)
async def test_the_same_results_and_hooks_as_strawberrys_stream(
    query: str, take: int | None, variables: dict[str, Any] | None
) -> None:
    ours, reference = schemas()
    expected = await run(reference, query, take, variables)
    assert await run(ours, query, take, variables) == expected
    assert expected[0] == "operation:enter"
    assert "operation:exit" in expected


@pytest.mark.parametrize("take", [None, 1])
async def test_the_source_is_closed_before_the_operation_hooks_exit(take: int | None) -> None:
    ours, _ = schemas()
    log = await run(ours, "subscription { count(upto: 2) }", take)
    assert log.index("source:closed") < log.index("operation:exit")
    assert log.count("source:closed") == 1


async def test_the_stream_is_the_lean_object_and_may_be_closed_before_it_starts() -> None:
    ours, _ = schemas()
    Recorder.log = []
    stream = await ours.stream("subscription { count(upto: 1) }")
    assert isinstance(stream, OperationStream)
    await stream.aclose()
    assert Recorder.log == []  # nothing was entered, so nothing is exited
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_a_stream_being_iterated_refuses_to_close_as_a_generator_does() -> None:
    """strawberry's legacy graphql-ws protocol closes a stream its task is iterating,
    ignores the RuntimeError, then cancels the task: the hooks exit once, then."""
    logs = []
    for schema in schemas():
        Recorder.log = []
        WAITING.clear()
        stream = await schema.stream("subscription { forever }")
        waiting = asyncio.create_task(anext(stream))
        async with asyncio.timeout(5):
            await WAITING.wait()
        with pytest.raises(RuntimeError):
            await stream.aclose()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await stream.aclose()  # finished: nothing more
        logs.append(list(Recorder.log))
    ours, reference = logs
    assert ours == reference
    assert ours.count("operation:exit") == 1


async def test_an_idle_subscription_holds_its_source_and_a_lean_executor() -> None:
    """Waiting for its next event, the stream holds the resolver's own event stream
    (no graphql-core mapping generator) and an executor without per-event state."""
    ours, _ = schemas()
    Recorder.log = []
    WAITING.clear()
    stream = await ours.stream("subscription { forever }")
    assert isinstance(stream, OperationStream)
    waiting = asyncio.create_task(anext(stream))
    try:
        async with asyncio.timeout(5):
            await WAITING.wait()
        source = stream._source
        assert isinstance(source, AsyncGeneratorType)
        assert source.ag_code.co_name == "forever"  # the resolver's, not a wrapper
        executor = stream._executor
        assert isinstance(executor, SubscriptionSafeExecutionContext)
        # Its per-execution containers: the empty ones every subscription shares.
        other = SubscriptionSafeExecutionContext.build(ours._schema, parse("{ hello }"))
        assert isinstance(other, SubscriptionSafeExecutionContext)
        other.keep_only_shared_state()
        for name in SubscriptionSafeExecutionContext.EXECUTION_STATE:
            assert getattr(executor, name) is getattr(other, name), name
    finally:
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert stream._source is None  # closed with the stream
    assert stream._executor is None
    assert Recorder.log[-1] == "operation:exit"
