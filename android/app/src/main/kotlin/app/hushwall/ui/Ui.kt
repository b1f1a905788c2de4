package app.hushwall.ui

import android.content.Context
import android.graphics.Typeface
import android.graphics.drawable.GradientDrawable
import android.text.format.DateUtils
import android.util.TypedValue
import android.view.Gravity
import android.view.View
import android.widget.Button
import android.widget.LinearLayout
import android.widget.TextView
import app.hushwall.R

/**
 * The app's colours for the current configuration: `res/values/colors.xml` (light) or `res/values-night/colors.xml`
 * (dark, when the system's dark theme is on). A screen reads them once when it is built; switching the system
 * setting recreates the activity, so every screen is rebuilt in the new colours.
 */
internal class Palette(context: Context) {
    val brand = context.getColor(R.color.brand)
    /** The selected tab's background. */
    val brandLight = context.getColor(R.color.brand_light)
    val text = context.getColor(R.color.text)
    /** Secondary text: hints, counts, times. */
    val text2 = context.getColor(R.color.text_2)
    val warn = context.getColor(R.color.warn)
    val warnBg = context.getColor(R.color.warn_bg)
    val card = context.getColor(R.color.card)
    val screenBg = context.getColor(R.color.screen_bg)
    /** List dividers. */
    val divider = context.getColor(R.color.divider)
}

/** Small helpers to build the screens in code with framework views only (no AndroidX). */
internal object Ui {

    fun dp(context: Context, value: Int): Int =
        TypedValue.applyDimension(TypedValue.COMPLEX_UNIT_DIP, value.toFloat(), context.resources.displayMetrics).toInt()

    fun vertical(context: Context, padding: Int = 0): LinearLayout = LinearLayout(context).apply {
        orientation = LinearLayout.VERTICAL
        val p = dp(context, padding)
        setPadding(p, p, p, p)
    }

    fun horizontal(context: Context): LinearLayout = LinearLayout(context).apply {
        orientation = LinearLayout.HORIZONTAL
        gravity = Gravity.CENTER_VERTICAL
    }

    fun text(
        context: Context,
        value: CharSequence,
        sizeSp: Float = 15f,
        color: Int? = null,
        bold: Boolean = false,
    ): TextView = TextView(context).apply {
        text = value
        setTextSize(TypedValue.COMPLEX_UNIT_SP, sizeSp)
        setTextColor(color ?: context.getColor(R.color.text))
        if (bold) typeface = Typeface.DEFAULT_BOLD
    }

    /** A rounded panel (the palette's card colour unless [background] is given) with a title, filled by the caller. */
    fun card(context: Context, title: CharSequence?, background: Int? = null): LinearLayout {
        val card = vertical(context, 16)
        card.background = GradientDrawable().apply {
            setColor(background ?: context.getColor(R.color.card))
            cornerRadius = dp(context, 12).toFloat()
        }
        card.layoutParams = LinearLayout.LayoutParams(
            LinearLayout.LayoutParams.MATCH_PARENT, LinearLayout.LayoutParams.WRAP_CONTENT,
        ).apply { setMargins(dp(context, 12), dp(context, 6), dp(context, 12), dp(context, 6)) }
        if (title != null) {
            card.addView(text(context, title, 13f, context.getColor(R.color.brand), bold = true).apply { isAllCaps = true })
        }
        return card
    }

    fun button(context: Context, label: CharSequence, onClick: () -> Unit): Button = Button(context).apply {
        text = label
        setOnClickListener { onClick() }
    }

    /** A row "label ……… value". */
    fun pair(context: Context, label: CharSequence, value: CharSequence, icon: android.graphics.drawable.Drawable? = null): LinearLayout {
        val row = horizontal(context)
        row.setPadding(0, dp(context, 6), 0, dp(context, 6))
        if (icon != null) {
            val image = android.widget.ImageView(context)
            image.setImageDrawable(icon)
            val size = dp(context, 24)
            row.addView(image, LinearLayout.LayoutParams(size, size).apply { rightMargin = dp(context, 10) })
        }
        val l = text(context, label)
        l.maxLines = 1
        l.ellipsize = android.text.TextUtils.TruncateAt.MIDDLE
        row.addView(l, LinearLayout.LayoutParams(0, LinearLayout.LayoutParams.WRAP_CONTENT, 1f))
        row.addView(text(context, value, 15f, context.getColor(R.color.text_2), bold = true))
        return row
    }

    fun time(context: Context, millis: Long, withDate: Boolean = false): String {
        var flags = DateUtils.FORMAT_SHOW_TIME
        if (withDate || !DateUtils.isToday(millis)) flags = flags or DateUtils.FORMAT_SHOW_DATE or DateUtils.FORMAT_ABBREV_MONTH
        return DateUtils.formatDateTime(context, millis, flags)
    }

    /** A reason code from the engine in words (unknown codes are shown as they are). */
    fun reason(code: String): String = when (code) {
        "dns_query" -> "DNS lookup"
        "dns_cname" -> "DNS alias (CNAME)"
        "tls_sni" -> "TLS server name"
        "quic_sni" -> "QUIC server name"
        "http_host" -> "HTTP host"
        "ip_cidr" -> "IP address range"
        "dns_mapped_ip" -> "IP of a blocked name"
        "dns_over_tls" -> "Private DNS (DNS over TLS)"
        "uninspectable" -> "Unreadable TLS/HTTP/QUIC (refused)"
        "local_destination" -> "This device or local-only address"
        "private_dns" -> "Your Private DNS server (let through)"
        "flow_limit" -> "Too many connections"
        "client_limit" -> "Too many connections from this device"
        "icmp_unsupported" -> "ICMP (not forwarded)"
        "app_blocked" -> "App blocked by you"
        else -> code
    }

    fun rule(list: String?, line: Int, text: String?): String =
        if (list == null) "—" else if (line > 0) "$list:$line  ${text ?: ""}".trim() else "$list  ${text ?: ""}".trim()

    fun matchWrap() = LinearLayout.LayoutParams(LinearLayout.LayoutParams.MATCH_PARENT, LinearLayout.LayoutParams.WRAP_CONTENT)

    fun spacer(context: Context, heightDp: Int): View =
        View(context).apply { layoutParams = LinearLayout.LayoutParams(1, dp(context, heightDp)) }
}
