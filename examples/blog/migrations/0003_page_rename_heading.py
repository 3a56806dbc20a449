"""Rename a page's heading to title."""

model = "blog.Page"
from_version = "1"
to_version = "2"


def upgrade(doc):
    doc["title"] = doc.pop("heading")


def downgrade(doc):
    doc["heading"] = doc.pop("title")
