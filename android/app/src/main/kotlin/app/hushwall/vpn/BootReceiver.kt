package app.hushwall.vpn

import android.content.BroadcastReceiver
import android.content.Context
import android.content.Intent
import android.net.VpnService
import android.util.Log
import app.hushwall.data.Prefs

/**
 * Starts the VPN after boot (and after an app update) if the user switched "Start on boot" on and the VPN was on
 * before. Needs VPN consent already given: [VpnService.prepare] returns null. Always-on VPN does the same from
 * the system side and is the more robust choice on MIUI (see the Setup screen).
 */
class BootReceiver : BroadcastReceiver() {
    override fun onReceive(context: Context, intent: Intent) {
        val action = intent.action
        if (action != Intent.ACTION_BOOT_COMPLETED && action != Intent.ACTION_MY_PACKAGE_REPLACED) return
        val prefs = Prefs(context)
        if (!prefs.startOnBoot || !prefs.vpnWanted) return
        if (VpnService.prepare(context) != null) {
            Log.w("HushwallBoot", "VPN consent missing: not starting")
            return
        }
        try {
            // BOOT_COMPLETED and MY_PACKAGE_REPLACED are exempt from the background foreground-service limits.
            HushwallVpnService.start(context)
        } catch (e: RuntimeException) {
            Log.w("HushwallBoot", "cannot start the VPN", e)
        }
    }
}
