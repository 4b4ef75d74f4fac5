"""A read-only REPEATABLE READ snapshot run on asyncpg directly (PostgreSQL).

A delivery's reload (schema.shared_reads) reads a record and the viewers' memberships in
one snapshot: BEGIN, two or three SELECTs, ROLLBACK. Through an AsyncSession that took
0.69 to 0.71 ms of CPU per snapshot of a card and its board's memberships; here 0.33 to
0.34 ms (alternating blocks of 2,000 in one process): SQLAlchemy's session, ORM
compilation, execution context and result around each statement cost more than the
statements. What stays SQLAlchemy's: the pool (checkout events, invalidation), the
statements (built with SQLAlchemy and compiled here once per statement object) and the
column types' conversions (each column's result processor, e.g. UTCDateTime and the
role enum).

`rows(statement, parameters)` answers as `AsyncSession.execute(statement).all()` would
for the shapes the loaders and the driver writes use: `select(Model)` gives one-element
tuples of Model instances (made as the ORM makes loaded ones: without calling
`__init__`, every column attribute set; not attached to any session, relationships not
loaded), `select(Model, column, ...)` tuples of an instance and the columns' values, and
a select of table columns tuples of their values. Anything else is refused (TypeError).

DriverWrite is the same on a read-write READ COMMITTED transaction that commits (a
write session's isolation): `execute` also runs an UPDATE whose RETURNING names table
columns, and `fetch` a statement in asyncpg's own text (schema.mutations.card_update).

Errors come as SQLAlchemy's would (DBAPIError; a connection PostgreSQL dropped is
invalidated and says so), so read_retrying_stale runs a read again on a fresh one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from sqlalchemy import Column, Select, Update, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import ColumnProperty, InstrumentedAttribute, Mapper
from sqlalchemy.sql.schema import CallableColumnDefault
from sqlalchemy.types import TypeEngine
from sqlalchemy.util import greenlet_spawn

from models.database import errors_as_sqlalchemys
from models.kept_connections import give_back

Processor = Callable[[Any], Any] | None
# What `rows` runs: a SELECT of any columns, or an UPDATE (DriverWrite.execute).
Statement = Select[*tuple[Any, ...]] | Update


@dataclass(slots=True)
class _Plan:
    """How one statement runs on the driver: its text, its parameters in placeholder
    order (with their values fixed at compile time and bind processors), and how a
    record becomes a row."""

    sql: str
    names: tuple[str, ...]
    constants: Mapping[str, Any]
    binds: tuple[Processor, ...]
    # The selected columns' types, and what the dialect makes of them: known at the
    # first run (some result processors depend on the type PostgreSQL describes).
    types: tuple[TypeEngine[Any], ...]
    # The mapped class and its attribute per column, for select(Model) and
    # select(Model, column, ...): the first len(keys) columns are the instance's, the rest
    # come after it as values. None for columns alone.
    mapper: Mapper[Any] | None
    keys: tuple[str, ...]
    results: tuple[Processor, ...] | None = None
    # An UPDATE's columns set by their Python `onupdate` where not given (SQLAlchemy
    # calls them with the execution context: here there is none).
    defaults: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)

    def describe(self, dialect: Dialect, type_oids: list[int]) -> None:
        """Set the result processors, from the type of each column PostgreSQL
        describes (as SQLAlchemy passes a cursor's description)."""
        self.results = tuple(
            type_.dialect_impl(dialect).result_processor(dialect, oid)
            for type_, oid in zip(self.types, type_oids, strict=True)
        )

    def arguments(self, parameters: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, process in zip(self.names, self.binds, strict=True):
            if name in parameters:
                value = parameters[name]
            elif name in self.defaults:
                value = self.defaults[name](None)
            else:
                value = self.constants[name]
            values.append(value if process is None else process(value))
        return values

    def row(self, record: Any) -> tuple[Any, ...]:
        assert self.results is not None  # (described before the first row)
        values = [
            value if process is None else process(value)
            for value, process in zip(record, self.results, strict=True)
        ]
        if self.mapper is None:
            return tuple(values)
        instance = self.mapper.class_manager.new_instance()
        width = len(self.keys)
        instance.__dict__.update(zip(self.keys, values[:width], strict=True))
        return (instance, *values[width:])


# Built once per statement object: the loaders' statements are themselves built once
# (schema.loaders), so this stays small; it is cleared if it ever grows past the limit.
_PLANS: dict[int, tuple[Statement, _Plan]] = {}
_PLANS_LIMIT = 512


def _plan(statement: Statement, dialect: Dialect) -> _Plan:
    found = _PLANS.get(id(statement))
    if found is not None and found[0] is statement:
        return found[1]
    plan = _compile(statement, dialect)
    if len(_PLANS) >= _PLANS_LIMIT:
        _PLANS.clear()
    # (The statement is kept with its plan: an id is only unique among live objects.)
    _PLANS[id(statement)] = (statement, plan)
    return plan


def _compile(statement: Statement, dialect: Dialect) -> _Plan:
    columns, mapper, keys = _shape(statement)
    compiled = statement.compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    binds = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    types = tuple(column.type for column in columns)
    constants = {name: value for name, value in compiled.params.items() if value is not None}
    defaults = {
        column.key: column.onupdate.arg
        for column in compiled.update_prefetch
        if isinstance(column.onupdate, CallableColumnDefault)
    }
    return _Plan(compiled.string, names, constants, binds, types, mapper, keys, defaults=defaults)


def _shape(
    statement: Statement,
) -> tuple[list[Any], Mapper[Any] | None, tuple[str, ...]]:
    """The columns a statement returns, and the mapper and attribute keys of the entity
    its first columns make (None, () for columns alone)."""
    if isinstance(statement, Update):
        returned = list(statement.exported_columns)
        if not all(isinstance(column, Column) for column in returned):
            raise TypeError(f"a driver write's UPDATE returns table columns, not {statement}")
        return returned, None, ()
    columns = list(statement.selected_columns)
    exprs = [description["expr"] for description in statement.column_descriptions]
    entity = statement.column_descriptions[0].get("entity")
    if entity is not None and exprs[0] is entity and all(_is_column(e) for e in exprs[1:]):
        mapper: Mapper[Any] = inspect(entity)
        width = len(columns) - (len(exprs) - 1)
        keys = tuple(mapper.get_property_by_column(column).key for column in columns[:width])
        return columns, mapper, keys
    if all(_is_column(expr) for expr in exprs):
        return columns, None, ()
    raise TypeError(
        "a driver snapshot runs select(Model), select(Model, column, ...) or a select of "
        f"table columns, not {statement}"
    )


def _is_column(expr: Any) -> bool:
    """A table column, or a mapped class's attribute for one (Membership.role)."""
    if isinstance(expr, InstrumentedAttribute):
        return isinstance(expr.property, ColumnProperty) and isinstance(expr.expression, Column)
    return isinstance(expr, Column)


def driver_engine(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine | None:
    """The engine `sessions` bind to, where it is PostgreSQL on asyncpg: what
    DriverSnapshot and DriverWrite run on. None otherwise (SQLite: sessions)."""
    bind = sessions.kw.get("bind")
    if (
        isinstance(bind, AsyncEngine)
        and bind.dialect.name == "postgresql"
        and bind.dialect.driver == "asyncpg"
    ):
        return bind
    return None


class DriverSnapshot:
    """One REPEATABLE READ, READ ONLY transaction on a pooled connection's asyncpg
    driver: `await DriverSnapshot.open(engine)`, then `rows(...)` any number of times
    (one at a time), then `close()` (which rolls back and returns the connection)."""

    def __init__(self, dialect: Dialect, raw: Any, transaction: Any) -> None:
        self._dialect = dialect
        self._raw = raw
        self._driver = raw.driver_connection
        self._transaction = transaction
        # Why the connection cannot be trusted any more (dropped, or a statement
        # interrupted half-way): close() then invalidates it instead of rolling back.
        self._broken: BaseException | None = None
        # Committed (DriverWrite.commit): close() has nothing to roll back.
        self._committed = False

    # The transaction it runs (asyncpg's Connection.transaction options).
    TRANSACTION: ClassVar[Mapping[str, Any]] = {"isolation": "repeatable_read", "readonly": True}

    @classmethod
    async def open(cls, engine: AsyncEngine) -> Self:
        raw = await engine.raw_connection()
        try:
            driver: Any = raw.driver_connection
            # The BEGIN is the connection's first use: on one PostgreSQL dropped it
            # fails here, as DBAPIError with connection_invalidated.
            with errors_as_sqlalchemys("BEGIN", (), driver, raw.invalidate):
                transaction = driver.transaction(**cls.TRANSACTION)
                await transaction.start()
        except BaseException:
            await give_back(raw)
            raise
        return cls(engine.dialect, raw, transaction)

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    async def rows(
        self, statement: Statement, parameters: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        plan = _plan(statement, self._dialect)
        arguments = plan.arguments(parameters)
        with errors_as_sqlalchemys(plan.sql, arguments, self._driver, self._break):
            if plan.results is None:
                prepared = await self._driver.prepare(plan.sql)
                plan.describe(self._dialect, [a.type.oid for a in prepared.get_attributes()])
                records = await prepared.fetch(*arguments)
            else:
                records = await self._driver.fetch(plan.sql, *arguments)
        return [plan.row(record) for record in records]

    def _break(self, exc: BaseException) -> None:
        self._broken = exc

    @property
    def renewable(self) -> bool:
        """Whether `renew` may run: a read-only snapshot whose connection is sound."""
        return self.RENEW is not None and self._broken is None and not self._committed

    # What `renew` sends: this snapshot's end and the next one's BEGIN, as asyncpg's
    # Transaction would send them (TRANSACTION). None: not renewable (DriverWrite).
    RENEW: ClassVar[str | None] = "ROLLBACK; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    async def renew(self) -> None:
        """End this snapshot and begin the next on the same connection, in one round
        trip (models.kept_snapshots). The next snapshot is taken at its first statement,
        not at its BEGIN (REPEATABLE READ), so it is no older than one opened then. The
        transaction stays this object's: `close()` rolls back whichever is open."""
        if self.RENEW is None or not self.renewable:
            raise RuntimeError("only a sound read-only snapshot can be renewed")
        with errors_as_sqlalchemys(self.RENEW, (), self._driver, self._break):
            await self._driver.execute(self.RENEW)

    async def close(self) -> None:
        """Roll back and give the connection back to the pool. A connection that broke,
        or whose ROLLBACK failed, is invalidated instead: never pooled with a
        transaction open."""
        try:
            if self._broken is None and not self._committed:
                try:
                    await self._transaction.rollback()
                except BaseException as exc:
                    self._broken = exc
                    raise
        finally:
            if self._broken is not None:
                # In a greenlet, as SQLAlchemy invalidates: it closes the connection
                # gracefully first, which lets asyncpg's cancellation of an
                # interrupted statement reach PostgreSQL (terminating at once would
                # leave that statement running, holding or waiting for locks).
                await asyncio.shield(greenlet_spawn(self._raw.invalidate, self._broken))
            await give_back(self._raw)


class DriverWrite(DriverSnapshot):
    """A write transaction on a pooled connection's asyncpg driver, at a write session's
    isolation (READ COMMITTED): `await DriverWrite.open(engine)`, `rows` (SELECT ... FOR
    UPDATE among them), `execute` (an UPDATE), `fetch` (asyncpg's own text), then
    `commit()`; `close()` always, which rolls back what was not committed."""

    TRANSACTION: ClassVar[Mapping[str, Any]] = {"isolation": "read_committed"}
    RENEW: ClassVar[str | None] = None

    async def execute(self, statement: Update, parameters: Mapping[str, Any]) -> list[Any]:
        """Run an UPDATE (bind parameters by name, as for `rows`); its RETURNING rows."""
        return await self.rows(statement, parameters)

    async def fetch(self, statement: str, *args: Any) -> list[Any]:
        """Run `statement` (`$1, $2, ...` placeholders) as asyncpg does: its Records."""
        with errors_as_sqlalchemys(statement, args, self._driver, self._break):
            records: list[Any] = await self._driver.fetch(statement, *args)
        return records

    async def commit(self) -> None:
        with errors_as_sqlalchemys("COMMIT", (), self._driver, self._break):
            await self._transaction.commit()
        self._committed = True
