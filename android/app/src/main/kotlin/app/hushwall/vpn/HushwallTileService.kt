package app.hushwall.vpn

import android.app.PendingIntent
import android.content.Intent
import android.net.VpnService
import android.os.Build
import android.service.quicksettings.Tile
import android.service.quicksettings.TileService
import android.util.Log
import app.hushwall.R
import app.hushwall.ui.MainActivity

/** Quick Settings tile: shows whether Hushwall filters, and switches it on and off. */
class HushwallTileService : TileService() {

    override fun onStartListening() {
        super.onStartListening()
        render()
    }

    override fun onClick() {
        super.onClick()
        if (HushwallVpnService.running) {
            HushwallVpnService.stop(this)
        } else if (VpnService.prepare(this) != null) {
            // Consent is given in the app (the system dialog needs an activity).
            openApp()
        } else {
            try {
                HushwallVpnService.start(this)
            } catch (e: IllegalStateException) {
                // API 31+: not allowed to start a foreground service from here on this phone; the app can.
                Log.w("HushwallTile", "start from the tile refused", e)
                openApp()
            }
        }
        render(starting = !HushwallVpnService.running)
    }

    private fun render(starting: Boolean = false) {
        val tile = qsTile ?: return
        val on = HushwallVpnService.running || starting
        tile.state = if (on) Tile.STATE_ACTIVE else Tile.STATE_INACTIVE
        tile.label = getString(R.string.app_name)
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.Q) {
            tile.subtitle = getString(if (on) R.string.tile_on else R.string.tile_off)
        }
        tile.updateTile()
    }

    private fun openApp() {
        val intent = Intent(this, MainActivity::class.java)
            .setAction(MainActivity.ACTION_START)
            .addFlags(Intent.FLAG_ACTIVITY_NEW_TASK)
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.UPSIDE_DOWN_CAKE) {
            startActivityAndCollapse(PendingIntent.getActivity(this, 1, intent, PendingIntent.FLAG_IMMUTABLE))
        } else {
            @Suppress("DEPRECATION")
            startActivityAndCollapse(intent)
        }
    }
}
