#!/usr/bin/env python
"""Regenerate the README's table reference from semfin_spark/schemas.py."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from semfin_spark.schemas import markdown_reference  # noqa: E402

readme = ROOT / "README.md"
text = readme.read_text(encoding="utf-8")
block = "<!-- tables:begin -->\n" + markdown_reference() + "\n<!-- tables:end -->"
readme.write_text(re.sub(r"<!-- tables:begin -->.*<!-- tables:end -->", lambda _: block, text, flags=re.S),
                  encoding="utf-8")
print(f"updated {readme}")
