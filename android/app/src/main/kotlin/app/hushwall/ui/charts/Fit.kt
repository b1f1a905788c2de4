package app.hushwall.ui.charts

import android.graphics.Paint

/**
 * [text] as drawn by [paint] in at most [width] pixels: whole if it fits, else its start (two thirds of what is
 * kept: a host's first labels tell most) and end around "…".
 */
internal fun fitMiddle(text: String, paint: Paint, width: Float): String {
    if (paint.measureText(text) <= width) return text
    for (keep in text.length - 1 downTo 1) {
        val tail = keep / 3
        val shown = text.substring(0, keep - tail) + "…" + text.substring(text.length - tail)
        if (paint.measureText(shown) <= width) return shown
    }
    return "…"
}
