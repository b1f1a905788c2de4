package app.hushwall.ui.charts

import android.content.Context
import android.graphics.Canvas
import android.graphics.Paint
import android.graphics.RectF
import android.text.format.DateUtils
import android.view.View
import app.hushwall.R
import java.text.NumberFormat

/**
 * Blocks per day as stacked bars (one colour per series), with a y axis (0, half, top), day labels under the first,
 * middle and last bars, and a legend (colour, name, blocks) below. Drawn with the framework's Canvas; colours from
 * resources (values-night for dark mode). The numbers are in its content description, set by the caller.
 */
class BlocksChart(context: Context) : View(context) {
    private var stack = DailyStack(LongArray(0), emptyList())
    private val text = Paint(Paint.ANTI_ALIAS_FLAG).apply { textSize = sp(11f); color = context.getColor(R.color.chart_text_2) }
    private val legendText = Paint(Paint.ANTI_ALIAS_FLAG).apply { textSize = sp(13f); color = context.getColor(R.color.chart_text) }
    private val grid = Paint().apply { color = context.getColor(R.color.chart_grid); strokeWidth = dp(1f) }
    private val fill = Paint(Paint.ANTI_ALIAS_FLAG)
    private val rect = RectF()
    private val numbers = NumberFormat.getIntegerInstance()
    /** Legend entries, their colours and where each one goes (x, line), worked out in [onMeasure]. */
    private var legend: List<String> = emptyList()
    private var legendX = FloatArray(0)
    private var legendLine = IntArray(0)
    private var legendLines = 0

    init {
        styleAsChartCard()
    }

    /** Shows [data]; [description] is what a screen reader says (with the numbers). */
    fun show(data: DailyStack, description: CharSequence) {
        stack = data
        contentDescription = description
        legend = data.series.map { "${it.label} ${numbers.format(it.total)}" }
        requestLayout()
        invalidate()
    }

    override fun onMeasure(widthMeasureSpec: Int, heightMeasureSpec: Int) {
        val width = MeasureSpec.getSize(widthMeasureSpec)
        val usable = width - paddingLeft - paddingRight
        legendX = FloatArray(legend.size)
        legendLine = IntArray(legend.size)
        var x = 0f
        var line = 0
        for ((i, entry) in legend.withIndex()) {
            val w = swatch() + dp(6f) + legendText.measureText(entry) + dp(14f)
            if (x > 0 && x + w > usable) {
                x = 0f
                line++
            }
            legendX[i] = x
            legendLine[i] = line
            x += w
        }
        legendLines = if (legend.isEmpty()) 0 else line + 1
        val height = paddingTop + plotHeight() + labelHeight() + legendLines * legendLineHeight() + paddingBottom
        setMeasuredDimension(width, resolveSize(height.toInt(), heightMeasureSpec))
    }

    override fun onDraw(canvas: Canvas) {
        val days = stack.days
        if (days == 0) return
        val max = ChartData.axisMax((0 until days).maxOf { stack.dayTotal(it) })
        val axisWidth = text.measureText(numbers.format(max)) + dp(6f)
        val left = paddingLeft + axisWidth
        val right = (width - paddingRight).toFloat()
        val top = paddingTop + text.textSize / 2
        val bottom = paddingTop + plotHeight()
        val textShift = -(text.ascent() + text.descent()) / 2
        // Axis: 0, half and top, with grid lines.
        text.textAlign = Paint.Align.RIGHT
        for (value in listOf(0, max / 2, max)) {
            if (value == max / 2 && (max % 2 != 0 || max < 2)) continue
            val y = bottom - (bottom - top) * value / max
            canvas.drawLine(left, y, right, y, grid)
            canvas.drawText(numbers.format(value), left - dp(6f), y + textShift, text)
        }
        // Bars, stacked from the bottom in series order.
        val slot = (right - left) / days
        val gap = (slot * 0.25f).coerceAtMost(dp(4f))
        for (d in 0 until days) {
            var y = bottom
            for ((i, s) in stack.series.withIndex()) {
                val v = s.values[d]
                if (v == 0) continue
                val h = (bottom - top) * v / max
                fill.color = colour(i)
                rect.set(left + d * slot + gap / 2, y - h, left + (d + 1) * slot - gap / 2, y)
                canvas.drawRect(rect, fill)
                y -= h
            }
        }
        // Day labels under the first, middle and last bars.
        val labelY = bottom + dp(4f) - text.ascent()
        for ((d, align) in listOf(0 to Paint.Align.LEFT, days / 2 to Paint.Align.CENTER, days - 1 to Paint.Align.RIGHT)) {
            text.textAlign = align
            val x = when (align) {
                Paint.Align.LEFT -> left
                Paint.Align.RIGHT -> right
                else -> left + (d + 0.5f) * slot
            }
            canvas.drawText(dayLabel(context, stack.dayStarts[d]), x, labelY, text)
        }
        // Legend.
        val legendTop = bottom + labelHeight()
        for ((i, entry) in legend.withIndex()) {
            val x = paddingLeft + legendX[i]
            val yMid = legendTop + legendLine[i] * legendLineHeight() + legendLineHeight() / 2
            fill.color = colour(i)
            rect.set(x, yMid - swatch() / 2, x + swatch(), yMid + swatch() / 2)
            canvas.drawRoundRect(rect, dp(2f), dp(2f), fill)
            val shown = fitMiddle(entry, legendText, width - paddingRight - x - swatch() - dp(6f))
            canvas.drawText(shown, x + swatch() + dp(6f), yMid - (legendText.ascent() + legendText.descent()) / 2, legendText)
        }
    }

    private fun colour(series: Int): Int = context.getColor(
        if (stack.series[series].isOther) R.color.chart_other else SERIES_COLOURS[series % SERIES_COLOURS.size],
    )

    private fun plotHeight() = dp(150f)
    private fun labelHeight() = dp(8f) + text.textSize
    private fun legendLineHeight() = legendText.textSize + dp(10f)
    private fun swatch() = dp(10f)

    companion object {
        private val SERIES_COLOURS = intArrayOf(R.color.chart_1, R.color.chart_2, R.color.chart_3, R.color.chart_4)

        /** A day as the charts name it ("3 Dec" or "Dec 3", as the phone's locale writes it). */
        fun dayLabel(context: Context, dayStart: Long): String = DateUtils.formatDateTime(
            context, dayStart, DateUtils.FORMAT_SHOW_DATE or DateUtils.FORMAT_NO_YEAR or DateUtils.FORMAT_ABBREV_MONTH,
        )

        /**
         * What a screen reader says for [data]: "[subject]: 1,234 blocks; most on 3 Dec (210); by app: Mi Browser
         * 800, …" (the by-app part only with [byApp]).
         */
        fun describe(context: Context, subject: String, data: DailyStack, byApp: Boolean): String {
            val n = NumberFormat.getIntegerInstance()
            val busiest = data.busiestDay
            if (busiest < 0) return context.getString(R.string.chart_days_none, subject)
            val head = context.getString(
                R.string.chart_days_desc, subject, n.format(data.total),
                dayLabel(context, data.dayStarts[busiest]), n.format(data.dayTotal(busiest)),
            )
            if (!byApp) return head
            return head + context.getString(R.string.chart_days_by_app, data.series.joinToString(", ") { "${it.label} ${n.format(it.total)}" })
        }
    }
}
