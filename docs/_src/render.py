"""Renders docs/clients.md from docs/_src/clients.md.in: `@@path@@` becomes the file's
text, so the page shows the recipe files verbatim (tests/test_client_recipes.py checks
the result). Run: python3 docs/_src/render.py"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
source = (ROOT / "docs/_src/clients.md.in").read_text()
rendered = re.sub(r"@@(\S+?)@@", lambda m: (ROOT / m.group(1)).read_text(), source)
(ROOT / "docs/clients.md").write_text(rendered)
