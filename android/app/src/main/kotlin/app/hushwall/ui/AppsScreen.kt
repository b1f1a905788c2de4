package app.hushwall.ui

import android.app.AlertDialog
import android.view.View
import android.view.ViewGroup
import android.widget.BaseAdapter
import android.widget.CheckBox
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.ListView
import android.widget.TextView
import app.hushwall.R
import app.hushwall.data.AppEntry
import app.hushwall.data.AppRule
import app.hushwall.data.Count
import app.hushwall.data.Store
import app.hushwall.ui.charts.BlocksChart
import app.hushwall.ui.charts.ChartData
import app.hushwall.ui.charts.DailyStack
import app.hushwall.ui.charts.HostsChart
import app.hushwall.vpn.HushwallVpnService

/**
 * Apps: per app its blocks (30 days) and the user's rules: traffic allowed on Wi-Fi / on mobile data (unchecked =
 * all its traffic refused there, by the engine's blocked-UID set), and "bypass Hushwall" (left out of the tunnel).
 */
internal class AppsScreen(activity: MainActivity) : Screen(activity) {
    override val titleRes = R.string.tab_apps
    private val ctx = activity
    private val colors = activity.colors
    private val adapter = AppAdapter()
    private val list: ListView
    override val view: View

    private class Item(val app: AppEntry, val blocks: Int, var rule: AppRule)

    init {
        val column = Ui.vertical(ctx)
        val hint = Ui.text(ctx, ctx.getString(R.string.apps_hint), 13f, colors.text2)
        hint.setPadding(Ui.dp(ctx, 12), Ui.dp(ctx, 8), Ui.dp(ctx, 12), Ui.dp(ctx, 8))
        column.addView(hint, Ui.matchWrap())
        list = ListView(ctx)
        list.id = R.id.apps_list
        list.adapter = adapter
        list.setBackgroundColor(colors.card)
        list.divider = android.graphics.drawable.ColorDrawable(colors.divider)
        list.dividerHeight = 1
        list.setOnItemClickListener { _, _, position, _ -> showRules(adapter.items[position]) }
        column.addView(list, LinearLayout.LayoutParams(LinearLayout.LayoutParams.MATCH_PARENT, 0, 1f))
        view = column
    }

    private var loading = false

    /** Reads the installed apps, counts and rules on the data thread (the package list can take seconds). */
    override fun refresh() {
        activity.requestInstalledAppsIfNeeded()
        if (loading) return
        loading = true
        val store = activity.store
        val apps = activity.apps
        val own = ctx.packageName
        activity.load({
            val blocks = store.countsByUid(System.currentTimeMillis() - Store.RETENTION_MILLIS).associate { it.key to it.count }
            val rules = store.rules()
            val entries = LinkedHashMap<Int, AppEntry>()
            for (a in apps.networkApps()) entries[a.uid] = a
            for (uid in blocks.keys) if (uid >= 0 && uid !in entries) entries[uid] = apps.entry(uid)
            entries.values
                .filter { it.packageName != own }
                .map { Item(it, blocks[it.uid] ?: 0, it.packageName?.let { p -> rules[p] } ?: AppRule(it.packageName ?: "")) }
                .sortedWith(compareByDescending<Item> { it.blocks }.thenByDescending { !it.rule.isDefault }.thenBy { it.app.label.lowercase() })
        }) { items ->
            loading = false
            adapter.items = items
            adapter.notifyDataSetChanged()
        }
    }

    private fun save(item: Item, rule: AppRule) {
        if (rule.packageName.isEmpty()) return
        item.rule = rule
        activity.store.setRule(rule)
        adapter.notifyDataSetChanged()
        HushwallVpnService.notifyChanged(ctx, HushwallVpnService.ACTION_RULES_CHANGED)
    }

    /**
     * An app's page: its blocks, its rules, what it tried to reach (hosts by blocks, blocks per day; read on the data
     * thread) and sharing its report.
     */
    private fun showRules(item: Item) {
        if (item.app.packageName == null) return
        val body = Ui.vertical(ctx, 20)
        val all = CheckBox(ctx).apply { setText(R.string.apps_block_all); isChecked = item.rule.blockWifi && item.rule.blockMobile }
        val bypass = CheckBox(ctx).apply { setText(R.string.apps_bypass); isChecked = item.rule.bypass }
        body.addView(Ui.text(ctx, ctx.getString(R.string.apps_blocks_30d, item.blocks), 14f, colors.text2))
        body.addView(all)
        body.addView(bypass)
        body.addView(Ui.text(ctx, ctx.getString(R.string.apps_bypass_hint), 13f, colors.text2))
        val hosts = HostsChart(ctx)
        hosts.id = R.id.app_hosts_chart
        val days = BlocksChart(ctx)
        days.id = R.id.app_days_chart
        body.addView(Ui.text(ctx, ctx.getString(R.string.app_hosts_title), 12f, colors.brand, bold = true), Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 12) })
        body.addView(hosts, Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 4) })
        body.addView(Ui.text(ctx, ctx.getString(R.string.app_days_title), 12f, colors.brand, bold = true), Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 12) })
        body.addView(days, Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 4) })
        val share = Ui.button(ctx, ctx.getString(R.string.share_report)) { Report.share(activity, item.app.uid) }
        share.id = R.id.app_share
        body.addView(share, LinearLayout.LayoutParams(LinearLayout.LayoutParams.WRAP_CONTENT, LinearLayout.LayoutParams.WRAP_CONTENT))
        showCharts(item.app, hosts, days)
        AlertDialog.Builder(ctx)
            .setTitle(item.app.label)
            .setView(android.widget.ScrollView(ctx).apply { addView(body) })
            .setPositiveButton(android.R.string.ok) { _, _ ->
                val blockAll = all.isChecked
                val keepSplit = !blockAll && item.rule.blockWifi && item.rule.blockMobile
                save(item, item.rule.copy(
                    blockWifi = if (blockAll) true else if (keepSplit) false else item.rule.blockWifi,
                    blockMobile = if (blockAll) true else if (keepSplit) false else item.rule.blockMobile,
                    bypass = bypass.isChecked,
                ))
            }
            .setNegativeButton(android.R.string.cancel, null)
            .setNeutralButton(R.string.apps_show_log) { _, _ -> activity.showLogFor(item.app.uid) }
            .show()
    }

    /** Fills an app page's charts from the store (read on the data thread). */
    private fun showCharts(app: AppEntry, hosts: HostsChart, days: BlocksChart) {
        val store = activity.store
        activity.load({
            val boundaries = ChartData.dayBoundaries(System.currentTimeMillis())
            val perDay = ChartData.stackByApp(store.blocksByDayAndUid(boundaries, app.uid), boundaries, 1, { app.label }, app.label)
            Pair<List<Count<String>>, DailyStack>(store.hostCounts(boundaries.first(), ChartData.TOP_HOSTS, app.uid), perDay)
        }) { (top, perDay) ->
            hosts.show(top, HostsChart.describe(ctx, app.label, top))
            days.show(perDay, BlocksChart.describe(ctx, ctx.getString(R.string.chart_subject_app, app.label), perDay, byApp = false))
        }
    }

    private inner class AppAdapter : BaseAdapter() {
        var items: List<Item> = emptyList()
        override fun getCount() = items.size
        override fun getItem(position: Int) = items[position]
        override fun getItemId(position: Int) = items[position].app.uid.toLong()

        override fun getView(position: Int, convertView: View?, parent: ViewGroup?): View {
            val row = convertView as? LinearLayout ?: newRow()
            val item = items[position]
            (row.getChildAt(0) as ImageView).setImageDrawable(activity.apps.icon(item.app.uid))
            val texts = row.getChildAt(1) as LinearLayout
            (texts.getChildAt(0) as TextView).text = item.app.label
            val state = when {
                item.rule.bypass -> ctx.getString(R.string.apps_state_bypass)
                item.rule.blockWifi && item.rule.blockMobile -> ctx.getString(R.string.apps_state_blocked)
                item.rule.blockWifi -> ctx.getString(R.string.apps_state_no_wifi)
                item.rule.blockMobile -> ctx.getString(R.string.apps_state_no_mobile)
                else -> ctx.getString(R.string.apps_state_filtered)
            }
            (texts.getChildAt(1) as TextView).text = ctx.getString(R.string.apps_row_detail, item.blocks, state)
            val wifi = row.getChildAt(2) as CheckBox
            val mobile = row.getChildAt(3) as CheckBox
            wifi.setOnCheckedChangeListener(null)
            mobile.setOnCheckedChangeListener(null)
            wifi.isChecked = !item.rule.blockWifi
            mobile.isChecked = !item.rule.blockMobile
            val enabled = item.app.packageName != null && !item.rule.bypass
            wifi.isEnabled = enabled
            mobile.isEnabled = enabled
            wifi.setOnCheckedChangeListener { _, checked -> save(item, item.rule.copy(blockWifi = !checked)) }
            mobile.setOnCheckedChangeListener { _, checked -> save(item, item.rule.copy(blockMobile = !checked)) }
            return row
        }

        private fun newRow(): LinearLayout {
            val row = Ui.horizontal(ctx)
            row.setPadding(Ui.dp(ctx, 12), Ui.dp(ctx, 8), Ui.dp(ctx, 4), Ui.dp(ctx, 8))
            // Rows with focusable children still take item clicks only if the children do not grab focus.
            row.descendantFocusability = ViewGroup.FOCUS_BLOCK_DESCENDANTS
            val icon = ImageView(ctx)
            row.addView(icon, LinearLayout.LayoutParams(Ui.dp(ctx, 36), Ui.dp(ctx, 36)).apply { rightMargin = Ui.dp(ctx, 12) })
            val texts = Ui.vertical(ctx)
            texts.addView(Ui.text(ctx, "", 15f, colors.text, bold = true).apply { maxLines = 1 })
            texts.addView(Ui.text(ctx, "", 12f, colors.text2))
            row.addView(texts, LinearLayout.LayoutParams(0, LinearLayout.LayoutParams.WRAP_CONTENT, 1f))
            row.addView(CheckBox(ctx).apply { setText(R.string.apps_wifi); textSize = 12f; isFocusable = false })
            row.addView(CheckBox(ctx).apply { setText(R.string.apps_mobile); textSize = 12f; isFocusable = false })
            return row
        }
    }
}
