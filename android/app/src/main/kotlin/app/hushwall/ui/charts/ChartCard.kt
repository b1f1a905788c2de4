package app.hushwall.ui.charts

import android.graphics.drawable.GradientDrawable
import android.util.TypedValue
import android.view.View
import app.hushwall.R

/** [v] density-independent pixels in this view's pixels. */
internal fun View.dp(v: Float): Float = TypedValue.applyDimension(TypedValue.COMPLEX_UNIT_DIP, v, resources.displayMetrics)

/** [v] scale-independent pixels (text) in this view's pixels. */
internal fun View.sp(v: Float): Float = TypedValue.applyDimension(TypedValue.COMPLEX_UNIT_SP, v, resources.displayMetrics)

/**
 * What every chart looks like around its drawing: a rounded card in the chart surface colour (values-night for
 * dark mode), 8 dp of padding, and read out by screen readers (its content description carries the numbers).
 */
internal fun View.styleAsChartCard() {
    background = GradientDrawable().apply {
        setColor(context.getColor(R.color.chart_surface))
        cornerRadius = dp(8f)
    }
    val p = dp(8f).toInt()
    setPadding(p, p, p, p)
    importantForAccessibility = View.IMPORTANT_FOR_ACCESSIBILITY_YES
}
