"""event experiments

Adds ``events.experiments``: the ``experiment/variant`` labels of the recommendation
response that showed the item (empty for events logged without them), so impressions
and engagement can be split by experiment variant. Existing rows get an empty array.
Downgrading drops the column and the labels in it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 04:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "events",
        sa.Column(
            "experiments",
            postgresql.ARRAY(sa.Text()),
            server_default="{}",
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("events", "experiments")
