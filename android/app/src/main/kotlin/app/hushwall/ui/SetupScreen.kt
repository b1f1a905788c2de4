package app.hushwall.ui

import android.content.ComponentName
import android.content.Intent
import android.net.Uri
import android.os.PowerManager
import android.provider.Settings
import android.view.View
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.Switch
import android.widget.TextView
import android.widget.Toast
import app.hushwall.R

/**
 * Setup for Xiaomi: the steps MIUI/HyperOS needs so that it does not kill the VPN (Autostart, battery saver "No
 * restrictions", lock in recents, Always-on VPN), start on boot, and a warning while Private DNS is on.
 * Xiaomi's own settings screens are opened by component name where they exist, with Android's screen as fallback.
 */
internal class SetupScreen(activity: MainActivity) : Screen(activity) {
    override val titleRes = R.string.tab_setup
    private val ctx = activity
    private val colors = activity.colors
    private val privateDns: LinearLayout
    private val batteryState: TextView
    private val boot: Switch
    override val view: View

    init {
        val column = Ui.vertical(ctx)
        column.setPadding(0, Ui.dp(ctx, 6), 0, Ui.dp(ctx, 12))
        column.addView(Ui.text(ctx, ctx.getString(R.string.setup_intro), 14f, colors.text2).apply {
            setPadding(Ui.dp(ctx, 16), Ui.dp(ctx, 6), Ui.dp(ctx, 16), Ui.dp(ctx, 6))
        })

        privateDns = Ui.card(ctx, ctx.getString(R.string.private_dns_title), colors.warnBg)
        privateDns.id = R.id.setup_private_dns
        privateDns.addView(Ui.text(ctx, ctx.getString(R.string.setup_private_dns_text), 14f, colors.warn))
        privateDns.addView(Ui.button(ctx, ctx.getString(R.string.setup_open_settings)) { open(Intent(Settings.ACTION_WIRELESS_SETTINGS)) })
        column.addView(privateDns)

        val steps = Ui.vertical(ctx)
        steps.id = R.id.setup_steps
        steps.addView(step(1, R.string.setup_autostart_title, R.string.setup_autostart_text, R.string.setup_open_autostart) {
            open(
                // MIUI/HyperOS: the per-app permission editor (Autostart and Background autostart are there).
                Intent("miui.intent.action.APP_PERM_EDITOR")
                    .setClassName("com.miui.securitycenter", "com.miui.permcenter.permissions.PermissionsEditorActivity")
                    .putExtra("extra_pkgname", ctx.packageName),
                Intent().setComponent(ComponentName("com.miui.securitycenter", "com.miui.permcenter.autostart.AutoStartManagementActivity")),
                appDetails(),
            )
        })
        val battery = step(2, R.string.setup_battery_title, R.string.setup_battery_text, R.string.setup_open_battery) {
            open(
                Intent().setComponent(ComponentName("com.miui.powerkeeper", "com.miui.powerkeeper.ui.HiddenAppsConfigActivity"))
                    .putExtra("package_name", ctx.packageName)
                    .putExtra("package_label", ctx.getString(R.string.app_name)),
                appDetails(),
            )
        }
        batteryState = Ui.text(ctx, "", 13f, colors.brand, bold = true)
        battery.addView(batteryState)
        steps.addView(battery)
        steps.addView(step(3, R.string.setup_recents_title, R.string.setup_recents_text, null, null))
        steps.addView(step(4, R.string.setup_always_on_title, R.string.setup_always_on_text, R.string.setup_open_vpn) {
            open(Intent(Settings.ACTION_VPN_SETTINGS))
        })
        val bootCard = step(5, R.string.setup_boot_title, R.string.setup_boot_text, null, null)
        boot = Switch(ctx)
        boot.id = R.id.setup_boot
        boot.setText(R.string.settings_boot)
        boot.setOnCheckedChangeListener { _, checked -> activity.prefs.startOnBoot = checked }
        bootCard.addView(boot, Ui.matchWrap())
        steps.addView(bootCard)
        steps.addView(step(6, R.string.setup_notifications_title, R.string.setup_notifications_text, R.string.setup_allow) {
            activity.requestNotificationsIfNeeded()
        })
        column.addView(steps)
        view = ScrollView(ctx).apply { addView(column) }
    }

    override fun refresh() {
        privateDns.visibility = if (HomeScreen.privateDnsServer(activity) != null) View.VISIBLE else View.GONE
        val pm = ctx.getSystemService(PowerManager::class.java)
        val unrestricted = pm?.isIgnoringBatteryOptimizations(ctx.packageName) == true
        batteryState.text = ctx.getString(if (unrestricted) R.string.setup_battery_ok else R.string.setup_battery_not_yet)
        batteryState.setTextColor(if (unrestricted) colors.brand else colors.warn)
        boot.isChecked = activity.prefs.startOnBoot
    }

    private fun step(number: Int, title: Int, text: Int, action: Int?, onClick: (() -> Unit)?): LinearLayout {
        val card = Ui.card(ctx, null)
        card.addView(Ui.text(ctx, "$number. " + ctx.getString(title), 16f, colors.text, bold = true))
        card.addView(Ui.text(ctx, ctx.getString(text), 14f, colors.text2), Ui.matchWrap().apply { topMargin = Ui.dp(ctx, 4) })
        if (action != null && onClick != null) card.addView(Ui.button(ctx, ctx.getString(action), onClick))
        return card
    }

    private fun appDetails() = Intent(Settings.ACTION_APPLICATION_DETAILS_SETTINGS, Uri.parse("package:" + ctx.packageName))

    /** Starts the first intent that resolves (Xiaomi's screen, then Android's). */
    private fun open(vararg intents: Intent) {
        for (intent in intents) {
            try {
                ctx.startActivity(intent)
                return
            } catch (e: Exception) {
                // ActivityNotFoundException (not MIUI) or SecurityException (not exported on this build): next.
            }
        }
        Toast.makeText(ctx, R.string.setup_not_found, Toast.LENGTH_LONG).show()
    }
}
