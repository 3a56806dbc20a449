"""Split a user's name into first and last."""

model = "blog.User"
from_version = "1"
to_version = "2"

# What upgrade() may change: a version-aware query on any other field
# (email, active) passes through this step; one on these is refused.
changes = ["name", "first", "last"]


def upgrade(doc):
    doc["first"], _, doc["last"] = doc.pop("name", "").partition(" ")


def downgrade(doc):
    doc["name"] = f"{doc.pop('first')} {doc.pop('last')}".strip()
