package app.hushwall.screenshots

import android.app.Application
import android.content.pm.ApplicationInfo
import android.content.pm.PackageInfo
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.ColorFilter
import android.graphics.Paint
import android.graphics.PixelFormat
import android.graphics.drawable.ColorDrawable
import android.graphics.drawable.Drawable
import android.content.res.Configuration
import android.os.Looper
import android.view.View
import android.widget.Button
import android.widget.ListView
import android.widget.RadioGroup
import android.widget.TextView
import app.hushwall.R
import app.hushwall.data.AppRule
import app.hushwall.data.LogEntry
import app.hushwall.data.Prefs
import app.hushwall.data.Store
import app.hushwall.engine.Action
import app.hushwall.engine.BlockEvent
import app.hushwall.engine.Protocol
import app.hushwall.engine.Rule
import app.hushwall.ui.MainActivity
import app.hushwall.ui.Palette
import app.hushwall.ui.charts.BlocksChart
import app.hushwall.ui.charts.HostsChart
import android.content.Intent
import android.graphics.drawable.GradientDrawable
import org.robolectric.RuntimeEnvironment.setQualifiers
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertTrue
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import org.robolectric.annotation.Config
import org.robolectric.annotation.GraphicsMode
import org.robolectric.shadows.ShadowDialog
import java.io.File
import java.net.InetAddress
import java.net.InetSocketAddress

/**
 * Renders every screen of the app to PNG (real pixels: Robolectric's native graphics) with a realistic block log
 * and asserts the key views are there. The data is made up by this test (apps, times, UIDs) but every rule and
 * line number is read from the files in `blocklists/`, and every host is one those rules block. App icons are letter
 * badges drawn here: Robolectric has no real apps installed.
 *
 * Every screen is rendered twice: light, and with the system's dark theme on, where the screens must use the night
 * palette. Output: `$hushwall.out/<nn>-<screen>.png` and `<nn>-<screen>-dark.png` (android/screenshots/run.sh sets
 * it to build/android/screenshots).
 */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], qualifiers = "w392dp-h820dp-xhdpi")
@GraphicsMode(GraphicsMode.Mode.NATIVE)
class ScreenshotTest {
    private val app: Application = RuntimeEnvironment.getApplication()
    private val out = File(System.getProperty("hushwall.out") ?: "build/android/screenshots")
    private val root = File(System.getProperty("hushwall.root") ?: ".")
    private val now = System.currentTimeMillis()

    private class FakeApp(val pkg: String, val label: String, val uid: Int, val color: Int, val system: Boolean)

    private val fakeApps = listOf(
        FakeApp("com.miui.analytics", "Analytics", 10_071, 0xFFFF6900.toInt(), true),
        FakeApp("com.mi.globalbrowser", "Mi Browser", 10_112, 0xFF1E88E5.toInt(), true),
        FakeApp("com.miui.msa.global", "MSA", 10_064, 0xFF8E24AA.toInt(), true),
        FakeApp("com.miui.securitycenter", "Security", 10_050, 0xFF43A047.toInt(), true),
        FakeApp("com.miui.weather2", "Weather", 10_093, 0xFF00ACC1.toInt(), true),
        FakeApp("com.xiaomi.mipicks", "GetApps", 10_120, 0xFFF4511E.toInt(), true),
        FakeApp("com.miui.cleaner", "Cleaner", 10_131, 0xFF6D4C41.toInt(), true),
        FakeApp("org.mozilla.firefox", "Firefox", 10_201, 0xFFE65100.toInt(), false),
        FakeApp("com.spotify.music", "Spotify", 10_215, 0xFF1DB954.toInt(), false),
    )

    @Before
    fun seed() {
        out.mkdirs()
        val pm = shadowOf(app.packageManager)
        for (a in fakeApps) {
            val info = PackageInfo()
            info.packageName = a.pkg
            info.requestedPermissions = arrayOf(android.Manifest.permission.INTERNET)
            info.applicationInfo = ApplicationInfo().apply {
                packageName = a.pkg
                uid = a.uid
                nonLocalizedLabel = a.label
                flags = if (a.system) ApplicationInfo.FLAG_SYSTEM else 0
            }
            pm.installPackage(info)
            pm.setPackagesForUid(a.uid, a.pkg)
            pm.setApplicationIcon(a.pkg, LetterIcon(a.label.first(), a.color))
        }
        val store = freshStore(app)
        store.clearLog()
        seeded = events()
        store.insert(seeded, keepPeek = true)
        store.setRule(AppRule("com.miui.msa.global", blockWifi = true, blockMobile = true))
        store.setRule(AppRule("com.miui.weather2", blockMobile = true))
        store.setRule(AppRule("com.spotify.music", bypass = true))
        val prefs = Prefs(app)
        prefs.listUrls = listOf("https://raw.githubusercontent.com/hagezi/dns-blocklists/main/domains/native.xiaomi.txt", "https://lists.example.org/my-extra.txt")
        prefs.lastUpdateMillis = now - 2 * 3600_000L
        prefs.lastUpdateOk = false
        prefs.lastUpdateMessage = "✓ raw.githubusercontent.com/native.xiaomi.txt\n✗ lists.example.org/my-extra.txt: HTTP 404"
        prefs.peek = true
        prefs.blockDoh = true
    }

    private var seeded: List<BlockEvent> = emptyList()

    /**
     * What Home's chart must say for the seeded log (all of it is within the 30 days): the total, the busiest local
     * day's count and the top four apps with "other", numbers worked out here from the events themselves.
     */
    private fun expectedHomeChart(): List<String> {
        val byApp = seeded.groupingBy { it.uid }.eachCount().entries
            .sortedWith(compareByDescending<Map.Entry<Int, Int>> { it.value }.thenBy { it.key })
        val top = byApp.take(4).map { e -> "${fakeApps.first { it.uid == e.key }.label} ${e.value}" }
        val other = byApp.drop(4).sumOf { it.value }
        val perDay = seeded.groupingBy { Store.startOfToday(it.timeMillis) }.eachCount()
        return listOf(
            "Last 30 days: ${seeded.size} blocks; most on ",
            " (${perDay.values.max()}); top apps: " + (top + "other $other").joinToString(", "),
        )
    }

    /** The hosts an app's page must list first: its most blocked hosts with their counts, as the store orders them. */
    private fun expectedHosts(uid: Int): String = seeded.filter { it.uid == uid }.groupingBy { it.host!! }.eachCount().entries
        .sortedWith(compareByDescending<Map.Entry<String, Int>> { it.value }.thenBy { it.key })
        .take(3).joinToString(", ") { "${it.key} ${it.value}" }

    /** Blocks of the last 30 days, built from real list rules (list name, line, text). */
    private fun events(): List<BlockEvent> {
        val rules = listOf(
            "xiaomi-telemetry.txt" to 6, "xiaomi-ads.txt" to 5, "sensorsdata.txt" to 1, "strict-extra.txt" to 2,
        ).flatMap { (file, n) -> rulesOf(file).take(n) }
        check(rules.size >= 8) { "too few rules found in ${File(root, "blocklists")}" }
        val who = listOf(0, 0, 1, 0, 2, 3, 1, 4, 0, 5, 2, 6, 0, 1, 7, 0, 2, 8)
        val reasons = listOf("dns_query", "tls_sni", "dns_query", "quic_sni", "dns_query", "http_host", "dns_cname")
        val list = ArrayList<BlockEvent>()
        var t = now - 90_000L
        for (i in 0 until 120) {
            val rule = rules[(i * 7 + i / 5) % rules.size]
            val appIndex = who[(i * 5 + 3) % who.size]
            val reason = reasons[(i * 3) % reasons.size]
            list.add(event(t, fakeApps[appIndex].uid, hostFor(rule.text, i), reason, rule, null))
            t -= if (i < 60) 4 * 60_000L + (i % 7) * 40_000L else 9 * 3600_000L
        }
        val telemetry = rulesOf("xiaomi-telemetry.txt").firstOrNull { it.text.contains("sa.api") } ?: rules[0]
        list.add(event(now - 30_000L, fakeApps[1].uid, hostFor(telemetry.text, 0), "http_host", telemetry, SENSORS_PEEK))
        return list.sortedBy { it.timeMillis }
    }

    private fun event(time: Long, uid: Int, host: String, reason: String, rule: Rule, peek: String?): BlockEvent {
        val proto = when (reason) { "dns_query", "dns_cname" -> Protocol.DNS; "quic_sni" -> Protocol.UDP; else -> Protocol.TCP }
        val port = when (proto) { Protocol.DNS -> 53; Protocol.UDP -> 443; else -> if (reason == "http_host") 80 else 443 }
        val dst = if (proto == Protocol.DNS) "10.111.222.53" else "47.241.${(uid % 200) + 1}.${(time / 1000 % 250) + 1}"
        return BlockEvent(
            time, Action.BLOCK, proto,
            InetSocketAddress(InetAddress.getByName("10.111.222.1"), 40_000 + (time / 1000 % 20_000).toInt()),
            InetSocketAddress(InetAddress.getByName(dst), port),
            host, reason, rule, uid, peek,
        )
    }

    /** The entries of a built-in list with their 1-based line numbers, as the engine reports them. */
    private fun rulesOf(file: String): List<Rule> = File(root, "blocklists/$file").readLines().mapIndexedNotNull { i, line ->
        val entry = line.substringBefore('#').trim()
        if (entry.isEmpty() || entry.contains('/') || entry.first().isDigit()) null else Rule("builtin:$file", i + 1, entry)
    }

    private fun hostFor(rule: String, i: Int): String {
        val base = rule.removePrefix("||").removeSuffix("^").removePrefix("*.")
        return if (rule.startsWith("*.") || (rule.startsWith("||") && i % 3 == 1)) "${listOf("api", "v2", "sg")[i % 3]}.$base" else base
    }

    @Test
    fun rendersEveryScreen() = renderEveryScreen(dark = false)

    /** The system's dark theme on (MIUI's system-wide dark mode sets the same configuration): every screen follows it. */
    @Test
    fun rendersEveryScreenDark() {
        setQualifiers("+night")
        renderEveryScreen(dark = true)
    }

    /**
     * Renders and checks the eight tabs, the details dialog and an app's page; in [dark] mode the files are named
     * `<nn>-<screen>-dark.png`, and every screen must use the night palette (its views' colours are the ones
     * `values-night/colors.xml` gives, those are dark, and the rendered pixels are mostly dark).
     */
    private fun renderEveryScreen(dark: Boolean) {
        val activity = Robolectric.buildActivity(MainActivity::class.java).setup().get()
        dataLooper = activity.dataLooper
        idle()
        val palette = Palette(activity)
        assertEquals(dark, (activity.resources.configuration.uiMode and Configuration.UI_MODE_NIGHT_MASK) == Configuration.UI_MODE_NIGHT_YES)
        fun name(base: String) = if (dark) "$base-dark" else base
        /** The screen's background, the tab bar and [key]'s colour are the palette's; then the whole picture's brightness. */
        fun checkPalette(screen: String, key: Int, expected: Int) {
            val root = activity.findViewById<View>(R.id.content_frame).parent as View
            assertEquals("$screen background", palette.screenBg, (root.background as ColorDrawable).color)
            val tabs = TABS.map { activity.findViewById<TextView>(it) }
            val selected = tabs.single { it.currentTextColor == palette.brand }
            assertEquals("$screen selected tab", palette.brandLight, (selected.background as ColorDrawable).color)
            assertTrue("$screen other tabs", tabs.filter { it !== selected }.all { (it.background as ColorDrawable).color == palette.card && it.currentTextColor == palette.text2 })
            assertEquals("$screen key colour", expected, key)
            assertEquals("$screen background dark", dark, luminance(palette.screenBg) < 0.1)
            assertEquals("$screen text light", dark, luminance(palette.text) > 0.7)
        }

        // Home
        val today = activity.findViewById<TextView>(R.id.home_today)
        assertTrue("today's count", today.text.toString().toInt() > 10)
        assertEquals("Start", activity.findViewById<Button>(R.id.home_toggle).text.toString())
        assertTrue(activity.findViewById<android.view.ViewGroup>(R.id.home_top_hosts).childCount in 1..5)
        assertTrue(activity.findViewById<android.view.ViewGroup>(R.id.home_top_apps).childCount in 1..5)
        val chart = activity.findViewById<BlocksChart>(R.id.home_chart)
        assertTrue("chart laid out", chart.isShown && chart.height > 0 && chart.width > 0)
        for (part in expectedHomeChart()) assertTrue("'$part' in '${chart.contentDescription}'", chart.contentDescription.contains(part))
        assertEquals(activity.getColor(R.color.chart_surface), (chart.background as GradientDrawable).color!!.defaultColor)
        assertEquals("the chart's surface is the cards' colour", palette.card, activity.getColor(R.color.chart_surface))
        assertEquals(dark, activity.getColor(R.color.chart_surface) != Color.WHITE)
        checkPalette("Home", today.currentTextColor, palette.brand)
        snap(activity, name("01-home"), dark)
        // Share: a chooser around ACTION_SEND with the report as text and HTML.
        activity.findViewById<Button>(R.id.home_share).performClick(); idle()
        val chooser = shadowOf(activity).nextStartedActivity
        assertEquals(Intent.ACTION_CHOOSER, chooser.action)
        @Suppress("DEPRECATION")
        val send = chooser.getParcelableExtra<Intent>(Intent.EXTRA_INTENT)!!
        assertEquals(Intent.ACTION_SEND, send.action)
        assertTrue(send.getStringExtra(Intent.EXTRA_TEXT)!!.contains("${seeded.size} blocks"))
        assertTrue("the peek, decoded as in the log", send.getStringExtra(Intent.EXTRA_TEXT)!!.contains("\$AppStart"))
        assertTrue(send.getStringExtra(Intent.EXTRA_HTML_TEXT)!!.contains("<pre>"))

        // Live log, then its details dialog with the decoded peek
        activity.showScreen(1); idle()
        val log = activity.findViewById<ListView>(R.id.log_list)
        assertTrue("log rows", log.adapter.count > 50)
        assertNotNull(activity.findViewById<View>(R.id.log_filter))
        checkPalette("Live log", (log.background as ColorDrawable).color, palette.card)
        snap(activity, name("02-live-log"), dark)
        val first = log.adapter.getItem(0) as LogEntry
        assertNotNull("newest entry has the peek", first.peekJson)
        log.performItemClick(log.getChildAt(0), 0, first.id); idle()
        val dialog = ShadowDialog.getLatestDialog()
        assertNotNull(dialog)
        val peek = dialog.findViewById<TextView>(R.id.detail_peek)
        assertTrue("decoded peek shown", peek.text.contains("\$AppStart"))
        assertEquals("details text", palette.text, peek.currentTextColor)
        snapDialog(activity, dialog, name("03-log-details"), dark)
        dialog.dismiss(); idle()

        // Apps
        activity.showScreen(2); idle()
        val apps = activity.findViewById<ListView>(R.id.apps_list)
        assertEquals(fakeApps.size, apps.adapter.count)
        checkPalette("Apps", (apps.background as ColorDrawable).color, palette.card)
        snap(activity, name("04-apps"), dark)

        // An app's page: what it tried to reach (hosts by blocks) and its blocks per day.
        apps.performItemClick(apps.getChildAt(0), 0, apps.adapter.getItemId(0)); idle()
        val page = ShadowDialog.getLatestDialog()
        val uid = apps.adapter.getItemId(0).toInt()
        val label = fakeApps.first { it.uid == uid }.label
        val hostsChart = page.findViewById<HostsChart>(R.id.app_hosts_chart)
        assertTrue("host bars laid out", hostsChart.height > 0)
        val hostsSaid = hostsChart.contentDescription.toString()
        assertTrue(hostsSaid, hostsSaid.startsWith("Hosts $label tried to reach, by blocks: " + expectedHosts(uid)))
        val daysSaid = page.findViewById<BlocksChart>(R.id.app_days_chart).contentDescription.toString()
        assertTrue(daysSaid, daysSaid.startsWith("$label, last 30 days: ${seeded.count { it.uid == uid }} blocks; most on "))
        snapDialog(activity, page, name("09-app-page"), dark)
        page.dismiss(); idle()

        // Lists
        activity.showScreen(3); idle()
        assertEquals(R.id.lists_balanced, activity.findViewById<RadioGroup>(R.id.lists_profile).checkedRadioButtonId)
        val result = activity.findViewById<TextView>(R.id.lists_result)
        assertTrue(result.text.contains("HTTP 404"))
        checkPalette("Lists", result.currentTextColor, palette.warn)
        snap(activity, name("05-lists"), dark)

        // Setup for Xiaomi
        activity.showScreen(4); idle()
        val steps = activity.findViewById<android.view.ViewGroup>(R.id.setup_steps)
        assertEquals(5 + 1, steps.childCount)
        checkPalette("Setup", (steps.getChildAt(1).background as GradientDrawable).color!!.defaultColor, palette.card)
        snap(activity, name("06-setup"), dark)

        // Settings
        activity.showScreen(5); idle()
        assertTrue(activity.findViewById<android.widget.Switch>(R.id.settings_peek).isChecked)
        assertTrue(activity.findViewById<android.widget.Switch>(R.id.settings_block_doh).isChecked)
        assertNotNull(activity.findViewById<View>(R.id.settings_export_csv))
        checkPalette("Settings", activity.findViewById<TextView>(R.id.settings_stored).currentTextColor, palette.text)
        snap(activity, name("07-settings"), dark)

        // About
        activity.showScreen(6); idle()
        assertTrue(activity.findViewById<TextView>(R.id.about_collected).text.startsWith("Nothing"))
        checkPalette("About", activity.findViewById<TextView>(R.id.about_version).currentTextColor, palette.text2)
        snap(activity, name("08-about"), dark)
    }

    /** Relative luminance (WCAG) of an opaque colour, 0 black … 1 white. */
    private fun luminance(color: Int): Double {
        fun channel(c: Int): Double = (c / 255.0).let { if (it <= 0.03928) it / 12.92 else Math.pow((it + 0.055) / 1.055, 2.4) }
        return 0.2126 * channel(Color.red(color)) + 0.7152 * channel(Color.green(color)) + 0.0722 * channel(Color.blue(color))
    }

    private var dataLooper: Looper? = null

    /** The screens load their data on the activity's data thread and post it back: let both run. */
    private fun idle() {
        repeat(2) {
            dataLooper?.let { shadowOf(it).idle() }
            shadowOf(Looper.getMainLooper()).idle()
        }
    }

    private fun render(view: View): Bitmap {
        val bitmap = Bitmap.createBitmap(view.width, view.height, Bitmap.Config.ARGB_8888)
        view.draw(Canvas(bitmap))
        return bitmap
    }

    private fun snap(activity: MainActivity, name: String, dark: Boolean) = save(render(activity.window.decorView), name, dark)

    /** The activity dimmed, the dialog's own window drawn centred over it (as Android composes them). */
    private fun snapDialog(activity: MainActivity, dialog: android.app.Dialog, name: String, dark: Boolean) {
        val screen = render(activity.window.decorView)
        val canvas = Canvas(screen)
        canvas.drawColor(Color.argb(140, 0, 0, 0))
        val window = dialog.window!!.decorView
        val dialogBitmap = render(window)
        assertEquals("$name: the dialog is dark", dark, meanLuminance(dialogBitmap) < 0.25)
        canvas.drawBitmap(dialogBitmap, ((screen.width - dialogBitmap.width) / 2).toFloat(), ((screen.height - dialogBitmap.height) / 2).toFloat(), null)
        save(screen, name, dark)
    }

    /** Writes the PNG after checking the picture is mostly dark in dark mode and mostly light otherwise. */
    private fun save(bitmap: Bitmap, name: String, dark: Boolean) {
        assertTrue("$name is not blank", bitmap.width > 0 && bitmap.height > 0)
        val mean = meanLuminance(bitmap)
        assertTrue("$name: mean luminance $mean", if (dark) mean < 0.25 else mean > 0.5)
        File(out, "$name.png").outputStream().use { bitmap.compress(Bitmap.CompressFormat.PNG, 100, it) }
    }

    /** The mean relative luminance of the picture's pixels (every 4th pixel of every 4th row). */
    private fun meanLuminance(bitmap: Bitmap): Double {
        var sum = 0.0
        var n = 0
        for (y in 0 until bitmap.height step 4) for (x in 0 until bitmap.width step 4) {
            sum += luminance(bitmap.getPixel(x, y))
            n++
        }
        return sum / n
    }

    /** A round coloured badge with the app's initial, standing in for the app icon. */
    private class LetterIcon(private val letter: Char, private val color: Int) : Drawable() {
        private val paint = Paint(Paint.ANTI_ALIAS_FLAG)
        override fun draw(canvas: Canvas) {
            val b = bounds
            paint.color = color
            canvas.drawCircle(b.exactCenterX(), b.exactCenterY(), b.width() / 2f, paint)
            paint.color = Color.WHITE
            paint.textSize = b.height() * 0.55f
            paint.textAlign = Paint.Align.CENTER
            paint.isFakeBoldText = true
            canvas.drawText(letter.toString(), b.exactCenterX(), b.exactCenterY() - (paint.ascent() + paint.descent()) / 2, paint)
        }
        override fun setAlpha(alpha: Int) { paint.alpha = alpha }
        override fun setColorFilter(colorFilter: ColorFilter?) { paint.colorFilter = colorFilter }
        @Deprecated("Drawable API")
        override fun getOpacity() = PixelFormat.TRANSLUCENT
        override fun getIntrinsicWidth() = 96
        override fun getIntrinsicHeight() = 96
    }

    private companion object {
        val TABS = listOf(R.id.tab_home, R.id.tab_log, R.id.tab_apps, R.id.tab_lists, R.id.tab_setup, R.id.tab_settings, R.id.tab_about)
        /** The shape of the engine's peek JSON (core/src/inspect/peek.rs) for a Sensors Analytics upload. */
        val SENSORS_PEEK = """{"method":"POST","path":"/sa","query":[{"name":"project","value":"mibrowser_global"}],"content_type":"application/x-www-form-urlencoded","user_agent":"SensorsAnalytics Android SDK/6.2.0","body_len":1184,"form":[{"name":"gzip","value":"1"},{"name":"data_list","value":"H4sIAAAAAAAAA6tWSkksSVSyUlAqS8wpTVWqBQA…","decoded":{"json":[{"event":"${'$'}AppStart","distinct_id":"a1************18","properties":{"${'$'}model":"Redmi Note 8","${'$'}os_version":"11","${'$'}screen_width":1080,"imei":"86***********23","${'$'}wifi":true}},{"event":"${'$'}AppViewScreen","distinct_id":"a1************18","properties":{"${'$'}screen_name":"com.mi.globalbrowser.HomeActivity","url":"[redacted]"}}]}}],"kind":"sensors_analytics","truncated":false}"""
    }
}
