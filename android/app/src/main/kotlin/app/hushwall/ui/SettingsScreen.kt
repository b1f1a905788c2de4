package app.hushwall.ui

import android.app.AlertDialog
import android.text.InputType
import android.view.View
import android.widget.EditText
import android.widget.ScrollView
import android.widget.Switch
import android.widget.TextView
import app.hushwall.R
import app.hushwall.data.Resolvers
import app.hushwall.vpn.HushwallVpnService

/**
 * Settings: start on boot, LAN, payload peek (off by default), capture, blocking of public DoH/DoT resolvers (off by
 * default), DNS fallbacks, export and clearing of the log.
 */
internal class SettingsScreen(activity: MainActivity) : Screen(activity) {
    override val titleRes = R.string.tab_settings
    private val ctx = activity
    private val colors = activity.colors
    private val boot: Switch
    private val lan: Switch
    private val peek: Switch
    private val capture: Switch
    private val blockDoh: Switch
    private val stored: TextView
    private val dns: EditText
    private val dnsResult: TextView
    override val view: View

    init {
        val column = Ui.vertical(ctx)
        column.setPadding(0, Ui.dp(ctx, 6), 0, Ui.dp(ctx, 12))
        val general = Ui.card(ctx, ctx.getString(R.string.settings_general))
        boot = Switch(ctx).apply { id = R.id.settings_boot; setText(R.string.settings_boot) }
        boot.setOnCheckedChangeListener { _, checked -> activity.prefs.startOnBoot = checked }
        general.addView(boot, Ui.matchWrap())
        general.addView(Ui.text(ctx, ctx.getString(R.string.settings_boot_text), 13f, colors.text2))
        lan = Switch(ctx).apply { id = R.id.settings_lan; setText(R.string.settings_lan) }
        lan.setOnCheckedChangeListener { _, checked -> activity.prefs.allowLan = checked }
        general.addView(lan, Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 12) })
        general.addView(Ui.text(ctx, ctx.getString(R.string.settings_lan_text), 13f, colors.text2))
        peek = Switch(ctx).apply { id = R.id.settings_peek; setText(R.string.settings_peek) }
        peek.setOnCheckedChangeListener { _, checked -> activity.prefs.peek = checked }
        general.addView(peek, Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 12) })
        general.addView(Ui.text(ctx, ctx.getString(R.string.settings_peek_text), 13f, colors.text2))
        capture = Switch(ctx).apply { id = R.id.settings_capture; setText(R.string.settings_capture) }
        capture.setOnCheckedChangeListener { _, checked -> activity.prefs.capture = checked }
        general.addView(capture, Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 12) })
        general.addView(Ui.text(ctx, ctx.getString(R.string.settings_capture_text), 13f, colors.text2))
        general.addView(Ui.button(ctx, ctx.getString(R.string.settings_export_capture)) { activity.exportCapture() }.apply { id = R.id.settings_export_capture })
        column.addView(general)

        val dohCard = Ui.card(ctx, ctx.getString(R.string.settings_doh_title))
        blockDoh = Switch(ctx).apply { id = R.id.settings_block_doh; setText(R.string.settings_block_doh) }
        blockDoh.setOnCheckedChangeListener { _, checked ->
            // A list setting like the profile: the running engine gets a new policy (no restart of the tunnel).
            if (checked != activity.prefs.blockDoh) {
                activity.prefs.blockDoh = checked
                HushwallVpnService.notifyChanged(ctx, HushwallVpnService.ACTION_POLICY_CHANGED)
            }
        }
        dohCard.addView(blockDoh, Ui.matchWrap())
        dohCard.addView(Ui.text(ctx, ctx.getString(R.string.settings_block_doh_text), 13f, colors.text2))
        column.addView(dohCard)

        val dnsCard = Ui.card(ctx, ctx.getString(R.string.settings_dns))
        dnsCard.addView(Ui.text(ctx, ctx.getString(R.string.settings_dns_text), 13f, colors.text2))
        dns = EditText(ctx).apply {
            id = R.id.settings_dns
            inputType = InputType.TYPE_CLASS_TEXT or InputType.TYPE_TEXT_FLAG_MULTI_LINE or InputType.TYPE_TEXT_FLAG_NO_SUGGESTIONS
            hint = "192.168.1.1\n[2001:db8::53]:53"
        }
        dnsCard.addView(dns, Ui.matchWrap())
        dnsResult = Ui.text(ctx, "", 13f, colors.text2).apply { id = R.id.settings_dns_result }
        dnsCard.addView(Ui.button(ctx, ctx.getString(R.string.settings_dns_save)) { saveDns() }.apply { id = R.id.settings_dns_save })
        dnsCard.addView(dnsResult)
        column.addView(dnsCard)

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
                    val store = activity.store
                    activity.load({ store.clearLog() }) { refresh() }
                }
                .setNegativeButton(android.R.string.cancel, null)
                .show()
        })
        column.addView(data)
        view = ScrollView(ctx).apply { addView(column) }
    }

    /** Saves the fallback list only if every entry is an address (nothing is looked up). */
    private fun saveDns() {
        when (val parsed = Resolvers.parse(dns.text.toString())) {
            is Resolvers.Valid -> {
                activity.prefs.dnsFallbacks = parsed.list
                dns.setText(parsed.list.joinToString("\n"))
                dnsResult.text = ctx.getString(R.string.settings_dns_saved, parsed.list.size)
            }
            is Resolvers.Invalid -> dnsResult.text = ctx.getString(R.string.settings_dns_invalid, parsed.entry)
        }
    }

    override fun refresh() {
        boot.isChecked = activity.prefs.startOnBoot
        lan.isChecked = activity.prefs.allowLan
        peek.isChecked = activity.prefs.peek
        capture.isChecked = activity.prefs.capture
        blockDoh.isChecked = activity.prefs.blockDoh
        if (!dns.hasFocus()) dns.setText(activity.prefs.dnsFallbacks.joinToString("\n"))
        // SQLite on the data thread, like the other screens: a 30-day log is not counted on the main thread.
        val store = activity.store
        activity.load({ store.countAll() }) { count -> stored.text = ctx.getString(R.string.settings_stored, count) }
    }
}
