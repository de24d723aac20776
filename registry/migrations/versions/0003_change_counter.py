"""A change counter the writes to models, versions and aliases move (registry/changes.py).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    changes = op.create_table(
        "changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("counter", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(changes, [{"id": 1, "counter": 0}])


def downgrade() -> None:
    op.drop_table("changes")
