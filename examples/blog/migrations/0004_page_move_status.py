"""Move a page's status out of meta, up to the document."""

model = "blog.Page"
from_version = "2"
to_version = "3"


def upgrade(doc):
    meta = doc.pop("meta", None) or {}
    doc["status"] = meta.pop("status", "preview")
    if meta:
        doc["meta"] = meta  # keep what else was there


def downgrade(doc):
    doc.setdefault("meta", {})["status"] = doc.pop("status")
