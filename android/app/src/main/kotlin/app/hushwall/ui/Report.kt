package app.hushwall.ui

import android.content.ActivityNotFoundException
import android.content.Context
import android.content.Intent
import android.text.TextUtils
import android.text.format.DateUtils
import android.widget.Toast
import app.hushwall.R
import app.hushwall.data.Count
import app.hushwall.data.LogEntry
import app.hushwall.data.Store
import app.hushwall.ui.charts.ChartData
import java.text.NumberFormat

/** What a report says, read from the store by [Report.load]: the period, its blocks and what stood out. */
internal class ReportData(
    val from: Long,
    val until: Long,
    /** The app the report is about, or null for every app. */
    val app: String?,
    val total: Int,
    val apps: List<Count<String>>,
    val hosts: List<Count<String>>,
    /** Reason codes, as the engine names them. */
    val reasons: List<Count<String>>,
    /** The newest entries with a payload peek, each with its app's name. */
    val peeks: List<Pair<LogEntry, String>>,
)

/**
 * "Share what Hushwall blocked": a short summary of the last 30 days (the Home chart's days) as plain text and as
 * HTML, sent through the share sheet. Reasons, times and payload peeks are written by the Live log's own code
 * ([Ui.reason], [Ui.time], [LogScreen.prettyJson] of the peek the engine already redacted), so the report shows
 * exactly what the log shows.
 */
internal object Report {
    /** Apps, hosts and reasons listed. */
    const val TOP = 5
    /** Payload peeks included (the newest). */
    const val PEEKS = 3

    /** Reads the report's data for the 30 days ending at [now], of [uid] only when given (on the data thread). */
    fun load(store: Store, label: (Int) -> String, now: Long, uid: Int? = null): ReportData {
        val from = ChartData.dayBoundaries(now).first()
        val reasons = store.reasonCounts(from, uid)
        return ReportData(
            from = from,
            until = now,
            app = uid?.let(label),
            total = reasons.sumOf { it.count },
            apps = if (uid != null) emptyList() else store.uidCounts(from, TOP).map { Count(label(it.key), it.count) },
            hosts = store.hostCounts(from, TOP, uid),
            reasons = reasons.take(TOP),
            peeks = store.recentPeeks(from, PEEKS, uid).map { it to label(it.uid) },
        )
    }

    /** One part of the report: a heading and its lines ([pre]: kept as they are, e.g. indented JSON). */
    private class Section(val title: String?, val lines: List<String>, val pre: List<Boolean> = lines.map { false }, val bullets: Boolean = true)

    private fun sections(ctx: Context, r: ReportData): List<Section> {
        val n = NumberFormat.getIntegerInstance()
        val range = DateUtils.formatDateRange(
            ctx, r.from, r.until,
            DateUtils.FORMAT_SHOW_DATE or DateUtils.FORMAT_SHOW_YEAR or DateUtils.FORMAT_ABBREV_MONTH,
        )
        var period = ctx.getString(R.string.report_period, range)
        if (r.app != null) period += " · " + ctx.getString(R.string.report_only_app, r.app)
        val total = if (r.total == 0) ctx.getString(R.string.report_empty)
        else ctx.resources.getQuantityString(R.plurals.report_total, r.total, n.format(r.total))
        val out = arrayListOf(Section(null, listOf(period, total), bullets = false))
        if (r.total == 0) return out
        fun counts(title: Int, counts: List<Count<String>>, name: (String) -> String = { it }) {
            if (counts.isNotEmpty()) out.add(Section(ctx.getString(title), counts.map { "${name(it.key)}: ${n.format(it.count)}" }))
        }
        counts(R.string.report_apps, r.apps)
        counts(R.string.report_hosts, r.hosts)
        counts(R.string.report_reasons, r.reasons) { Ui.reason(it) }
        if (r.peeks.isNotEmpty()) {
            val lines = ArrayList<String>()
            val pre = ArrayList<Boolean>()
            for ((e, app) in r.peeks) {
                val json = e.peekJson ?: continue
                lines.add("${Ui.time(ctx, e.timeMillis, withDate = true)} · $app · ${e.host ?: e.destination}")
                pre.add(false)
                lines.add(LogScreen.prettyJson(json))
                pre.add(true)
            }
            out.add(Section(ctx.getString(R.string.report_peeks), lines, pre, bullets = false))
        }
        return out
    }

    /** The report as plain text. */
    fun text(ctx: Context, r: ReportData): String {
        val b = StringBuilder(ctx.getString(R.string.report_title)).append('\n')
        for (s in sections(ctx, r)) {
            if (s.title != null) b.append('\n').append(s.title).append('\n')
            for (line in s.lines) b.append(if (s.bullets) "• " else "").append(line).append('\n')
        }
        return b.append('\n').append(ctx.getString(R.string.report_footer)).append('\n').toString()
    }

    /** The report as HTML (`EXTRA_HTML_TEXT`): the same words, every value escaped. */
    fun html(ctx: Context, r: ReportData): String {
        fun esc(s: String) = TextUtils.htmlEncode(s)
        val b = StringBuilder("<h3>").append(esc(ctx.getString(R.string.report_title))).append("</h3>\n")
        for (s in sections(ctx, r)) {
            if (s.title != null) b.append("<h4>").append(esc(s.title)).append("</h4>\n")
            if (s.bullets) {
                b.append("<ul>\n")
                for (line in s.lines) b.append("<li>").append(esc(line)).append("</li>\n")
                b.append("</ul>\n")
            } else {
                for ((i, line) in s.lines.withIndex()) {
                    if (s.pre[i]) b.append("<pre>").append(esc(line)).append("</pre>\n") else b.append("<p>").append(esc(line)).append("</p>\n")
                }
            }
        }
        return b.append("<p><small>").append(esc(ctx.getString(R.string.report_footer))).append("</small></p>\n").toString()
    }

    /** The share sheet (`ACTION_SEND` in a chooser) with the report as text and HTML. */
    fun intent(ctx: Context, r: ReportData): Intent {
        val send = Intent(Intent.ACTION_SEND)
            .setType("text/plain")
            .putExtra(Intent.EXTRA_SUBJECT, ctx.getString(R.string.report_title))
            .putExtra(Intent.EXTRA_TEXT, text(ctx, r))
            .putExtra(Intent.EXTRA_HTML_TEXT, html(ctx, r))
        return Intent.createChooser(send, ctx.getString(R.string.share_report))
    }

    /** Reads the report on the data thread (of [uid] only when given) and opens the share sheet with it. */
    fun share(activity: MainActivity, uid: Int? = null) {
        val store = activity.store
        val apps = activity.apps
        activity.load({ load(store, { apps.entry(it).label }, System.currentTimeMillis(), uid) }) { data ->
            try {
                activity.startActivity(intent(activity, data))
            } catch (e: ActivityNotFoundException) {
                Toast.makeText(activity, R.string.share_no_app, Toast.LENGTH_LONG).show()
            }
        }
    }
}
