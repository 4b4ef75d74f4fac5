"""strawberry's extension runner, with the per-result hooks looked up once per operation.

For every result a subscription streams, strawberry finds the extensions' stream-result
hooks again (an attribute lookup and a new context manager class per extension, with
functools.update_wrapper) and asks every extension for its results: for a subscription
delivering thousands of updates, that was as much work as executing them. The hooks
and the extensions that report results do not change during an operation, so they are
found once here; each result then only enters and exits the hooks it has.

An extension whose stream-result work all happens before the result goes out may also
define `before_stream_result(result)` (plain or async; `BeforeStreamResult`): this
runner then calls it instead of driving its `on_stream_result` generator as a context
manager, which costs several times the work itself per result (an async generator,
contextlib's manager, the event loop's asyncgen bookkeeping). strawberry's own runner
still uses `on_stream_result`, so such an extension defines both, the same.

A subscription's operation hooks stay entered for as long as it lives: strawberry holds
them in an AsyncExitStack (its deque allocates about 0.8 KiB up front), per idle
subscription. `OperationHooks` keeps the list of what it entered instead. An extension
whose operation hook is work before and/or after the operation, with nothing kept in
between, may also define `start_operation()` and `end_operation(error)` (plain or
async; `OperationBounds`): this runner calls them instead of keeping a suspended
generator, its context manager and strawberry's wrapper function per extension for the
subscription's life (about 0.5 KiB each). Like `before_stream_result`, such an
extension defines `on_operation` too, the same, for strawberry's own runner. One whose
`end_operation` does nothing says so (`operation_end_does_nothing = True`): it is then
not kept to be ended.

The parsing, validation and execution hooks are entered once per operation, but
strawberry's context managers for them look every extension's hook up again each time
and wrap it anew: a bound method, contextlib's decorator (functools.update_wrapper) and
an exit stack per hook and phase, about 4 % of the CPU of an `updateCard` request.
`PhaseHooks` makes each extension class's hook into a context-manager factory once and
enters what the factory makes, in the same order, with the same exit semantics.

Once a subscription streams, only the extensions with stream-result hooks are asked for
anything but the operation's end (and, held apart, those that report results or wrap
resolvers): `keep_only_streaming_extensions` lets the others go, about 0.6 KiB per idle
subscription for Commitcast's parse and validation extensions.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Protocol, cast, runtime_checkable

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    OperationContextManager,
    ParsingContextManager,
    StreamResultContextManager,
    ValidationContextManager,
    WrappedHook,
)
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext
from strawberry.utils.await_maybe import await_maybe


@runtime_checkable
class BeforeStreamResult(Protocol):
    def before_stream_result(self, result: Any) -> Awaitable[None] | None: ...


@runtime_checkable
class OperationBounds(Protocol):
    def start_operation(self) -> Awaitable[None] | None:
        """Before the operation (where on_operation's code before its yield runs)."""

    def end_operation(self, error: BaseException | None) -> Awaitable[None] | None:
        """After it, whatever happened: `error` is the exception on its way out (None
        when it ended normally; on_operation's code after a bare yield runs only then).
        Raising replaces that exception, as a hook's own error does; it cannot
        suppress it."""


def has_bounds(extension: SchemaExtension) -> bool:
    """isinstance(extension, OperationBounds), answered once per extension class: a
    runtime-checkable protocol looks its methods up on every check, which for every
    request's extensions was about 2 % of the server's CPU under load."""
    kind = type(extension)
    known = _BOUNDED.get(kind)
    if known is None:
        known = _BOUNDED[kind] = isinstance(extension, OperationBounds)
    return known


_BOUNDED: dict[type[SchemaExtension], bool] = {}


# Per extension, in order: a context-manager hook, or a call made before the result.
StreamHook = WrappedHook | Callable[[Any], Awaitable[None] | None]


class ExtensionsRunner(SchemaExtensionsRunner):
    def __init__(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension] | None = None
    ) -> None:
        super().__init__(execution_context, extensions)
        self._stream_hooks: list[StreamHook] | None = None
        self._reporting = [
            extension
            for extension in self.extensions
            if type(extension).get_results is not SchemaExtension.get_results
        ]

    def operation(self) -> OperationContextManager:
        return OperationHooks(self.extensions)

    def parsing(self) -> ParsingContextManager:
        return cast("ParsingContextManager", PhaseHooks(self.extensions, "on_parse"))

    def validation(self) -> ValidationContextManager:
        return cast("ValidationContextManager", PhaseHooks(self.extensions, "on_validate"))

    def executing(self) -> ExecutingContextManager:
        return cast("ExecutingContextManager", PhaseHooks(self.extensions, "on_execute"))

    def on_stream_result(self, result: Any) -> Any:
        hooks = self._stream_hooks
        if hooks is None:
            hooks = self._stream_hooks = []
            for extension in self.extensions:
                if isinstance(extension, BeforeStreamResult):
                    hooks.append(extension.before_stream_result)
                else:
                    # strawberry's own lookup, once (none or one hook per extension).
                    hooks += StreamResultContextManager([extension], result).hooks
        return StreamResultHooks(hooks, result)

    def keep_only_streaming_extensions(self) -> None:
        """For a subscription that has started streaming: forget the extensions that
        have no stream-result hook. Their part is over (parsing, validation, the source
        stream's creation); an operation hook still due keeps its own reference, as do
        the result reporters (`_reporting`) and the resolver middleware."""
        self.extensions = [
            extension
            for extension in self.extensions
            if isinstance(extension, BeforeStreamResult)
            # (strawberry's test for a hook: on_stream_result overridden)
            or type(extension).on_stream_result is not SchemaExtension.on_stream_result
        ]

    async def get_extensions_results(self, ctx: ExecutionContext) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for extension in self._reporting:
            data.update(await await_maybe(extension.get_results()))
        data.update(ctx.extensions_results)
        return data


class StreamResultHooks:
    """Enters the hooks in order and exits them in reverse, like strawberry's
    AsyncExitStack (an exception a hook suppresses is not seen by the ones before)."""

    __slots__ = ("_entered", "_hooks", "_result")

    def __init__(self, hooks: list[StreamHook], result: Any) -> None:
        self._hooks = hooks
        self._result = result
        self._entered: list[tuple[bool, Any]] = []

    async def __aenter__(self) -> None:
        for hook in self._hooks:
            if not isinstance(hook, WrappedHook):
                done = hook(self._result)  # before_stream_result: nothing to exit
                if done is not None:
                    await done
                continue
            # (A stream-result hook takes the result: strawberry types it loosely.)
            manager: Any = hook.hook(self._result)
            await _enter(hook.is_async, manager, self._entered)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return await _exit(self._entered, error)


# A hook made into a context-manager factory: called with the extension, it returns the
# context manager strawberry would have entered; and whether that one is async.
PhaseHook = tuple[Callable[[SchemaExtension], Any], bool]

_PHASE_HOOKS: dict[tuple[type[SchemaExtension], str], PhaseHook | None] = {}


def phase_hook(kind: type[SchemaExtension], name: str) -> PhaseHook | None:
    """The factory for `kind`'s hook `name` (None where it has none), made once per
    class as strawberry's ExtensionContextManagerBase.get_hook makes it per call: a
    generator becomes contextlib's context manager, a plain or async function one that
    calls it on entry."""
    key = (kind, name)
    if key in _PHASE_HOOKS:
        return _PHASE_HOOKS[key]
    function = getattr(kind, name)
    found: PhaseHook | None
    if function is getattr(SchemaExtension, name):
        found = None
    elif inspect.isgeneratorfunction(function):
        found = (contextlib.contextmanager(function), False)
    elif inspect.isasyncgenfunction(function):
        found = (contextlib.asynccontextmanager(function), True)
    elif inspect.iscoroutinefunction(function):
        found = (_before_async(function), True)
    elif callable(function):
        found = (_before(function), False)
    else:
        raise ValueError(f"Hook {name} on {kind} must be callable, received {function!r}")
    _PHASE_HOOKS[key] = found
    return found


def _before(function: Callable[[SchemaExtension], Any]) -> Callable[[SchemaExtension], Any]:
    @contextlib.contextmanager
    def hook(extension: SchemaExtension) -> Iterator[None]:
        function(extension)
        yield

    return hook


def _before_async(
    function: Callable[[SchemaExtension], Awaitable[Any]],
) -> Callable[[SchemaExtension], Any]:
    @contextlib.asynccontextmanager
    async def hook(extension: SchemaExtension) -> AsyncIterator[None]:
        await function(extension)
        yield

    return hook


class PhaseHooks:
    """strawberry's context manager for one phase (parsing, validation, execution):
    each extension's hook that `name` names, entered in order and exited in reverse
    (see StreamResultHooks); a hook's exception ends the phase with it, and none
    suppresses the phase's own (strawberry's __exit__ returns None too)."""

    __slots__ = ("_entered", "_hooks", "_name", "_stack")

    def __init__(self, extensions: list[SchemaExtension], name: str) -> None:
        self._name = name
        self._hooks: list[tuple[PhaseHook, SchemaExtension]] = []
        for extension in extensions:
            hook = phase_hook(type(extension), name)
            if hook is not None:
                self._hooks.append((hook, extension))
        self._entered: list[tuple[bool, Any]] = []

    # A schema executed synchronously (not the server's path): as strawberry's.
    def __enter__(self) -> None:
        self._stack = contextlib.ExitStack()
        for (factory, is_async), extension in self._hooks:
            if is_async:
                raise RuntimeError(
                    f"SchemaExtension hook {extension}.{self._name} failed to complete "
                    "synchronously."
                )
            self._stack.enter_context(factory(extension))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.__exit__(kind, error, traceback)

    async def __aenter__(self) -> None:
        for (factory, is_async), extension in self._hooks:
            await _enter(is_async, factory(extension), self._entered)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await _exit(self._entered, error)


class OperationHooks(OperationContextManager):
    """strawberry's operation context manager, without its exit stack: the same hooks,
    entered in order and exited in reverse (see StreamResultHooks), and the bounds of
    the extensions that have them (`OperationBounds`) called in their place."""

    __slots__ = ("_entered", "_extensions")

    def __init__(self, extensions: list[SchemaExtension]) -> None:
        # The hooks are looked up at entry, one extension at a time (strawberry's
        # lookup builds a wrapper function per hook, kept for the operation's life).
        super().__init__([])
        self._extensions = extensions

    async def __aenter__(self) -> None:
        self._entered: list[Entered] = []
        for extension in self._extensions:
            if has_bounds(extension):
                bounded = cast("OperationBounds", extension)
                started = bounded.start_operation()
                if started is not None:
                    await started
                if not getattr(type(extension), "operation_end_does_nothing", False):
                    self._entered.append(bounded)
                continue
            hook = self.get_hook(extension)
            if hook is not None:
                manager: Any = hook.hook()
                await _enter(hook.is_async, manager, self._entered)
        # Only what was entered is needed to exit: an extension with nothing left to do
        # may go with the runner's list (ExtensionsRunner.keep_only_streaming_extensions).
        self._extensions = []

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # (strawberry's returns None as well: a hook never suppresses the operation's
        # exception here.)
        await _exit(self._entered, error)


# What was entered, to exit last first: (is_async, context manager), or an extension
# whose end_operation is due.
Entered = tuple[bool, Any] | OperationBounds


async def _enter(is_async: bool, manager: Any, entered: list[Any]) -> None:
    if is_async:
        await manager.__aenter__()
    else:
        manager.__enter__()
    entered.append((is_async, manager))


async def _exit(entered: list[Any], error: BaseException | None) -> bool:
    """Exit what `entered` holds, last first; True when a hook suppressed `error`."""
    pending = error  # the exception still on its way out (None: none)
    while entered:
        top: Entered = entered.pop()
        if not isinstance(top, tuple):
            try:
                ended = top.end_operation(pending)
                if ended is not None:
                    await ended
            except BaseException as raised:  # as a hook's own error: replaces it
                pending = raised
            continue
        is_async, manager = top
        exit_args = (type(pending), pending, pending.__traceback__) if pending else (None,) * 3
        try:
            if is_async:
                handled = await manager.__aexit__(*exit_args)
            else:
                handled = manager.__exit__(*exit_args)
        except BaseException as raised:  # a hook's own error replaces the one in flight
            pending = raised
            continue
        if handled and pending is not None:
            pending = None  # suppressed by this hook
    if pending is None:
        return error is not None
    if pending is error:
        return False
    raise pending
