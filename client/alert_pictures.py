"""Pictures of the daemon's alerts: each alert's explanation drawn as a PNG beside the alert log
(``site.yaml``'s ``alert_pictures``), the newest ``keep`` kept.

The log line says "node r03-n07 at risk 0.82: GPU r03-n07-g2 single-bit ECC errors +164 over 49 min"; the
picture (:mod:`~infrabrain.models.explanation_plot`) shows that climb and why the likeliest roots rank where they
do. A picture that cannot be written (a full disk, a folder made read-only) is logged and the alert still goes
out: a picture is a convenience, the alert is not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


#: The names this class writes (``<UTC time>-<node>.png``): the only files :meth:`AlertPictures.prune` deletes,
#: so a folder shared with other pictures loses none of them.
PICTURE_GLOB = "[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z-*.png"


class AlertPictures:
    """Writes one PNG per alert into ``folder`` (created if missing) and deletes its oldest beyond ``keep``
    (None: keeps every one)."""

    def __init__(self, folder: str | Path, keep: int | None = 200) -> None:
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"alert_pictures.keep must be a positive number of pictures, got {keep!r}")
        self.folder = Path(folder)
        self.keep = keep

    def draw(self, node_id: str, sentence: str, contributors: Sequence[Any], roots: Sequence[Mapping[str, Any]],
             cadence_s: int, now: float) -> Path | None:
        """Draw one alert (:func:`~infrabrain.models.explanation_plot.plot_explanation`) as
        ``<UTC time>-<node>.png``; None, with a warning, where it cannot be written."""
        from infrabrain.models.explanation_plot import file_stem, plot_explanation

        path = self.folder / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{file_stem(node_id)}.png"
        try:
            out = plot_explanation(sentence, contributors, roots, cadence_s, path)
        except (OSError, ValueError) as exc:
            log.warning("alert picture not written; the alert goes out without it",
                        extra={"node": node_id, "path": str(path), "error": str(exc)})
            return None
        self.prune()
        return out

    def prune(self) -> int:
        """Delete this class's oldest pictures beyond ``keep`` (names start with their UTC time; other files are
        left alone); returns how many went."""
        if self.keep is None:
            return 0
        pictures = sorted(self.folder.glob(PICTURE_GLOB))
        gone = 0
        for old in pictures[: max(len(pictures) - self.keep, 0)]:
            try:
                old.unlink()
                gone += 1
            except OSError as exc:
                log.warning("old alert picture not deleted", extra={"path": str(old), "error": str(exc)})
        return gone
