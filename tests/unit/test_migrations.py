from __future__ import annotations

from tracker.migrate import Migration, available


def test_migrations_numbered_from_one_without_gaps() -> None:
    versions = [m.version for m in available()]
    assert versions == list(range(1, len(versions) + 1))


def test_statement_split_ignores_comments_and_keeps_bodies() -> None:
    m = Migration(
        1,
        "x",
        "-- c1\nCREATE TABLE a (x String DEFAULT ';') ENGINE = Log;\n\n-- only a comment;\nCREATE VIEW b AS SELECT 1;\n",
    )
    assert m.statements() == [
        "CREATE TABLE a (x String DEFAULT ';') ENGINE = Log",
        "CREATE VIEW b AS SELECT 1",
    ]


def test_every_statement_is_idempotent() -> None:
    # A setting set to a value is the same whether set once or twice (migration 0007).
    for migration in available():
        for statement in migration.statements():
            assert "IF NOT EXISTS" in statement or (
                statement.startswith("ALTER TABLE ") and " MODIFY SETTING " in statement
            ), statement[:80]
