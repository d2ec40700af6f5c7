"""Reads, updates and inserts whose SQL is built once per thread instead of on every run.

Django compiles a queryset's SQL each time it is evaluated. For a read that runs on every
job or request with the same SQL each time (a worker's look at the head of the queue, the
API key and session of a request), the compiling was about as long as the query itself
(0.7 ms of 1.7 for the queue's head, measured alone). A :class:`Statement` compiles its
queryset once per thread (Django's connections are per thread, and a compiler belongs to
one) and builds model instances from the rows as a queryset would, related objects
(``select_related``) and annotations included.

What changes from run to run is declared as :class:`Param`: the queryset is built once with
each parameter's ``sample`` (a value no real run uses), which marks where the parameter lands
in the SQL's parameters; each run puts its own values there, made ready for the database by
the parameter's field as Django would. Everything else is read from the queryset once.

:class:`Update` does the same for an UPDATE, :class:`Insert` for a model's INSERTs (one
conditional on a read's rows, locks included, in the same statement), and
:meth:`Statement.first_within` runs a compiled read inside a larger statement (the claim of the
queue's head: jobs.services).

On PostgreSQL each statement runs on a cursor that binds its parameters on the server, which
prepares it once it has run a few times on a connection (``moai_site.postgresql``): planning
took longer than running for most of these (0.2-0.5 ms against 0.1).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.core.exceptions import EmptyResultSet
from django.db import connections, router, transaction
from django.db.models import AutoField, Field, ForeignObject, Model, QuerySet
from django.db.models.query import get_related_populators
from django.db.models.sql import UpdateQuery

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class Param:
    """A value that changes from run to run, compared by ``field`` (an exact or range lookup on it).

    ``sample`` must be one the field can hold: Django leaves out of the SQL a comparison with
    a value out of the field's range (a negative number for a positive field), so it would not
    be found there. No run's value may be None: Django writes a comparison with None as
    ``IS NULL``, with no parameter to bind.
    """

    field: Field[Any, Any]
    sample: object


@dataclass(frozen=True)
class _Rows:
    """How a read's rows become instances, worked out once per compiled read as Django's
    ModelIterable does once per queryset: the database converters of each column, the model's
    columns, the related objects' populators and the annotations' positions."""

    converters: dict[int, Any]
    model: type[Model]
    names: tuple[str, ...]
    start: int
    end: int
    populators: tuple[Any, ...]
    annotations: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class _Compiled:
    compiler: Any
    sql: str
    params: tuple[Any, ...]
    positions: tuple[int, ...]
    db: str
    rows: _Rows | None
    # Larger statements built around this read (Statement.first_within), by their builder.
    within: dict[object, str] = dataclasses.field(default_factory=dict)


class Statement(Generic[M]):
    def __init__(self, queryset: Callable[..., QuerySet[M]], *params: Param) -> None:
        self._queryset = queryset
        self._params = params
        self._compiled = threading.local()

    def first(self, *values: object) -> M | None:
        """The first row as a model instance (as ``queryset(*values).first()`` would give), or None.

        A queryset locking rows (``select_for_update``) may run outside a transaction: one
        statement is a transaction of its own, holding its locks while it runs.
        """
        compiled = self._compile()
        with _cursor(compiled.compiler.connection) as cursor:
            cursor.execute(compiled.sql, _bound(self._params, compiled, values))
            rows = cursor.fetchmany(1)
        if not rows or compiled.rows is None:
            return None
        return _instance(compiled.compiler, compiled.rows, rows[0], compiled.db)

    def first_within(
        self, build: Callable[[str, Callable[[str], str]], str], extra: Sequence[object], *values: object
    ) -> tuple[M, tuple[Any, ...]] | None:
        """The first row of a statement built around this read, one round trip for both.

        ``build(read, column)`` gives the statement's SQL from this read's (``read``: a SELECT
        to put in ``WITH read (c0, c1, ...) AS (...)``) and the names its columns take there
        (``column("id")``: a field's attname or an annotation's name). The statement must
        select ``read.*`` first; the columns after them come back as they are. ``extra``: the
        parameters of the SQL around the read, which come after the read's own.
        """
        compiled = self._compile()
        if compiled.rows is None:
            raise ValueError("first_within needs a read of rows")
        width = compiled.compiler.col_count
        # Built once per thread and ``build``, kept with the compiled read it is made from.
        sql = compiled.within.get(build)
        if sql is None:
            positions = {name: compiled.rows.start + index for index, name in enumerate(compiled.rows.names)}
            positions.update(compiled.rows.annotations)
            columns = ", ".join(f"c{index}" for index in range(width))
            read = f"WITH read ({columns}) AS ({compiled.sql})"
            sql = compiled.within[build] = build(read, lambda n: f"read.c{positions[n]}")
        with _cursor(compiled.compiler.connection) as cursor:
            cursor.execute(sql, [*_bound(self._params, compiled, values), *extra])
            rows = cursor.fetchmany(1)
        if not rows:
            return None
        return _instance(compiled.compiler, compiled.rows, rows[0][:width], compiled.db), tuple(rows[0][width:])

    def refresh(self, instance: M, *values: object) -> bool:
        """Load ``instance``'s fields from the first row, as ``refresh_from_db(from_queryset=...)`` does;
        False, and ``instance`` left as it was, when there is no row."""
        fresh = self.first(*values)
        if fresh is None:
            return False
        for field in instance._meta.concrete_fields:
            setattr(instance, field.attname, getattr(fresh, field.attname))
            if isinstance(field, ForeignObject):
                # The related rows read with it (select_related), or none that could be stale.
                if field.is_cached(fresh):
                    field.set_cached_value(instance, field.get_cached_value(fresh))
                elif field.is_cached(instance):
                    field.delete_cached_value(instance)
        instance._state.db = fresh._state.db
        return True

    def exists(self, *values: object) -> bool:
        """Whether there is a row, as ``queryset(*values).exists()`` would say."""
        compiled = self._compile(exists=True)
        with _cursor(compiled.compiler.connection) as cursor:
            cursor.execute(compiled.sql, _bound(self._params, compiled, values))
            return cursor.fetchone() is not None

    def _compile(self, exists: bool = False) -> _Compiled:
        slot = "exists" if exists else "rows"
        compiled: _Compiled | None = getattr(self._compiled, slot, None)
        if compiled is None:
            queryset = self._queryset(*(param.sample for param in self._params))
            query = queryset.query.exists() if exists else queryset.query
            compiled = _compiled(query, queryset.db, self._params)
            setattr(self._compiled, slot, compiled)
        return compiled


class Update(Generic[M]):
    """An UPDATE compiled once per thread: ``statement(*samples)`` gives the rows' queryset and
    what to set in them (``QuerySet.update``'s arguments); each run binds its own values."""

    def __init__(self, statement: Callable[..., tuple[QuerySet[M], dict[str, Any]]], *params: Param) -> None:
        self._statement = statement
        self._params = params
        self._compiled = threading.local()

    def run(self, *values: object) -> int:
        """How many rows the update changed, as ``QuerySet.update`` answers."""
        compiled: _Compiled | None = getattr(self._compiled, "value", None)
        if compiled is None:
            queryset, changes = self._statement(*(param.sample for param in self._params))
            query: Any = queryset.query.chain(UpdateQuery)
            query.add_update_values(changes)
            query.clear_select_clause()
            compiled = self._compiled.value = _compiled(query, queryset.db, self._params)
        with transaction.mark_for_rollback_on_error(using=compiled.db), _cursor(compiled.compiler.connection) as cursor:
            cursor.execute(compiled.sql, _bound(self._params, compiled, values))
            return int(cursor.rowcount)


class Insert(Generic[M]):
    """INSERTs of a model's rows whose SQL is built once per thread; each run binds its rows' values.

    ``save()`` and ``bulk_create`` build an INSERT through Django's compiler every time. With this,
    and the session's lock taken by the job's insert (:meth:`one_if`), a submission's transaction
    (lock, job, audit record; rolled back) took 1.06-1.28 ms in a process against 1.37-1.53 ms
    (3 x 300 runs on PostgreSQL on this machine). The values are the ones Django would
    write (each field's ``pre_save`` and ``get_db_prep_save``: ``auto_now_add`` and defaults
    included); an auto primary key is read back as ``bulk_create`` reads it. No signals are sent
    (``save()`` sends them; nothing here listens for these models').
    """

    def __init__(self, model: type[M]) -> None:
        self._model = model
        self._compiled = threading.local()

    def rows(self, instances: Sequence[M]) -> None:
        """Insert ``instances``, in batches as ``bulk_create`` makes them; their auto keys are set."""
        if not instances:
            return
        columns, connection = self._columns()
        size = connection.ops.bulk_batch_size(columns.fields, instances) or len(instances)
        for start in range(0, len(instances), size):
            batch = instances[start : start + size]
            sql = columns.sql.get(len(batch))
            if sql is None:
                values = ", ".join([columns.row] * len(batch))
                sql = columns.sql[len(batch)] = (
                    f"INSERT INTO {columns.table} ({columns.names}) VALUES {values}{columns.returning}"
                )
            params = [value for instance in batch for value in columns.values(instance, connection)]
            self._run(columns, connection, sql, params, batch)

    def one_if(self, instance: M, condition: Statement[Any], *values: object) -> bool:
        """Insert ``instance`` if ``condition`` finds a row, in one statement; whether it was inserted.

        The condition is the statement's EXISTS with its row locks: a locked row is waited for,
        then read again as it was committed (READ COMMITTED), so a row that changed meanwhile no
        longer matches and nothing is inserted. One round trip instead of a read, then the insert.
        """
        columns, connection = self._columns()
        exists = condition._compile(exists=True)
        sql = columns.sql.get(condition)
        if sql is None:
            # PostgreSQL must know each value's type in a SELECT list, where no column gives it one.
            typed = connection.vendor == "postgresql"
            select = ", ".join(f"%s::{field.cast_db_type(connection)}" if typed else "%s" for field in columns.fields)
            sql = columns.sql[condition] = (
                f"INSERT INTO {columns.table} ({columns.names}) SELECT {select} WHERE EXISTS ({exists.sql})"
                f"{columns.returning}"
            )
        params = [*columns.values(instance, connection), *_bound(condition._params, exists, values)]
        return self._run(columns, connection, sql, params, [instance]) == 1

    @staticmethod
    def _run(columns: _InsertColumns, connection: Any, sql: str, params: list[Any], instances: Sequence[M]) -> int:
        with transaction.mark_for_rollback_on_error(using=connection.alias), _cursor(connection) as cursor:
            cursor.execute(sql, params)
            returned = cursor.fetchall() if columns.returning else []
            inserted = len(returned) if columns.returning else int(cursor.rowcount)
        for instance, row in zip(instances, returned, strict=False):
            setattr(instance, columns.auto.attname, row[0])  # type: ignore[union-attr]
        for instance in instances[:inserted]:
            instance._state.adding, instance._state.db = False, connection.alias
        return inserted

    def _columns(self) -> tuple[_InsertColumns, Any]:
        connection = connections[router.db_for_write(self._model)]
        columns: _InsertColumns | None = getattr(self._compiled, "value", None)
        if columns is None or columns.alias != connection.alias:
            columns = self._compiled.value = _InsertColumns.of(self._model, connection)
        return columns, connection


@dataclass(frozen=True)
class _InsertColumns:
    """What every INSERT of a model's rows shares: its table, columns, placeholders and RETURNING."""

    alias: str
    table: str
    fields: tuple[Field[Any, Any], ...]
    names: str
    row: str
    auto: Field[Any, Any] | None
    returning: str
    # The statements built from these, once per thread: by row count, or by an insert's condition.
    sql: dict[object, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, model: type[Model], connection: Any) -> _InsertColumns:
        quote = connection.ops.quote_name
        fields = tuple(field for field in model._meta.concrete_fields if not isinstance(field, AutoField))
        auto = model._meta.pk if isinstance(model._meta.pk, AutoField) else None
        returning = ""
        if auto is not None:
            clause, _ = connection.ops.return_insert_columns([auto])
            returning = f" {clause}"
        return cls(
            alias=connection.alias,
            table=quote(model._meta.db_table),
            fields=fields,
            names=", ".join(quote(field.column) for field in fields),
            row="(" + ", ".join(["%s"] * len(fields)) + ")",
            auto=auto,
            returning=returning,
        )

    def values(self, instance: Model, connection: Any) -> list[Any]:
        """The row's values as Django writes them: ``auto_now_add`` and the like set on ``instance`` first."""
        return [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in self.fields]


def _compiled(query: Any, db: str, declared: tuple[Param, ...]) -> _Compiled:
    compiler = query.get_compiler(using=db)
    # Django refuses to build a locking read in autocommit mode, where the statement may run
    # (see Statement.first): it is built inside a transaction, which sends nothing to the database.
    building = transaction.atomic(using=db) if getattr(query, "select_for_update", False) else nullcontext()
    try:
        with building:
            sql, params = compiler.as_sql()  # also sets up what the rows are read with (select, klass_info)
    except EmptyResultSet:
        raise ValueError("a sample is out of its field's range: the SQL cannot hold it") from None
    positions = tuple(_position(params, param, compiler.connection) for param in declared)
    # Updates and EXISTS reads return no model rows: nothing to make instances with.
    rows = _rows(compiler, db) if compiler.klass_info else None
    return _Compiled(compiler, sql, tuple(params), positions, db, rows)


def _rows(compiler: Any, db: str) -> _Rows:
    select, klass_info = compiler.select, compiler.klass_info
    fields = klass_info["select_fields"]
    start, end = fields[0], fields[-1] + 1
    # Django 5.2's signature (django-stubs describes 6.x, which adds a fetch mode).
    populators: Any = get_related_populators
    return _Rows(
        converters=compiler.get_converters([column[0] for column in select[: compiler.col_count]]),
        model=klass_info["model"],
        names=tuple(column[0].target.attname for column in select[start:end]),
        start=start,
        end=end,
        populators=tuple(populators(klass_info, select, db)),
        annotations=tuple(compiler.annotation_col_map.items()),
    )


def _cursor(connection: Any) -> Any:
    """A cursor of the statement's connection that has PostgreSQL prepare it once it has run a few
    times (moai_site.postgresql); Django's own cursor on other databases."""
    return getattr(connection, "prepared_cursor", connection.cursor)()


def _bound(declared: tuple[Param, ...], compiled: _Compiled, values: tuple[object, ...]) -> list[Any]:
    """The statement's parameters with this run's values where the samples were."""
    if len(values) != len(declared):
        raise TypeError(f"{len(declared)} values expected, {len(values)} given")
    params = list(compiled.params)
    connection = compiled.compiler.connection
    for param, position, value in zip(declared, compiled.positions, values, strict=True):
        params[position] = param.field.get_db_prep_value(value, connection, prepared=False)
    return params


def _position(params: Any, param: Param, connection: Any) -> int:
    """Where ``param``'s sample landed in the SQL's parameters: exactly once, or the statement cannot be bound."""
    marker = param.field.get_db_prep_value(param.sample, connection, prepared=False)
    found = [index for index, value in enumerate(params) if type(value) is type(marker) and value == marker]
    if len(found) != 1:
        raise ValueError(f"the sample {param.sample!r} is in the SQL's parameters {len(found)} times, not once")
    return found[0]


def _instance(compiler: Any, rows: _Rows, row: Any, db: str) -> Any:
    """A row made into an instance as Django's ModelIterable does: the model, its related objects, annotations."""
    if rows.converters:
        row = next(compiler.apply_converters([row], rows.converters))
    instance = rows.model.from_db(db, rows.names, row[rows.start : rows.end])
    for populator in rows.populators:
        populator.populate(row, instance)
    for name, position in rows.annotations:
        setattr(instance, name, row[position])
    return instance
