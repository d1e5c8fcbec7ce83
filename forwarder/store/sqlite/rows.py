"""Rows between SQLite and Python: TEXT decoded strictly or leniently, a claim's rows read as
one JSON value, and lists sent as one JSON parameter."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson


def as_json(values: Iterable[Any]) -> str:
    """*values* (ids, or rows as tuples) as one JSON array parameter, for json_each."""
    return orjson.dumps(list(values)).decode()


def keyed(pairs: Iterable[tuple[int, Any]]) -> str:
    """(id, value) pairs as one JSON object parameter keyed by id, for json_each: each value
    then comes out parsed once, where an array of pairs would be parsed again per element."""
    return orjson.dumps(dict(pairs), option=orjson.OPT_NON_STR_KEYS).decode()


def text(value: bytes) -> str:
    """Decode TEXT leniently: an application may store invalid UTF-8, and one such row must
    become a dead letter (the payload builder refuses it), not an error on every claim whose
    message would quote the row's raw contents."""
    return value.decode("utf-8", "surrogateescape")


def undecodable(error: sqlite3.Error) -> bool:
    """Whether *error* is sqlite3's strict decoding failing on a TEXT value."""
    return isinstance(error, sqlite3.OperationalError) and str(error).startswith(
        "Could not decode to UTF-8"
    )


def fetch(
    conn: sqlite3.Connection, cursor: sqlite3.Cursor, again: str, params: dict[str, Any]
) -> list[Any]:
    """The rows of *cursor*, decoded strictly (in C: calling text() for each of six TEXT
    columns of a thousand rows was a tenth of a claim's time); if a row's TEXT is not valid
    UTF-8, the rows of *again* read leniently, so that row becomes a dead letter like any
    other. *cursor*'s statement has already changed every row it leases (an UPDATE ...
    RETURNING does at its first step)."""
    try:
        return cursor.fetchall()
    except sqlite3.Error as error:
        if not undecodable(error):
            raise
    finally:
        # Closed now, not when a garbage collection finds the cursor: a statement left open
        # would make every later commit on this connection fail.
        cursor.close()
    conn.text_factory = text
    try:
        return conn.execute(again, params).fetchall()
    finally:
        conn.text_factory = str


def read_rows(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> list[Any] | None:
    """The rows *sql* gives as one JSON array of JSON arrays, or None where SQLite cannot
    write them as JSON or they are not valid UTF-8 (the caller then reads them row by row)."""
    # "JSON cannot hold BLOB values" comes from execute, "Could not decode to UTF-8" from the
    # fetch, "string or blob too big" (a DataError: the value would pass SQLITE_MAX_LENGTH)
    # from either. Any other failure comes again from the statement read row by row, and is
    # raised there.
    try:
        cursor = conn.execute(sql, params)
    except (sqlite3.OperationalError, sqlite3.DataError):
        return None
    try:
        ((value,),) = cursor.fetchall()
    except (sqlite3.OperationalError, sqlite3.DataError):
        return None
    finally:
        cursor.close()  # see fetch
    try:
        rows: list[Any] = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return rows
