"""Split a user's name into first and last."""

model = "blog.User"
from_version = "1"
to_version = "2"


def upgrade(doc):
    doc["first"], _, doc["last"] = doc.pop("name", "").partition(" ")


def downgrade(doc):
    doc["name"] = f"{doc.pop('first')} {doc.pop('last')}".strip()
