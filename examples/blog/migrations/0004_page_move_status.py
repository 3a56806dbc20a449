"""Move a page's status out of meta, up to the document."""

from atomdb_migrate import ops

model = "blog.Page"
from_version = "2"
to_version = "3"

operations = [
    ops.move_field("meta.status", "status"),
    ops.set_default_where_missing("status", "preview"),
]


def downgrade(doc):
    doc.setdefault("meta", {})["status"] = doc.pop("status")
