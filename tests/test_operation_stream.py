"""schema/operation_stream.py does what strawberry's `Schema._stream` generator does:
the same results and the same extension hooks, in the same order, for subscriptions
that end, fail or are closed early, pre-execution errors, and queries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest
import strawberry
from strawberry.extensions import SchemaExtension

from schema import CommitcastSchema
from schema.operation_stream import OperationStream


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "hi"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, upto: int, fail_at: int = -1) -> AsyncGenerator[int, None]:
        for n in range(upto):
            if n == fail_at:
                raise RuntimeError("the source broke")
            yield n

    @strawberry.subscription
    async def forever(self) -> AsyncGenerator[int, None]:
        WAITING.set()
        await asyncio.Event().wait()
        yield 0  # pragma: no cover - never reached


# Set by `forever` once it waits (the test's own, made in its loop).
WAITING = asyncio.Event()


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
    }
    return CommitcastSchema(**options), Reference(**options)


async def run(schema: CommitcastSchema, query: str, take: int | None = None) -> list[str]:
    Recorder.log = []
    stream = await schema.stream(query)
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
    ("query", "take"),
    [
        ("subscription { count(upto: 3) }", None),  # runs to its end
        ("subscription { count(upto: 5, failAt: 2) }", None),  # the source raises
        ("subscription { count(upto: 5) }", 2),  # closed early by the consumer
        ("subscription { count(upto: 0) }", None),  # nothing to send
        ("subscription { nope }", None),  # a validation error
        ("subscription { count(upto: 2", None),  # a syntax error
        ("subscription($n: Int!) { count(upto: $n) }", None),  # a variable missing
        ("{ hello }", None),  # a query over a stream
    ],
)
async def test_the_same_results_and_hooks_as_strawberrys_stream(
    query: str, take: int | None
) -> None:
    ours, reference = schemas()
    expected = await run(reference, query, take)
    assert await run(ours, query, take) == expected
    assert expected[0] == "operation:enter"
    assert "operation:exit" in expected


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
