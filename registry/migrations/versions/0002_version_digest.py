"""Versions carry the content digest of their artifacts: their identity, never reused.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("digest", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("digest")
