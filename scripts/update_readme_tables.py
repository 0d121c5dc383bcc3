#!/usr/bin/env python
"""Regenerate the README's generated blocks: the table reference (semfin_spark/schemas.py)
and the leakage rules (semfin_spark/features.py). tests/test_settings.py checks both."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from semfin_spark.features import leakage_table  # noqa: E402
from semfin_spark.schemas import markdown_reference  # noqa: E402

BLOCKS = {"tables": markdown_reference, "leakage": leakage_table}

readme = ROOT / "README.md"
text = readme.read_text(encoding="utf-8")
for name, render in BLOCKS.items():
    block = f"<!-- {name}:begin -->\n{render()}\n<!-- {name}:end -->"
    text, n = re.subn(rf"<!-- {name}:begin -->.*<!-- {name}:end -->", lambda _: block, text, flags=re.S)
    if n != 1:
        sys.exit(f"README.md has {n} '{name}' blocks, expected 1")
readme.write_text(text, encoding="utf-8")
print(f"updated {readme}")
