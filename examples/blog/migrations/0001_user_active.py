"""Users saved before versioning were all active."""

model = "blog.User"
from_version = "0"
to_version = "1"


def upgrade(doc):
    doc.setdefault("active", True)


def downgrade(doc):
    doc.pop("active", None)
