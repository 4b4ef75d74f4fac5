"""strawberry's `Schema._stream` (what `schema.stream` and `schema.subscribe` return),
as an object instead of an async generator.

A subscription keeps its stream for as long as it lives. strawberry's is an async
generator suspended inside two more (its `aclosing` context managers, each a generator
with contextlib's manager and the event loop's record of it): about 0.7 KiB more per
idle subscription than this object, and every delivered result resumes all of them.
This object takes the same steps, in the same order, holding only what it needs
between results, and waits for the next event in one frame:

- the extensions' operation hooks are entered before parsing and exited when the
  stream ends, with the exception it ends with (GeneratorExit when the consumer closes
  it early, as for a generator);
- a pre-execution error (parse, validation, operation type) is the only result;
- a query or mutation is strawberry's own `_stream_non_subscription`;
- a subscription's `on_execute` hooks wrap creating its source stream; each result goes
  through strawberry's result handling; an exception from the stream (or the hooks)
  becomes one last result with that error;
- each result's stream-result hooks are entered before it is handed out and exited
  when the consumer asks for the next one (or closes the stream), after it used it.

A subscription's steps are graphql-core's `subscribe`, taken here rather than called:
graphql-core maps the resolver's source stream to results with one more async
generator (`map_source_to_response_event`: the generator, its `aclosing`, its callback
closure and the event loop's weak reference to it, about 0.5 KiB per idle subscription,
measured with tracemalloc). This object keeps the subscription's executor and the
source's iterator instead, and maps each event as graphql-core's
`execute_subscription_event` does: a per-event copy of the executor executes the
operation with the event as root value. The executor, kept for as long as the
subscription lives, lets go of what only an execution uses once the source stream
exists (schema.execution). Ended or closed, the stream closes the source as
graphql-core's `aclosing` does (its `aclose()`, if it has one; an error while closing is
not the stream's).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import suppress
from typing import Any, cast

from graphql import DocumentNode, Executor, GraphQLError, create_source_event_stream
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.execution.middleware import MiddlewareManager
from graphql.language import OperationType as GraphQLOperationType
from strawberry.exceptions import MissingQueryError
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.schema import Schema, _coerce_error, _coerce_pre_execution_error
from strawberry.types import ExecutionContext
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from schema.execution import SubscriptionSafeExecutionContext
from schema.extensions_runner import ExtensionsRunner

# The stream's states.
_START, _STREAMING, _LAST, _DONE = range(4)
# What _start returns when the subscription's source is ready to be read.
_SUBSCRIBED = object()


class OperationStream:
    """`async for result in stream` / `await stream.aclose()`, like strawberry's."""

    __slots__ = (
        "_context",
        "_executor",
        "_middleware",
        "_operation_extensions",
        "_operation_hooks",
        "_result_hooks",
        "_runner",
        "_running",
        "_schema",
        "_source",
        "_state",
        "_subscription",
    )

    def __init__(
        self,
        schema: Schema,
        context: ExecutionContext,
        runner: SchemaExtensionsRunner,
        middleware: MiddlewareManager,
        operation_extensions: dict[str, Any] | None,
    ) -> None:
        self._schema = schema
        self._context = context
        self._runner = runner
        self._middleware = middleware
        self._operation_extensions = operation_extensions
        self._state = _START
        self._operation_hooks: Any = None
        # The hooks of the result last handed out, exited before the next one.
        self._result_hooks: Any = None
        # The subscription's source (its resolver's event iterator), or strawberry's
        # results for a query.
        self._source: AsyncIterator[Any] | None = None
        # The subscription's executor: each event is executed by a per-event copy.
        self._executor: Executor[Any] | None = None
        self._subscription = False
        self._running = False

    def __aiter__(self) -> OperationStream:
        return self

    async def __anext__(self) -> Any:
        # An idle subscription waits in here for its next event: this one frame, not a
        # chain of them (each is kept as long as it waits).
        if self._running:
            raise RuntimeError("anext(): the stream is already being iterated")
        self._running = True
        try:
            try:
                if self._state == _START:
                    started = await self._start()
                    if started is not _SUBSCRIBED:
                        return started
                elif not (self._state == _STREAMING and self._subscription):
                    await self._exit_result_hooks(None)  # (a subscription's: below)
                if self._state == _STREAMING:
                    source = self._source
                    assert source is not None
                    if not self._subscription:  # a query's or mutation's results
                        return await self._with_result_hooks(await source.__anext__())
                    # As in strawberry's loop: an exception from the previous result's hooks,
                    # the source, executing the event or the result handling becomes one
                    # last result with that error (graphql-core does not handle exceptions
                    # raised while executing). Only the source's end ends the stream.
                    try:
                        await self._exit_result_hooks(None)
                        try:
                            payload = await source.__anext__()
                        except StopAsyncIteration:
                            pass
                        else:
                            return await self._hand_out(await self._execute(payload))
                    except Exception as exc:
                        await self._close_source()
                        self._state = _LAST
                        return await self._hand_out(
                            GraphQLExecutionResult(None, [_coerce_error(exc)])
                        )
                    raise StopAsyncIteration  # the source ended
            except StopAsyncIteration:
                await self._end(None)
                raise
            except BaseException as error:
                await self._end(error)
                raise
            await self._end(None)
            raise StopAsyncIteration
        finally:
            self._running = False

    async def aclose(self) -> None:
        if self._running:
            # As an async generator's: the one iterating it must stop first (strawberry's
            # legacy protocol closes, ignores this, then cancels the iterating task).
            raise RuntimeError("aclose(): the stream is being iterated")
        if self._state == _DONE:
            return
        if self._state == _START:
            self._state = _DONE  # never started: nothing entered
            return
        closing = GeneratorExit()
        try:
            await self._exit_result_hooks(closing)
        finally:
            await self._end(closing)

    # -- the steps -------------------------------------------------------------------

    async def _start(self) -> Any:
        runner, context, schema = self._runner, self._context, self._schema
        self._state = _LAST
        hooks = runner.operation()
        await hooks.__aenter__()
        self._operation_hooks = hooks  # (entered: exited by _end)
        try:
            initial_error = await schema._prepare_operation_async(
                context=context, extensions_runner=runner
            )
        except (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError) as e:
            initial_error = PreExecutionError(data=None, errors=[_coerce_pre_execution_error(e)])
        if initial_error:
            initial_error.extensions = await runner.get_extensions_results(context)
            return await self._hand_out(initial_error)
        if context.operation_type is not OperationType.SUBSCRIPTION:
            source = schema._stream_non_subscription(
                context, runner, self._middleware, self._operation_extensions
            )
            self._source = source
            self._state = _STREAMING
            return await self._with_result_hooks(await source.__anext__())
        document = context.graphql_document
        assert document is not None  # (parsed by _prepare_operation_async)
        try:
            async with runner.executing():
                found = await self._subscribe(document)
        except Exception as exc:  # an on_execute hook's (as strawberry: one result)
            return await self._hand_out(GraphQLExecutionResult(None, [_coerce_error(exc)]))
        if isinstance(found, GraphQLExecutionResult):  # e.g. variables that do not coerce
            return await self._hand_out(PreExecutionError(data=None, errors=found.errors))
        executor, events = found
        try:
            # (Where graphql-core's mapping generator asks for the iterator: first read.)
            events_iterator = aiter(events)
        except Exception as exc:  # as strawberry's loop: one last result
            return await self._hand_out(GraphQLExecutionResult(None, [_coerce_error(exc)]))
        if isinstance(executor, SubscriptionSafeExecutionContext):
            executor.keep_only_shared_state()  # (it only makes per-event copies now)
        if isinstance(runner, ExtensionsRunner):
            runner.keep_only_streaming_extensions()  # (parsing and validation are done)
        self._executor = executor
        self._source = events_iterator
        self._subscription = True
        self._state = _STREAMING
        return _SUBSCRIBED

    async def _subscribe(
        self, document: DocumentNode
    ) -> GraphQLExecutionResult | tuple[Executor[Any], AsyncIterable[Any]]:
        """graphql-core's `subscribe`, up to mapping the source stream: its executor and
        the resolver's source stream, or the result with the errors."""
        schema, context = self._schema, self._context
        # (strawberry always passes its schema's class: graphql-core's default is unused.)
        executor = schema.execution_context_class.build(
            schema._schema,
            document,
            root_value=context.root_value,
            context_value=context.context,
            raw_variable_values=context.variables,
            operation_name=context.operation_name,
            middleware=self._middleware,
            operation_extensions=self._operation_extensions,
        )
        if isinstance(executor, list):  # the errors: no executor could be built
            return GraphQLExecutionResult(None, errors=executor)
        if executor.operation.operation is not GraphQLOperationType.SUBSCRIPTION:
            raise GraphQLError("Expected subscription operation.")
        found = create_source_event_stream(executor)
        if executor.is_awaitable(found):
            found = await found
        if not executor.is_async_iterable(found):
            return cast("GraphQLExecutionResult", found)  # the subscribe resolver's error
        # (The stream itself without an abort signal, which strawberry never passes.)
        return executor, executor.cancellable_iterable(found)

    async def _execute(self, payload: Any) -> Any:
        """graphql-core's `execute_subscription_event` for one event."""
        executor = self._executor
        assert executor is not None
        try:
            result = executor.build_per_event_executor(payload).execute_operation(False)
            if executor.is_awaitable(result):
                result = await result
        except StopAsyncIteration as exc:  # as it leaves graphql-core's mapping generator
            raise RuntimeError("async generator raised StopAsyncIteration") from exc
        return result

    async def _hand_out(self, result: Any) -> Any:
        handled = await self._schema._handle_execution_result(self._context, result, self._runner)
        return await self._with_result_hooks(handled)

    async def _with_result_hooks(self, result: Any) -> Any:
        hooks = self._runner.on_stream_result(result)
        await hooks.__aenter__()
        self._result_hooks = hooks
        return result

    # -- the end ---------------------------------------------------------------------

    async def _exit_result_hooks(self, error: BaseException | None) -> None:
        hooks, self._result_hooks = self._result_hooks, None
        await _exit(hooks, error)

    async def _close_source(self) -> None:
        source, self._source = self._source, None
        self._executor = None
        # As graphql-core's aclosing closes a subscription's source: one without aclose()
        # is left as it is; an error while closing is not the stream's.
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with suppress(Exception):
                await aclose()

    async def _end(self, error: BaseException | None) -> None:
        if self._state == _DONE:
            return
        self._state = _DONE
        try:
            await self._close_source()
        finally:
            hooks, self._operation_hooks = self._operation_hooks, None
            await _exit(hooks, error)


async def _exit(hooks: Any, error: BaseException | None) -> None:
    """Exit entered `hooks` (if any) as `async with` would, with `error` on its way out."""
    if hooks is None:
        return
    if error is None:
        await hooks.__aexit__(None, None, None)
    else:
        await hooks.__aexit__(type(error), error, error.__traceback__)
