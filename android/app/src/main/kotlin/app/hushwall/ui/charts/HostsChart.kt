package app.hushwall.ui.charts

import android.content.Context
import android.graphics.Canvas
import android.graphics.Paint
import android.graphics.RectF
import android.view.View
import app.hushwall.R
import app.hushwall.data.Count
import java.text.NumberFormat

/**
 * Horizontal bars, one per host, most blocked first: the host's name (shortened in the middle when long), a bar as
 * long as its share of the first, and its count. Drawn with the framework's Canvas; colours from resources
 * (values-night for dark mode). The numbers are in its content description, set by the caller.
 */
class HostsChart(context: Context) : View(context) {
    private var rows: List<Count<String>> = emptyList()
    private val label = Paint(Paint.ANTI_ALIAS_FLAG).apply { textSize = sp(13f); color = context.getColor(R.color.chart_text) }
    private val value = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        textSize = sp(12f)
        color = context.getColor(R.color.chart_text_2)
        isFakeBoldText = true
    }
    private val bar = Paint(Paint.ANTI_ALIAS_FLAG).apply { color = context.getColor(R.color.chart_1) }
    private val track = Paint().apply { color = context.getColor(R.color.chart_grid) }
    private val rect = RectF()
    private val numbers = NumberFormat.getIntegerInstance()

    init {
        styleAsChartCard()
    }

    /** Shows [hosts] (most first); [description] is what a screen reader says (with the numbers). */
    fun show(hosts: List<Count<String>>, description: CharSequence) {
        rows = hosts
        contentDescription = description
        requestLayout()
        invalidate()
    }

    override fun onMeasure(widthMeasureSpec: Int, heightMeasureSpec: Int) {
        val height = paddingTop + rows.size * rowHeight() + paddingBottom
        setMeasuredDimension(MeasureSpec.getSize(widthMeasureSpec), resolveSize(height.toInt(), heightMeasureSpec))
    }

    override fun onDraw(canvas: Canvas) {
        if (rows.isEmpty()) return
        val max = rows.maxOf { it.count }.coerceAtLeast(1)
        val left = paddingLeft.toFloat()
        val right = (width - paddingRight).toFloat()
        val labelWidth = (right - left) * 0.55f
        val countWidth = value.measureText(numbers.format(max)) + dp(6f)
        val barLeft = left + labelWidth + dp(8f)
        val barRight = right - countWidth
        for ((i, row) in rows.withIndex()) {
            val mid = paddingTop + (i + 0.5f) * rowHeight()
            canvas.drawText(fitMiddle(row.key, label, labelWidth), left, mid - (label.ascent() + label.descent()) / 2, label)
            val half = dp(5f)
            rect.set(barLeft, mid - half, barRight, mid + half)
            canvas.drawRoundRect(rect, half, half, track)
            rect.right = barLeft + (barRight - barLeft) * row.count / max
            canvas.drawRoundRect(rect, half, half, bar)
            canvas.drawText(numbers.format(row.count), barRight + dp(6f), mid - (value.ascent() + value.descent()) / 2, value)
        }
    }

    private fun rowHeight() = dp(26f)

    companion object {
        /** What a screen reader says: "Hosts [subject] tried to reach, by blocks: a.example 120, b.example 30". */
        fun describe(context: Context, subject: String, hosts: List<Count<String>>): String {
            if (hosts.isEmpty()) return context.getString(R.string.chart_hosts_none, subject)
            val n = NumberFormat.getIntegerInstance()
            return context.getString(R.string.chart_hosts_desc, subject, hosts.joinToString(", ") { "${it.key} ${n.format(it.count)}" })
        }
    }
}
