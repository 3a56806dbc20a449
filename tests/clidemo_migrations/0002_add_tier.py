"""Give every customer a tier."""

model = "clidemo.Customer"
from_version = "2"
to_version = "3"


async def upgrade(doc):
    doc.setdefault("tier", "basic")


def downgrade(doc):
    doc.pop("tier", None)
