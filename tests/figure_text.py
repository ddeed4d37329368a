"""Text of a drawn figure that must not collide: titles, axis labels, tick labels, legend entries and
annotations, with their boxes on the rendered canvas."""

from __future__ import annotations


def text_boxes(fig) -> list[tuple[str, str, object]]:
    """(where, text, window extent) of every visible, non-empty text of `fig`, after drawing it."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []

    def add(where, artist):
        if artist is not None and artist.get_visible() and artist.get_text().strip():
            found.append((where, artist.get_text(), artist.get_window_extent(renderer)))

    add("suptitle", fig._suptitle)
    for legend in fig.legends:
        for text in legend.get_texts():
            add("figure legend", text)
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        for name in ("title", "_left_title", "_right_title"):
            add(f"axes {i} title", getattr(ax, name) if name != "title" else ax.title)
        add(f"axes {i} xlabel", ax.xaxis.label)
        add(f"axes {i} ylabel", ax.yaxis.label)
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if low <= tick.get_loc() <= high:  # ticks outside the view are not drawn
                    add(f"axes {i} {name}tick", tick.label1)
                    add(f"axes {i} {name}tick", tick.label2)
        for text in ax.texts:
            add(f"axes {i} text", text)
        if ax.get_legend():
            for text in ax.get_legend().get_texts():
                add(f"axes {i} legend", text)
    return found


def collisions(fig, min_area: float = 4.0) -> list[str]:
    """Pairs of texts whose boxes overlap by more than `min_area` square pixels."""
    boxes = text_boxes(fig)
    out = []
    for i, (where_a, text_a, a) in enumerate(boxes):
        for where_b, text_b, b in boxes[i + 1:]:
            width = min(a.x1, b.x1) - max(a.x0, b.x0)
            height = min(a.y1, b.y1) - max(a.y0, b.y0)
            if width > 0 and height > 0 and width * height > min_area:
                out.append(f"{where_a} {text_a!r} / {where_b} {text_b!r}")
    return out
