"""The report's slide articles: each slide's pictures side by side, captioned, with legends.

Every slide that has pictures gets one cell per kind of :data:`IMAGE_KINDS`, in that order,
so the overlays, error maps and tile location maps line up in columns across slides and the
row spans the page; a picture a slide lacks (no error map without truth) leaves a cell that
says why. The pictures are encoded by :func:`~slidesift.report.pictures.embed_picture`.
"""

from __future__ import annotations

from slidesift.report.html import esc, fmt_number
from slidesift.report.inputs import IMAGE_KINDS, SlideRecord
from slidesift.report.pictures import embed_picture

__all__ = ["legend_css", "legends", "slide_article"]

#: Why a slide has no picture of a kind, shown in the cell the picture would take.
_ABSENT = {"errors": "No error map: this slide has no truth (or --outputs left errors out)."}


def _swatch_class(rgb: tuple[int, int, int], outline: bool) -> str:
    return ("sw-o-" if outline else "sw-") + "{:02x}{:02x}{:02x}".format(*rgb)


def _key(rgb: tuple[int, int, int], label: str, outline: bool = False) -> str:
    """A legend entry: a colour swatch and its label, kept on one line together.

    The colour is a class (:func:`legend_css`), not a ``style`` attribute: the page's CSP
    allows its one stylesheet only.
    """
    cls = _swatch_class(rgb, outline)
    return f'<span class="key"><span class="swatch {cls}"></span>{esc(label)}</span>'


def _legend_colours() -> list[tuple[tuple[int, int, int], str, bool]]:
    """The legend entries: colour, label, outline (the overlay's) or filled (the error map's)."""
    from slidesift.io.outputs import FN, FP, OUTLINE, TP, TRUTH_OUTLINE

    return [(OUTLINE, "prediction outline", True), (TRUTH_OUTLINE, "truth outline", True),
            (TP, "true positive", False), (FP, "false positive", False),
            (FN, "false negative", False)]  # fmt: skip


def legend_css() -> str:
    """The stylesheet rules of the legend swatches' colours."""
    rules = []
    for rgb, _, outline in _legend_colours():
        colour = "#{:02x}{:02x}{:02x}".format(*rgb)
        look = f"border:3px solid {colour};background:#fff" if outline else f"background:{colour}"
        rules.append(f".{_swatch_class(rgb, outline)}{{{look}}}")
    return "\n".join(rules) + "\n"


def legends() -> tuple[str, str]:
    """HTML legends of the overlay outlines and the error-map colours (from io/outputs)."""
    from slidesift.io.outputs import FN, FP, OUTLINE, TP, TRUTH_OUTLINE

    overlay = (
        f'<span class="legend">{_key(OUTLINE, "prediction outline", True)} '
        f"{_key(TRUTH_OUTLINE, 'truth outline', True)}</span>"
    )
    errors = (
        f'<span class="legend">{_key(TP, "true positive")} '
        f"{_key(FP, 'false positive')} {_key(FN, 'false negative')}</span>"
    )
    return overlay, errors


def _note_cell(text: str, caption: str, cls: str) -> str:
    return (
        f'<figure class="{cls}"><p class="note">{esc(text)}</p>'
        f'<figcaption><span class="cap">{esc(caption)}</span></figcaption></figure>'
    )


def slide_article(record: SlideRecord, anchor: str, max_px: int | None) -> tuple[str, int]:
    """One slide's pictures (lazy) with captions; returns the HTML and how many it embeds."""
    overlay_legend, error_legend = legends()
    v = record.values
    facts = []
    for key, label in (("label", "label"), ("vote", "vote"), ("jaccard", "Jaccard"),
                       ("dice", "Dice"), ("precision", "precision"), ("recall", "recall"),
                       ("kept_tiles", "kept tiles")):  # fmt: skip
        if v.get(key):
            shown = v[key] if key in ("label", "vote") else fmt_number(v[key])
            facts.append(f"{esc(label)} <b>{esc(shown)}</b>")
    parts = [f'<article class="slide{" failed" if record.failed else ""}" id="{anchor}">',
             f"<h3>{esc(record.name)}</h3>"]  # fmt: skip
    if facts:
        parts.append(f'<p class="facts">{" · ".join(facts)}</p>')
    if record.failed:
        parts.append(f'<pre class="err">{esc(record.error or "failed")}</pre>')
    n = 0
    figures = []
    for kind, caption in IMAGE_KINDS.items():
        path = record.images.get(kind)
        if path is None:
            why = _ABSENT.get(
                kind,
                f"No {caption} picture found for this slide: segment and evaluate write it "
                f"unless --outputs leaves {kind} out.",
            )
            figures.append(_note_cell(why, caption, "absent"))
            continue
        embedded = embed_picture(path, max_px)
        if embedded is None:
            figures.append(_note_cell(f"{path.name} is not a readable PNG", caption, "missing"))
            continue
        uri, w, h = embedded
        legend = {"overlay": overlay_legend, "errors": error_legend}.get(kind, "")
        figures.append(
            f'<figure><img src="{uri}" alt="{esc(caption)} of {esc(record.name)}" width="{w}" '
            f'height="{h}" loading="lazy" decoding="async"><figcaption><span class="cap">'
            f"{esc(caption)}</span> {legend}</figcaption></figure>"
        )
        n += 1
    if record.images:
        parts.append(f'<div class="figs">{"".join(figures)}</div>')
    elif not record.failed:
        parts.append(
            '<p class="note">No pictures found for this slide: segment and evaluate write them '
            "unless --outputs leaves overlay, errors and locations out.</p>"
        )
    parts.append("</article>")
    return "".join(parts), n
