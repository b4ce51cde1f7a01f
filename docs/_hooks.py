"""MkDocs hook: the site's home page is the README, with links rewritten for ``docs/``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != "index.md":
        return markdown
    text = README.read_text()
    text = text.replace("](docs/", "](")
    # files outside docs/ are not part of the site: name them instead of linking
    return re.sub(r"\[([^\]]+)\]\((?!https?://)([^)#]+\.md)(#[^)]*)?\)", lambda m: m.group(0) if (Path(__file__).parent / m.group(2)).exists() else f"`{m.group(2)}`", text)
