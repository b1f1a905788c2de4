package app.hushwall.ui

import android.Manifest
import android.app.Activity
import android.content.pm.PackageManager
import android.net.VpnService
import android.os.Build
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.widget.Button
import android.widget.TextView
import android.widget.Toast
import app.hushwall.R
import app.hushwall.vpn.HushwallVpnService

/**
 * Skeleton home screen: status and a Start/Stop button. Start runs the VPN consent flow of AOSP's ToyVpn:
 * `VpnService.prepare` returns an intent while consent is missing, which goes to `startActivityForResult`;
 * `null` means consent is already given, so the result is handled at once.
 */
class MainActivity : Activity() {

    private lateinit var status: TextView
    private lateinit var toggle: Button
    private val handler = Handler(Looper.getMainLooper())
    private val refresh = Runnable { render() }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        status = findViewById(R.id.status)
        toggle = findViewById(R.id.toggle)
        toggle.setOnClickListener {
            if (HushwallVpnService.running) {
                HushwallVpnService.stop(this)
                scheduleRender()
            } else {
                requestNotificationsIfNeeded()
                val consent = VpnService.prepare(this)
                if (consent != null) {
                    startActivityForResult(consent, REQUEST_VPN)
                } else {
                    onActivityResult(REQUEST_VPN, RESULT_OK, null)
                }
            }
        }
    }

    override fun onResume() {
        super.onResume()
        render()
    }

    override fun onPause() {
        handler.removeCallbacks(refresh)
        super.onPause()
    }

    override fun onActivityResult(requestCode: Int, resultCode: Int, data: android.content.Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        if (requestCode != REQUEST_VPN) return
        if (resultCode == RESULT_OK) {
            status.setText(R.string.status_starting)
            HushwallVpnService.start(this)
            scheduleRender()
        } else {
            Toast.makeText(this, R.string.vpn_denied, Toast.LENGTH_LONG).show()
        }
    }

    private fun render() {
        val on = HushwallVpnService.running
        status.setText(if (on) R.string.status_on else R.string.status_off)
        toggle.setText(if (on) R.string.action_stop else R.string.action_start)
    }

    /** The service starts asynchronously; look again shortly (the real screens will observe its state). */
    private fun scheduleRender() {
        handler.removeCallbacks(refresh)
        handler.postDelayed(refresh, RENDER_DELAY_MS)
    }

    private fun requestNotificationsIfNeeded() {
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.TIRAMISU &&
            checkSelfPermission(Manifest.permission.POST_NOTIFICATIONS) != PackageManager.PERMISSION_GRANTED
        ) {
            // Optional: without it the VPN still runs; Android just hides the status notification.
            requestPermissions(arrayOf(Manifest.permission.POST_NOTIFICATIONS), REQUEST_NOTIFICATIONS)
        }
    }

    private companion object {
        const val REQUEST_VPN = 1
        const val REQUEST_NOTIFICATIONS = 2
        const val RENDER_DELAY_MS = 500L
    }
}
