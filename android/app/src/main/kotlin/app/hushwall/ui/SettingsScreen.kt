package app.hushwall.ui

import android.app.AlertDialog
import android.view.View
import android.widget.ScrollView
import android.widget.Switch
import android.widget.TextView
import app.hushwall.R

/** Settings: start on boot, payload peek (off by default), export and clearing of the log. */
internal class SettingsScreen(activity: MainActivity) : Screen(activity) {
    override val titleRes = R.string.tab_settings
    private val ctx = activity
    private val boot: Switch
    private val lan: Switch
    private val peek: Switch
    private val capture: Switch
    private val stored: TextView
    override val view: View

    init {
        val column = Ui.vertical(ctx)
        column.setPadding(0, Ui.dp(ctx, 6), 0, Ui.dp(ctx, 12))
        val general = Ui.card(ctx, ctx.getString(R.string.settings_general))
        boot = Switch(ctx).apply { id = R.id.settings_boot; setText(R.string.settings_boot) }
        boot.setOnCheckedChangeListener { _, checked -> activity.prefs.startOnBoot = checked }
        general.addView(boot, Ui.matchWrap())
        general.addView(Ui.text(ctx, ctx.getString(R.string.settings_boot_text), 13f, Ui.TEXT_2))
        lan = Switch(ctx).apply { id = R.id.settings_lan; setText(R.string.settings_lan) }
        lan.setOnCheckedChangeListener { _, checked -> activity.prefs.allowLan = checked }
        general.addView(lan, Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 12) })
        general.addView(Ui.text(ctx, ctx.getString(R.string.settings_lan_text), 13f, Ui.TEXT_2))
        peek = Switch(ctx).apply { id = R.id.settings_peek; setText(R.string.settings_peek) }
        peek.setOnCheckedChangeListener { _, checked -> activity.prefs.peek = checked }
        general.addView(peek, Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 12) })
        general.addView(Ui.text(ctx, ctx.getString(R.string.settings_peek_text), 13f, Ui.TEXT_2))
        capture = Switch(ctx).apply { id = R.id.settings_capture; setText(R.string.settings_capture) }
        capture.setOnCheckedChangeListener { _, checked -> activity.prefs.capture = checked }
        general.addView(capture, Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 12) })
        general.addView(Ui.text(ctx, ctx.getString(R.string.settings_capture_text), 13f, Ui.TEXT_2))
        general.addView(Ui.button(ctx, ctx.getString(R.string.settings_export_capture)) { activity.exportCapture() }.apply { id = R.id.settings_export_capture })
        column.addView(general)

        val data = Ui.card(ctx, ctx.getString(R.string.settings_log))
        stored = Ui.text(ctx, "", 14f)
        stored.id = R.id.settings_stored
        data.addView(stored)
        data.addView(Ui.button(ctx, ctx.getString(R.string.settings_export_csv)) { activity.export(json = false) }.apply { id = R.id.settings_export_csv })
        data.addView(Ui.button(ctx, ctx.getString(R.string.settings_export_json)) { activity.export(json = true) }.apply { id = R.id.settings_export_json })
        data.addView(Ui.button(ctx, ctx.getString(R.string.settings_clear)) {
            AlertDialog.Builder(ctx)
                .setMessage(R.string.settings_clear_confirm)
                .setPositiveButton(R.string.settings_clear) { _, _ ->
                    activity.store.clearLog()
                    refresh()
                }
                .setNegativeButton(android.R.string.cancel, null)
                .show()
        })
        column.addView(data)
        view = ScrollView(ctx).apply { addView(column) }
    }

    override fun refresh() {
        boot.isChecked = activity.prefs.startOnBoot
        lan.isChecked = activity.prefs.allowLan
        peek.isChecked = activity.prefs.peek
        capture.isChecked = activity.prefs.capture
        stored.text = ctx.getString(R.string.settings_stored, activity.store.countAll())
    }
}
