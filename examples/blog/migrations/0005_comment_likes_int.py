"""Store a comment's likes as a number, not text."""

model = "blog.Comment"
from_version = "1"
to_version = "2"

# A query on likes cannot be asked of comments stored at version 1 (the
# function decides the number); a query on any other field can.
changes = ["likes"]


def upgrade(doc):
    doc["likes"] = int(doc.get("likes") or 0)


def downgrade(doc):
    doc["likes"] = str(doc["likes"])
