"""Draw the pack's registry icon (docs/images/icon.png): a 12-step schedule, computed steps tall.

The picture is the product: a row of sampling steps where only some are computed, the rest reused.
Run: .venv/bin/python scripts/make_icon.py
"""
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 256
MASK = (1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1)   # a 12-step, K = 5 schedule: dense early, sparse late


def draw() -> Image.Image:
    img = Image.new("RGBA", (SIZE, SIZE), (24, 26, 33, 255))
    d = ImageDraw.Draw(img)
    margin, gap = 22, 4
    width = (SIZE - 2 * margin - gap * (len(MASK) - 1)) / len(MASK)
    base = SIZE - 48
    for i, computed in enumerate(MASK):
        x0 = margin + i * (width + gap)
        top = base - (150 if computed else 36)
        colour = (255, 176, 32, 255) if computed else (88, 96, 112, 255)
        d.rounded_rectangle((x0, top, x0 + width, base), radius=4, fill=colour)
    d.rounded_rectangle((margin, base + 14, SIZE - margin, base + 22), radius=4, fill=(64, 156, 255, 255))
    return img


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "docs" / "images" / "icon.png"
    draw().save(out, optimize=True)
    print(out, out.stat().st_size, "bytes")
