"""Rename a page's heading to title."""

from atomdb_migrate import ops

model = "blog.Page"
from_version = "1"
to_version = "2"

operations = [ops.rename_field("heading", "title")]
