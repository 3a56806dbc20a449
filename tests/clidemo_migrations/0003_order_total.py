"""Store order totals as numbers."""

model = "clidemo.Order"
from_version = "0"
to_version = "1"


def upgrade(doc):
    doc["total"] = float(doc["total"])
