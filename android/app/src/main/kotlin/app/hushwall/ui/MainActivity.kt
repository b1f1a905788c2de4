package app.hushwall.ui

import android.Manifest
import android.app.Activity
import android.content.Intent
import android.content.pm.PackageManager
import android.net.Uri
import android.net.VpnService
import android.os.Build
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.view.Gravity
import android.view.View
import android.widget.FrameLayout
import android.widget.HorizontalScrollView
import android.widget.LinearLayout
import android.widget.TextView
import android.widget.Toast
import app.hushwall.R
import app.hushwall.data.Apps
import app.hushwall.data.Prefs
import app.hushwall.data.Store
import app.hushwall.vpn.HushwallVpnService

/** One screen of the app: builds its view once and refreshes it from storage. */
internal abstract class Screen(val activity: MainActivity) {
    abstract val titleRes: Int
    abstract val view: View
    open fun refresh() {}
    /** Refreshed every second while visible (Home, Live log). */
    open val live: Boolean = false
}

/**
 * The app's single activity: a tab bar (Home, Live log, Apps, Lists, Setup, Settings, About) over the current
 * screen. Start runs the VPN consent flow of AOSP's ToyVpn: `VpnService.prepare` returns an intent while consent
 * is missing (to `startActivityForResult`); null means consent is given, so the result is handled at once.
 */
class MainActivity : Activity() {

    internal lateinit var store: Store
    internal lateinit var prefs: Prefs
    internal lateinit var apps: Apps
    /** The colours of the current (light or dark) configuration, for the screens. */
    internal lateinit var colors: Palette
    private lateinit var content: FrameLayout
    private val tabs = ArrayList<TextView>()
    private val screens = arrayOfNulls<Screen>(TAB_TITLES.size)
    private var current = -1
    private val handler = Handler(Looper.getMainLooper())
    /** One background thread for the screens' queries (SQLite, package manager); results come back to the main thread. */
    private val dataThread = android.os.HandlerThread("hushwall-ui-data").apply { start() }
    private val data = Handler(dataThread.looper)
    /** The data thread's looper (tests wait on it). */
    internal val dataLooper: Looper get() = dataThread.looper
    private var destroyed = false
    private var askedInstalledApps = false
    private var consentAfterNotifications = false
    private val tick = object : Runnable {
        override fun run() {
            val s = screens.getOrNull(current)
            if (s != null && s.live) s.refresh()
            handler.postDelayed(this, REFRESH_MS)
        }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        store = Store.get(this)
        prefs = Prefs(this)
        apps = Apps(this)
        colors = Palette(this)
        val root = Ui.vertical(this)
        root.setBackgroundColor(colors.screenBg)
        content = FrameLayout(this)
        content.id = R.id.content_frame
        root.addView(content, LinearLayout.LayoutParams(LinearLayout.LayoutParams.MATCH_PARENT, 0, 1f))
        val bar = Ui.horizontal(this)
        bar.setBackgroundColor(colors.card)
        TAB_TITLES.forEachIndexed { i, title ->
            val tab = Ui.text(this, getString(title), 14f, colors.text2, bold = true)
            tab.id = TAB_IDS[i]
            tab.gravity = Gravity.CENTER
            tab.setPadding(Ui.dp(this, 14), Ui.dp(this, 14), Ui.dp(this, 14), Ui.dp(this, 14))
            tab.setOnClickListener { showScreen(i) }
            tabs.add(tab)
            bar.addView(tab)
        }
        val scroller = HorizontalScrollView(this)
        scroller.isHorizontalScrollBarEnabled = false
        scroller.addView(bar)
        root.addView(scroller, Ui.matchWrap())
        setContentView(root)
        showScreen(savedInstanceState?.getInt(STATE_TAB) ?: 0)
        // A recreated activity (rotation, process restore) gets the tile's start intent again: handled once.
        if (savedInstanceState == null) handleIntent(intent)
    }

    override fun onDestroy() {
        destroyed = true
        handler.removeCallbacksAndMessages(null)
        dataThread.quitSafely()
        super.onDestroy()
    }

    /**
     * Runs [work] on the data thread and hands its result to [show] on the main thread (unless the activity is
     * gone meanwhile). Loads queue up in order; a screen skips a refresh while its previous load is in flight.
     */
    internal fun <T> load(work: () -> T, show: (T) -> Unit) {
        data.post {
            val result = try {
                work()
            } catch (e: RuntimeException) {
                android.util.Log.w("Hushwall", "loading screen data failed", e)
                return@post
            }
            handler.post { if (!destroyed) show(result) }
        }
    }

    override fun onNewIntent(intent: Intent) {
        super.onNewIntent(intent)
        handleIntent(intent)
    }

    private fun handleIntent(intent: Intent?) {
        when (intent?.action) {
            ACTION_START -> if (!HushwallVpnService.running) startVpn()
            ACTION_PRIVATE_DNS -> openPrivateDnsSettings()
        }
    }

    /** Android has no public intent for the Private DNS screen: the network settings (MIUI: Connection & sharing). */
    internal fun openPrivateDnsSettings() {
        for (action in listOf(android.provider.Settings.ACTION_WIRELESS_SETTINGS, android.provider.Settings.ACTION_SETTINGS)) {
            try {
                startActivity(Intent(action))
                return
            } catch (e: RuntimeException) {
                // ActivityNotFoundException or SecurityException: next.
            }
        }
        Toast.makeText(this, R.string.setup_not_found, Toast.LENGTH_LONG).show()
    }

    override fun onSaveInstanceState(outState: Bundle) {
        super.onSaveInstanceState(outState)
        outState.putInt(STATE_TAB, current)
    }

    override fun onResume() {
        super.onResume()
        screens.getOrNull(current)?.refresh()
        handler.postDelayed(tick, REFRESH_MS)
    }

    override fun onPause() {
        handler.removeCallbacks(tick)
        super.onPause()
    }

    /** Shows tab [index] (0 Home … 6 About). */
    fun showScreen(index: Int) {
        val screen = screens[index] ?: createScreen(index).also { screens[index] = it }
        current = index
        content.removeAllViews()
        content.addView(screen.view, FrameLayout.LayoutParams(FrameLayout.LayoutParams.MATCH_PARENT, FrameLayout.LayoutParams.MATCH_PARENT))
        tabs.forEachIndexed { i, tab ->
            tab.setTextColor(if (i == index) colors.brand else colors.text2)
            tab.setBackgroundColor(if (i == index) colors.brandLight else colors.card)
        }
        title = getString(screen.titleRes)
        screen.refresh()
    }

    private fun createScreen(index: Int): Screen = when (index) {
        0 -> HomeScreen(this)
        1 -> LogScreen(this)
        2 -> AppsScreen(this)
        3 -> ListsScreen(this)
        4 -> SetupScreen(this)
        5 -> SettingsScreen(this)
        else -> AboutScreen(this)
    }

    /** Opens the Live log filtered to one app. */
    internal fun showLogFor(uid: Int) {
        showScreen(1)
        (screens[1] as LogScreen).filterTo(uid)
    }

    internal fun toggleVpn() {
        if (HushwallVpnService.running) {
            HushwallVpnService.stop(this)
            handler.postDelayed({ screens.getOrNull(current)?.refresh() }, 500)
        } else {
            startVpn()
        }
    }

    private fun startVpn() {
        if (requestNotificationsIfNeeded()) {
            consentAfterNotifications = true
            return
        }
        askVpnConsent()
    }

    private fun askVpnConsent() {
        val consent = VpnService.prepare(this)
        if (consent != null) {
            startActivityForResult(consent, REQUEST_VPN)
        } else {
            onActivityResult(REQUEST_VPN, RESULT_OK, null)
        }
    }

    /** True if the question is now on screen (the answer arrives in [onRequestPermissionsResult]). */
    internal fun requestNotificationsIfNeeded(): Boolean {
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.TIRAMISU &&
            checkSelfPermission(Manifest.permission.POST_NOTIFICATIONS) != PackageManager.PERMISSION_GRANTED
        ) {
            // Optional: without it the VPN still runs; Android just hides the status notification.
            requestPermissions(arrayOf(Manifest.permission.POST_NOTIFICATIONS), REQUEST_NOTIFICATIONS)
            return true
        }
        return false
    }

    /**
     * China-ROM MIUI/HyperOS: their own runtime permission gates `getInstalledPackages`. It exists only there
     * (`getPermissionInfo` throws elsewhere); asked once per activity, and not together with another dialog.
     */
    internal fun requestInstalledAppsIfNeeded() {
        if (askedInstalledApps) return
        askedInstalledApps = true
        val exists = try {
            packageManager.getPermissionInfo(GET_INSTALLED_APPS, 0)
            true
        } catch (e: PackageManager.NameNotFoundException) {
            false
        }
        if (exists && checkSelfPermission(GET_INSTALLED_APPS) != PackageManager.PERMISSION_GRANTED) {
            requestPermissions(arrayOf(GET_INSTALLED_APPS), REQUEST_INSTALLED_APPS)
        }
    }

    override fun onRequestPermissionsResult(requestCode: Int, permissions: Array<out String>, grantResults: IntArray) {
        super.onRequestPermissionsResult(requestCode, permissions, grantResults)
        when (requestCode) {
            // The VPN consent dialog waits until the notification question is answered (two dialogs at once
            // lose one of them on some ROMs).
            REQUEST_NOTIFICATIONS -> if (consentAfterNotifications) {
                consentAfterNotifications = false
                askVpnConsent()
            }
            REQUEST_INSTALLED_APPS -> screens.getOrNull(current)?.refresh()
        }
    }

    /** Asks where to save the log (Storage Access Framework: no storage permission, no FileProvider). */
    internal fun export(json: Boolean) {
        val stamp = java.text.SimpleDateFormat("yyyyMMdd-HHmm", java.util.Locale.US).format(java.util.Date())
        val intent = Intent(Intent.ACTION_CREATE_DOCUMENT)
            .addCategory(Intent.CATEGORY_OPENABLE)
            .setType(if (json) "application/json" else "text/csv")
            .putExtra(Intent.EXTRA_TITLE, "hushwall-log-$stamp.${if (json) "json" else "csv"}")
        try {
            startActivityForResult(intent, if (json) REQUEST_EXPORT_JSON else REQUEST_EXPORT_CSV)
        } catch (e: android.content.ActivityNotFoundException) {
            Toast.makeText(this, R.string.export_no_picker, Toast.LENGTH_LONG).show()
        }
    }

    /** Asks where to save the packet capture (pcapng, opens in Wireshark). */
    internal fun exportCapture() {
        val source = HushwallVpnService.captureFile(this)
        if (!source.exists()) {
            Toast.makeText(this, R.string.export_no_capture, Toast.LENGTH_LONG).show()
            return
        }
        val intent = Intent(Intent.ACTION_CREATE_DOCUMENT)
            .addCategory(Intent.CATEGORY_OPENABLE)
            .setType("application/octet-stream")
            .putExtra(Intent.EXTRA_TITLE, "hushwall-capture.pcapng")
        try {
            startActivityForResult(intent, REQUEST_EXPORT_CAPTURE)
        } catch (e: android.content.ActivityNotFoundException) {
            Toast.makeText(this, R.string.export_no_picker, Toast.LENGTH_LONG).show()
        }
    }

    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        @Suppress("DEPRECATION")
        super.onActivityResult(requestCode, resultCode, data)
        when (requestCode) {
            REQUEST_VPN -> if (resultCode == RESULT_OK) {
                HushwallVpnService.start(this)
                handler.postDelayed({ screens.getOrNull(current)?.refresh() }, 500)
            } else {
                Toast.makeText(this, R.string.vpn_denied, Toast.LENGTH_LONG).show()
            }
            REQUEST_EXPORT_CAPTURE -> {
                val uri = data?.data
                if (resultCode == RESULT_OK && uri != null) copyCapture(uri)
            }
            REQUEST_EXPORT_CSV, REQUEST_EXPORT_JSON -> {
                val uri = data?.data
                if (resultCode == RESULT_OK && uri != null) writeExport(uri, requestCode == REQUEST_EXPORT_JSON)
            }
        }
    }

    private fun copyCapture(uri: Uri) {
        val resolver = contentResolver
        val source = HushwallVpnService.captureFile(this)
        Thread {
            val message = try {
                val out = resolver.openOutputStream(uri, "wt") ?: throw java.io.IOException("no output stream")
                val bytes = out.use { o -> source.inputStream().use { it.copyTo(o) } }
                getString(R.string.export_capture_done, bytes)
            } catch (e: Exception) {
                getString(R.string.export_failed, e.message ?: e.toString())
            }
            runOnUiThread { Toast.makeText(this, message, Toast.LENGTH_LONG).show() }
        }.start()
    }

    private fun writeExport(uri: Uri, json: Boolean) {
        val resolver = contentResolver
        val labels = apps
        Thread {
            val message = try {
                val out = resolver.openOutputStream(uri, "wt") ?: throw java.io.IOException("no output stream")
                val count = out.bufferedWriter().use { w -> Export.write(store, w, json) { uid -> labels.entry(uid) } }
                getString(R.string.export_done, count)
            } catch (e: Exception) {
                getString(R.string.export_failed, e.message ?: e.toString())
            }
            runOnUiThread { Toast.makeText(this, message, Toast.LENGTH_LONG).show() }
        }.start()
    }

    companion object {
        /** Opens the app and starts the VPN (the Quick Settings tile uses it when consent is missing). */
        const val ACTION_START = "app.hushwall.action.START"
        /** Opens the network settings where Private DNS is switched (from the notification). */
        const val ACTION_PRIVATE_DNS = "app.hushwall.action.PRIVATE_DNS"
        private const val REQUEST_VPN = 1
        private const val REQUEST_NOTIFICATIONS = 2
        private const val REQUEST_EXPORT_CSV = 3
        private const val REQUEST_EXPORT_JSON = 4
        private const val REQUEST_EXPORT_CAPTURE = 5
        private const val REQUEST_INSTALLED_APPS = 6
        /** MIUI/HyperOS (China ROM) runtime permission for the installed-app list. */
        private const val GET_INSTALLED_APPS = "com.android.permission.GET_INSTALLED_APPS"
        private const val REFRESH_MS = 1_000L
        private const val STATE_TAB = "tab"
        private val TAB_TITLES = intArrayOf(
            R.string.tab_home, R.string.tab_log, R.string.tab_apps, R.string.tab_lists,
            R.string.tab_setup, R.string.tab_settings, R.string.tab_about,
        )
        private val TAB_IDS = intArrayOf(
            R.id.tab_home, R.id.tab_log, R.id.tab_apps, R.id.tab_lists, R.id.tab_setup, R.id.tab_settings, R.id.tab_about,
        )
    }
}
