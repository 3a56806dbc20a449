"""Split name into first and last."""

model = "clidemo.Customer"
from_version = "1"
to_version = "2"


def upgrade(doc):
    if doc.get("name") == "BOOM":
        raise ValueError("cannot split BOOM")
    doc["first"], _, doc["last"] = doc.pop("name").partition(" ")
    doc["applied"] = doc.get("applied", 0) + 1


def downgrade(doc):
    doc["name"] = f"{doc.pop('first')} {doc.pop('last')}".strip()
