"""Users saved before versioning were all active."""

from atomdb_migrate import ops

model = "blog.User"
from_version = "0"
to_version = "1"

operations = [ops.set_default_where_missing("active", True)]


def downgrade(doc):
    doc.pop("active", None)
