"""The dataset card (DATASET_CARD.md): blocks of it are written from the code, not by hand."""

from __future__ import annotations

import re
from pathlib import Path

from ..store import schema
from ..errors import ConfigError

FIELDS_BLOCK = "fields"


def replace_block(text: str, name: str, body: str) -> str:
    """Replace what stands between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ConfigError(f"the card has no <!-- {name}:start --> ... <!-- {name}:end --> "
                          "block; add those two lines where the table belongs")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def update_fields(card: Path) -> None:
    """Write the schema's field table into the card's ``fields`` block."""
    card = Path(card)
    card.write_text(replace_block(card.read_text(), FIELDS_BLOCK, schema.field_table()))


if __name__ == "__main__":  # python -m nanoedx_dataset.release.card DATASET_CARD.md
    import sys

    update_fields(Path(sys.argv[1] if len(sys.argv) > 1 else "DATASET_CARD.md"))
