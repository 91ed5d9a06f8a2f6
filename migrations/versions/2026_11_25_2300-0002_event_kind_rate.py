"""event kind rate

Adds ``rate`` to the kinds the ``ck_events_kind`` check constraint allows (a rating;
``value`` holds it). The constraint is dropped and recreated with the new list; the
lists are spelled out here, not imported, so this revision keeps meaning what it meant.

Downgrading deletes nothing: if any ``rate`` event exists, Postgres rejects recreating
the old constraint ("check constraint ck_events_kind ... is violated by some row") and
the downgrade fails with the database unchanged. Delete or convert those events first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 23:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KINDS = "kind IN ('impression', 'click', 'save', 'like', 'share', 'hide')"
_NEW_KINDS = "kind IN ('impression', 'click', 'save', 'like', 'share', 'hide', 'rate')"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_events_kind"), "events", type_="check")
    op.create_check_constraint(op.f("ck_events_kind"), "events", _NEW_KINDS)


def downgrade() -> None:
    op.drop_constraint(op.f("ck_events_kind"), "events", type_="check")
    op.create_check_constraint(op.f("ck_events_kind"), "events", _OLD_KINDS)
