"""release rejections

Adds ``release_rejections``: a server that refuses to load a release (damaged files, a
model that fails validation or crashes its checker) records which component refused
it, why, and when, so ``cascade release list`` shows it beside the release. Downgrading
drops the table and the records in it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 07:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "release_rejections",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("release_id", sa.String(128), nullable=False),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "rejected_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index("ix_release_rejections_release_id", "release_rejections", ["release_id"])


def downgrade() -> None:
    op.drop_index("ix_release_rejections_release_id", table_name="release_rejections")
    op.drop_table("release_rejections")
