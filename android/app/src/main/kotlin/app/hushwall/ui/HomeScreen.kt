package app.hushwall.ui

import android.net.ConnectivityManager
import android.view.Gravity
import android.view.View
import android.widget.Button
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.TextView
import app.hushwall.R
import app.hushwall.data.Store
import app.hushwall.ui.charts.BlocksChart
import app.hushwall.ui.charts.ChartData
import app.hushwall.ui.charts.DailyStack
import app.hushwall.vpn.HushwallVpnService

/** Home: on/off, today's blocks, a 30-day chart by app (and sharing a report), the most blocked hosts and apps. */
internal class HomeScreen(activity: MainActivity) : Screen(activity) {
    override val titleRes = R.string.tab_home
    override val live = true
    private val ctx = activity
    private val colors = activity.colors
    private val status: TextView
    private val detail: TextView
    private val toggle: Button
    private val privateDns: LinearLayout
    private val privateDnsText: TextView
    private val today: TextView
    private val month: TextView
    private val chart: BlocksChart
    private val hosts: LinearLayout
    private val appsList: LinearLayout
    override val view: View

    init {
        val column = Ui.vertical(ctx)
        column.setPadding(0, Ui.dp(ctx, 6), 0, Ui.dp(ctx, 12))

        val head = Ui.card(ctx, null)
        head.gravity = Gravity.CENTER_HORIZONTAL
        val icon = ImageView(ctx)
        icon.setImageResource(R.drawable.ic_launcher)
        head.addView(icon, LinearLayout.LayoutParams(Ui.dp(ctx, 72), Ui.dp(ctx, 72)))
        status = Ui.text(ctx, "", 20f, colors.text, bold = true)
        status.id = R.id.home_status
        status.gravity = Gravity.CENTER
        head.addView(status, Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 10) })
        detail = Ui.text(ctx, "", 14f, colors.text2)
        detail.gravity = Gravity.CENTER
        head.addView(detail, Ui.matchWrap())
        toggle = Ui.button(ctx, "") { activity.toggleVpn() }
        toggle.id = R.id.home_toggle
        toggle.minWidth = Ui.dp(ctx, 180)
        head.addView(toggle, LinearLayout.LayoutParams(LinearLayout.LayoutParams.WRAP_CONTENT, LinearLayout.LayoutParams.WRAP_CONTENT).apply { topMargin = Ui.dp(ctx, 12) })
        column.addView(head)

        privateDns = Ui.card(ctx, ctx.getString(R.string.private_dns_title), colors.warnBg)
        privateDns.id = R.id.home_private_dns
        privateDnsText = Ui.text(ctx, "", 14f, colors.warn)
        privateDnsText.id = R.id.home_private_dns_text
        privateDns.addView(privateDnsText)
        privateDns.addView(Ui.button(ctx, ctx.getString(R.string.private_dns_open)) { activity.openPrivateDnsSettings() })
        column.addView(privateDns)

        val counts = Ui.card(ctx, ctx.getString(R.string.home_today_title))
        today = Ui.text(ctx, "0", 40f, colors.brand, bold = true)
        today.id = R.id.home_today
        counts.addView(today)
        month = Ui.text(ctx, "", 14f, colors.text2)
        counts.addView(month)
        column.addView(counts)

        val chartCard = Ui.card(ctx, null, ctx.getColor(R.color.chart_surface))
        chartCard.addView(Ui.text(ctx, ctx.getString(R.string.home_chart_title), 13f, ctx.getColor(R.color.chart_text), bold = true).apply { isAllCaps = true })
        chart = BlocksChart(ctx)
        chart.id = R.id.home_chart
        chartCard.addView(chart, Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 6) })
        val share = Ui.button(ctx, ctx.getString(R.string.share_report)) { Report.share(activity) }
        share.id = R.id.home_share
        chartCard.addView(share, LinearLayout.LayoutParams(LinearLayout.LayoutParams.WRAP_CONTENT, LinearLayout.LayoutParams.WRAP_CONTENT))
        column.addView(chartCard)

        val hostCard = Ui.card(ctx, ctx.getString(R.string.home_top_hosts))
        hosts = Ui.vertical(ctx)
        hosts.id = R.id.home_top_hosts
        hostCard.addView(hosts)
        column.addView(hostCard)

        val appCard = Ui.card(ctx, ctx.getString(R.string.home_top_apps))
        appsList = Ui.vertical(ctx)
        appsList.id = R.id.home_top_apps
        appCard.addView(appsList)
        column.addView(appCard)

        view = ScrollView(ctx).apply { addView(column) }
    }

    private var loading = false

    /** What Home shows from storage, read on the data thread. */
    private class Data(
        val today: Int,
        val month: Int,
        val hosts: List<app.hushwall.data.Count<String>>,
        val apps: List<Pair<app.hushwall.data.AppEntry, Int>>,
        /** Null when it was not read again (nothing new blocked in the last minute). */
        val chart: DailyStack?,
    )

    // Read and written on the data thread only: when the chart was last read, and today's count then.
    private var chartReadAt = 0L
    private var chartToday = -1

    override fun refresh() {
        val on = HushwallVpnService.running
        status.setText(
            when {
                HushwallVpnService.restarting -> R.string.notification_restarting
                on -> R.string.status_on
                else -> R.string.status_off
            },
        )
        toggle.setText(if (on) R.string.action_stop else R.string.action_start)
        val error = activity.prefs.lastError
        detail.text = when {
            error.isNotEmpty() -> error
            on -> ctx.getString(R.string.home_since_start, HushwallVpnService.blockedSinceStart)
            else -> ctx.getString(R.string.home_off_hint)
        }
        detail.setTextColor(if (error.isNotEmpty()) colors.warn else colors.text2)
        val dns = privateDnsServer(activity)
        privateDns.visibility = if (dns != null) View.VISIBLE else View.GONE
        if (dns != null) privateDnsText.text = ctx.getString(R.string.private_dns_text, dns)

        if (loading) return
        loading = true
        val store = activity.store
        val apps = activity.apps
        val other = ctx.getString(R.string.chart_other)
        activity.load({
            val startOfDay = Store.startOfToday()
            val now = System.currentTimeMillis()
            val todayCount = store.countSince(startOfDay)
            // Home refreshes every second; the 30-day chart only when something was blocked or a minute passed.
            val stack = if (todayCount == chartToday && now - chartReadAt < CHART_REFRESH_MS) null else {
                chartReadAt = now
                chartToday = todayCount
                val days = ChartData.dayBoundaries(now)
                ChartData.stackByApp(store.blocksByDayAndUid(days), days, ChartData.TOP_APPS, { apps.entry(it).label }, other)
            }
            Data(
                todayCount,
                store.countSince(System.currentTimeMillis() - Store.RETENTION_MILLIS),
                store.topHosts(startOfDay, 5),
                store.countsByUid(startOfDay, 5).map { apps.entry(it.key) to it.count },
                stack,
            )
        }) { show(it) }
    }

    private fun show(d: Data) {
        loading = false
        today.text = d.today.toString()
        month.text = ctx.getString(R.string.home_month, d.month)
        if (d.chart != null) chart.show(d.chart, BlocksChart.describe(ctx, ctx.getString(R.string.chart_subject_all), d.chart, byApp = true))
        hosts.removeAllViews()
        if (d.hosts.isEmpty()) hosts.addView(Ui.text(ctx, ctx.getString(R.string.home_nothing_yet), 14f, colors.text2))
        for (h in d.hosts) hosts.addView(Ui.pair(ctx, h.key, h.count.toString()))
        appsList.removeAllViews()
        if (d.apps.isEmpty()) appsList.addView(Ui.text(ctx, ctx.getString(R.string.home_nothing_yet), 14f, colors.text2))
        for ((app, count) in d.apps) {
            val row = Ui.pair(ctx, app.label, count.toString(), activity.apps.icon(app.uid))
            row.setOnClickListener { activity.showLogFor(app.uid) }
            appsList.addView(row)
        }
    }

    companion object {
        private const val CHART_REFRESH_MS = 60_000L

        /**
         * While Private DNS (DNS over TLS) is on for the network we run over: its server name ("automatic" in
         * opportunistic mode); null while it is off. Lookups then go encrypted past the engine's DNS view.
         */
        fun privateDnsServer(activity: android.app.Activity): String? {
            val automatic = activity.getString(R.string.private_dns_automatic)
            HushwallVpnService.privateDnsActive?.let { return if (it) HushwallVpnService.privateDnsServer ?: automatic else null }
            return try {
                val cm = activity.getSystemService(ConnectivityManager::class.java)
                val network = cm.activeNetwork ?: return null
                val lp = cm.getLinkProperties(network) ?: return null
                if (lp.isPrivateDnsActive) lp.privateDnsServerName ?: automatic else null
            } catch (e: RuntimeException) {
                null
            }
        }
    }
}
