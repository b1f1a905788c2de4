package app.hushwall.ui

import android.app.AlertDialog
import android.view.View
import android.view.ViewGroup
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.BaseAdapter
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.ListView
import android.widget.ScrollView
import android.widget.Spinner
import android.widget.TextView
import app.hushwall.R
import app.hushwall.data.LogEntry
import org.json.JSONArray
import org.json.JSONObject

/** Live log: every block, newest first (app, host, reason, rule, time); filter by app; tap for details. */
internal class LogScreen(activity: MainActivity) : Screen(activity) {
    override val titleRes = R.string.tab_log
    override val live = true
    private val ctx = activity
    private val colors = activity.colors
    private val filter: Spinner
    private val list: ListView
    private val empty: TextView
    private val adapter = EntryAdapter()
    /** Spinner position → UID (index 0: all apps). */
    private var filterUids: List<Int?> = listOf(null)
    private var selectedUid: Int? = null
    private var lastTopId = -1L
    override val view: View

    init {
        val column = Ui.vertical(ctx)
        val top = Ui.horizontal(ctx)
        top.setPadding(Ui.dp(ctx, 12), Ui.dp(ctx, 4), Ui.dp(ctx, 12), 0)
        top.addView(Ui.text(ctx, ctx.getString(R.string.log_filter), 14f, colors.text2))
        filter = Spinner(ctx)
        filter.id = R.id.log_filter
        top.addView(filter, LinearLayout.LayoutParams(0, LinearLayout.LayoutParams.WRAP_CONTENT, 1f))
        column.addView(top, Ui.matchWrap())
        empty = Ui.text(ctx, ctx.getString(R.string.log_empty), 15f, colors.text2)
        empty.setPadding(Ui.dp(ctx, 16), Ui.dp(ctx, 16), Ui.dp(ctx, 16), Ui.dp(ctx, 16))
        column.addView(empty, Ui.matchWrap())
        list = ListView(ctx)
        list.id = R.id.log_list
        list.adapter = adapter
        list.divider = android.graphics.drawable.ColorDrawable(colors.divider)
        list.dividerHeight = 1
        list.setBackgroundColor(colors.card)
        list.setOnItemClickListener { _, _, position, _ -> showDetails(adapter.getItem(position)) }
        column.addView(list, LinearLayout.LayoutParams(LinearLayout.LayoutParams.MATCH_PARENT, 0, 1f))
        filter.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, v: View?, position: Int, id: Long) {
                val uid = filterUids.getOrNull(position)
                if (uid != selectedUid) {
                    selectedUid = uid
                    lastTopId = -1
                    refresh()
                }
            }

            override fun onNothingSelected(parent: AdapterView<*>?) {}
        }
        view = column
    }

    fun filterTo(uid: Int) {
        selectedUid = uid
        lastTopId = -1
        refresh()
    }

    private var loading = false

    override fun refresh() {
        if (loading) return
        loading = true
        val store = activity.store
        val apps = activity.apps
        val uid = selectedUid
        activity.load({
            val uids = store.countsByUid(System.currentTimeMillis() - app.hushwall.data.Store.RETENTION_MILLIS)
            Triple(uids, uids.map { "${apps.entry(it.key).label} (${it.count})" }, store.recent(LIMIT, uid))
        }) { (uids, names, entries) ->
            loading = false
            show(uids.map { it.key }, names, entries)
        }
    }

    private fun show(uids: List<Int>, names: List<String>, entries: List<LogEntry>) {
        val choices = listOf<Int?>(null) + uids
        if (choices != filterUids) {
            filterUids = choices
            val labels = listOf(ctx.getString(R.string.log_all_apps)) + names
            filter.adapter = ArrayAdapter(ctx, android.R.layout.simple_spinner_dropdown_item, labels)
        }
        val position = filterUids.indexOf(selectedUid).coerceAtLeast(0)
        if (filter.selectedItemPosition != position) filter.setSelection(position)
        val topId = entries.firstOrNull()?.id ?: 0L
        if (topId != lastTopId) {
            lastTopId = topId
            adapter.entries = entries
            adapter.notifyDataSetChanged()
        }
        empty.visibility = if (entries.isEmpty()) View.VISIBLE else View.GONE
    }

    private inner class EntryAdapter : BaseAdapter() {
        var entries: List<LogEntry> = emptyList()
        override fun getCount() = entries.size
        override fun getItem(position: Int) = entries[position]
        override fun getItemId(position: Int) = entries[position].id

        override fun getView(position: Int, convertView: View?, parent: ViewGroup?): View {
            val row = convertView as? LinearLayout ?: newRow()
            val e = entries[position]
            val app = activity.apps.entry(e.uid)
            (row.getChildAt(0) as ImageView).setImageDrawable(activity.apps.icon(e.uid))
            val texts = row.getChildAt(1) as LinearLayout
            val line1 = texts.getChildAt(0) as LinearLayout
            (line1.getChildAt(0) as TextView).text = app.label
            (line1.getChildAt(1) as TextView).text = Ui.time(ctx, e.timeMillis)
            (texts.getChildAt(1) as TextView).text = hostLine(e)
            (texts.getChildAt(2) as TextView).text =
                Ui.reason(e.reason) + "  ·  " + Ui.rule(e.ruleList, e.ruleLine, e.ruleText) + (if (e.peekJson != null) "  ·  " + ctx.getString(R.string.log_has_peek) else "")
            return row
        }

        private fun newRow(): LinearLayout {
            val row = Ui.horizontal(ctx)
            row.setPadding(Ui.dp(ctx, 12), Ui.dp(ctx, 10), Ui.dp(ctx, 12), Ui.dp(ctx, 10))
            val icon = ImageView(ctx)
            row.addView(icon, LinearLayout.LayoutParams(Ui.dp(ctx, 36), Ui.dp(ctx, 36)).apply { rightMargin = Ui.dp(ctx, 12) })
            val texts = Ui.vertical(ctx)
            val line1 = Ui.horizontal(ctx)
            val name = Ui.text(ctx, "", 15f, colors.text, bold = true)
            name.maxLines = 1
            line1.addView(name, LinearLayout.LayoutParams(0, LinearLayout.LayoutParams.WRAP_CONTENT, 1f))
            line1.addView(Ui.text(ctx, "", 13f, colors.text2))
            texts.addView(line1, Ui.matchWrap())
            texts.addView(Ui.text(ctx, "", 15f, colors.text).apply { maxLines = 1; ellipsize = android.text.TextUtils.TruncateAt.MIDDLE })
            texts.addView(Ui.text(ctx, "", 12f, colors.text2).apply { maxLines = 2 })
            row.addView(texts, LinearLayout.LayoutParams(0, LinearLayout.LayoutParams.WRAP_CONTENT, 1f))
            return row
        }
    }

    /** The details dialog: everything stored about one block, with the decoded payload peek if any. */
    fun showDetails(e: LogEntry): AlertDialog {
        val app = activity.apps.entry(e.uid)
        val body = Ui.vertical(ctx, 20)
        fun field(label: Int, value: String) {
            body.addView(Ui.text(ctx, ctx.getString(label), 12f, colors.brand, bold = true))
            body.addView(Ui.text(ctx, value, 15f).apply { setTextIsSelectable(true) }, Ui.matchWrap().apply { bottomMargin = Ui.dp(ctx, 8) })
        }
        field(R.string.detail_time, Ui.time(ctx, e.timeMillis, withDate = true))
        field(R.string.detail_app, "${app.label}\n${app.packageName ?: "—"} · UID ${e.uid}")
        field(R.string.detail_host, e.host ?: "—")
        field(R.string.detail_destination, "${e.protocol} ${e.destination}")
        field(R.string.detail_reason, "${Ui.reason(e.reason)} (${e.reason})")
        field(R.string.detail_rule, Ui.rule(e.ruleList, e.ruleLine, e.ruleText))
        if (e.peekJson != null) {
            val peek = Ui.text(ctx, prettyJson(e.peekJson), 13f, colors.text)
            peek.id = R.id.detail_peek
            peek.typeface = android.graphics.Typeface.MONOSPACE
            peek.setTextIsSelectable(true)
            body.addView(Ui.text(ctx, ctx.getString(R.string.detail_peek), 12f, colors.brand, bold = true))
            body.addView(peek)
        }
        val scroll = ScrollView(ctx)
        scroll.id = R.id.detail_body
        scroll.addView(body)
        val dialog = AlertDialog.Builder(ctx)
            .setTitle(R.string.detail_title)
            .setView(scroll)
            .setPositiveButton(android.R.string.ok, null)
            .setNeutralButton(R.string.detail_only_this_app) { _, _ -> filterTo(e.uid) }
            .create()
        dialog.show()
        return dialog
    }

    companion object {
        private const val LIMIT = 500

        /** The row's second line: the host (or address), with "×N" when the entry stands for N folded blocks. */
        fun hostLine(e: LogEntry): String = (e.host ?: e.destination) + if (e.repeats > 1) "  ×${e.repeats}" else ""

        fun prettyJson(json: String): String = try {
            if (json.trimStart().startsWith("[")) JSONArray(json).toString(2).replace("\\/", "/") else JSONObject(json).toString(2).replace("\\/", "/")
        } catch (e: Exception) {
            json
        }
    }
}
