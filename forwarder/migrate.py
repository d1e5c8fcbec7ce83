"""Find the migration files, in the repository or inside the installed package."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from forwarder.errors import MigrationError


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file, applied once and recorded in ``forwarder_migrations``."""

    name: str
    sql: str


def migrations_dir(dialect: str) -> Path:
    """Return the folder of *dialect*'s migrations.

    A wheel ships them as ``forwarder/migrations`` (hatch force-include); an editable install
    and a checkout read the top-level ``migrations/`` folder.
    """
    packaged = Path(str(resources.files("forwarder"))) / "migrations" / dialect
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "migrations" / dialect
    if checkout.is_dir():
        return checkout
    raise MigrationError(f"no migrations for {dialect} in {packaged} or {checkout}")


def load(dialect: str) -> list[Migration]:
    """Return *dialect*'s migrations in the order they apply (by file name)."""
    folder = migrations_dir(dialect)
    return [
        Migration(name=path.stem, sql=path.read_text(encoding="utf-8"))
        for path in sorted(folder.glob("*.sql"))
    ]
