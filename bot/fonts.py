"""The CJK font uploaded into every code-interpreter container, so charts with Chinese, Japanese or Korean labels
show text instead of boxes.

The font is Noto Sans CJK (the ``noto-cjk-sans-otc`` package: Google's Noto Sans CJK collection, SIL Open Font
License 1.1, one ``.ttc`` that covers simplified and traditional Chinese, Japanese and Korean). It is found in the
installed package at run time; nothing is downloaded. ``font_instruction`` is what a turn with the code
interpreter adds to its instructions: register the font with matplotlib before plotting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

FONT_PACKAGE = "noto_cjk_sans_otc"
FONT_FILE = "NotoSansCJK-Regular.ttc"


@dataclass(frozen=True, slots=True)
class CjkFont:
    filename: str
    data: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def font_path() -> Path | None:
    """Where the installed font file is, or None when the package (or its file) is missing."""
    try:
        path = Path(str(resources.files(FONT_PACKAGE).joinpath(FONT_FILE)))
    except (ModuleNotFoundError, TypeError):
        return None
    return path if path.is_file() else None


def load_font() -> CjkFont | None:
    """The font's bytes (about 19 MB: read once per process, when the first container needs it)."""
    path = font_path()
    return CjkFont(FONT_FILE, path.read_bytes()) if path is not None else None


def font_instruction(path: str) -> str:
    """The turn's instruction: register the font at ``path`` (in the container) before drawing any chart."""
    return (
        f"A CJK font is in your code interpreter at {path}. Before you draw any chart with matplotlib, register it "
        "so Chinese, Japanese and Korean text is not drawn as boxes:\n"
        "from matplotlib import font_manager, pyplot as plt\n"
        f"font_manager.fontManager.addfont({path!r})\n"
        f"plt.rcParams['font.family'] = font_manager.FontProperties(fname={path!r}).get_name()\n"
        "plt.rcParams['axes.unicode_minus'] = False"
    )
