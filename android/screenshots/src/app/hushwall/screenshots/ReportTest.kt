package app.hushwall.screenshots

import android.app.Application
import android.content.Intent
import app.hushwall.data.Store
import app.hushwall.engine.Action
import app.hushwall.engine.BlockEvent
import app.hushwall.engine.Protocol
import app.hushwall.engine.Rule
import app.hushwall.ui.LogScreen
import app.hushwall.ui.Report
import app.hushwall.ui.charts.ChartData
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.annotation.Config
import java.net.InetAddress
import java.net.InetSocketAddress

/** The shared report (ui/Report.kt) and the store queries behind it and the charts, on a real SQLite store. */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34])
class ReportTest {
    private val app: Application = RuntimeEnvironment.getApplication()
    private val store = freshStore(app)
    private val now = System.currentTimeMillis()
    private val days = ChartData.dayBoundaries(now)
    private val label = { uid: Int -> "App $uid" }

    @Before
    fun clear() = store.clearLog()

    private fun block(time: Long, uid: Int, host: String?, reason: String, peek: String? = null) = BlockEvent(
        time, Action.BLOCK, Protocol.TCP,
        InetSocketAddress(InetAddress.getByName("10.111.222.1"), 40_000),
        InetSocketAddress(InetAddress.getByName("47.241.1.2"), 80),
        host, reason, Rule("builtin:xiaomi-telemetry.txt", 7, host ?: "47.241.0.0/16"), uid, peek,
    )

    private fun seed() {
        val today = days[29] + 60_000
        store.insert(
            listOf(
                block(today, 10_001, "a.example", "dns_query"),
                block(today + 1, 10_001, "a.example", "dns_query"),
                block(days[3] + 5, 10_001, "a.example", "dns_query"),
                block(days[3] + 6, 10_002, "b.example", "tls_sni"),
                block(today + 2, 10_002, "sa.example", "http_host", PEEK),
                block(today + 3, 10_003, null, "ip_cidr"),
                block(days[0] - 1, 10_009, "old.example", "dns_query", PEEK_OLD),
            ),
            keepPeek = true,
        )
    }

    @Test
    fun reportHasThePeriodsNumbersAndThePeekAsTheLogShowsIt() {
        seed()
        val r = Report.load(store, label, now)
        val text = Report.text(app, r)
        for (line in listOf(
            "What Hushwall blocked", "6 blocks", "• App 10001: 3", "• App 10002: 2", "• App 10003: 1",
            "• a.example: 3", "• b.example: 1", "• sa.example: 1", "• 47.241.1.2:80: 1",
            "• DNS lookup: 3", "• TLS server name: 1", "• HTTP host: 1", "• IP address range: 1",
        )) assertTrue("$line in\n$text", text.contains(line))
        // The peek exactly as the log's details dialog shows it (already redacted by the engine), never the raw JSON.
        val shown = LogScreen.prettyJson(PEEK)
        assertTrue(text, text.contains(shown))
        assertTrue(text.contains("86***********23"))
        assertFalse(text.contains(PEEK))
        assertFalse("outside the period", text.contains("old.example") || text.contains("App 10009"))
        val html = Report.html(app, r)
        assertTrue(html, html.contains("<li>a.example: 3</li>"))
        assertTrue(html, html.contains("<pre>" + android.text.TextUtils.htmlEncode(shown) + "</pre>"))
        assertTrue("escaped", html.contains("&lt;b&gt;") && !html.contains("<b>"))

        val chooser = Report.intent(app, r)
        assertEquals(Intent.ACTION_CHOOSER, chooser.action)
        @Suppress("DEPRECATION")
        val send = chooser.getParcelableExtra<Intent>(Intent.EXTRA_INTENT)!!
        assertEquals(Intent.ACTION_SEND, send.action)
        assertEquals(text, send.getStringExtra(Intent.EXTRA_TEXT))
        assertEquals(html, send.getStringExtra(Intent.EXTRA_HTML_TEXT))
    }

    @Test
    fun oneAppsReport() {
        seed()
        val text = Report.text(app, Report.load(store, label, now, uid = 10_002))
        assertTrue(text, text.contains("only App 10002"))
        assertTrue(text, text.contains("\n2 blocks\n"))
        assertTrue(text.contains("• b.example: 1") && text.contains("• sa.example: 1"))
        assertFalse("no other app's hosts", text.contains("• a.example:"))
        assertFalse("no app list", text.contains("Apps with most blocks"))
    }

    @Test
    fun anEmptyPeriodSaysSo() {
        store.insert(listOf(block(days[0] - 1, 10_009, "old.example", "dns_query")), keepPeek = true)
        val text = Report.text(app, Report.load(store, label, now))
        assertTrue(text, text.contains("Nothing was blocked in this period."))
        for (absent in listOf("Most blocked hosts", "Why they were blocked", "old.example", "blocks")) assertFalse(absent, text.contains(absent))
    }

    @Test
    fun storeCountsEachLocalDayFromItsMidnight() {
        store.insert(
            listOf(
                block(days[0] - 1, 1, "h", "dns_query"), // before the period
                block(days[0], 1, "h", "dns_query"),
                block(days[1] - 1, 1, "h", "dns_query"),
                block(days[1], 1, "h", "dns_query"),
                block(days[1], 2, "h", "dns_query"),
                block(days[30], 1, "h", "dns_query"), // tomorrow
            ),
            keepPeek = false,
        )
        val rows = store.blocksByDayAndUid(days).sortedWith(compareBy({ it.day }, { it.uid })).map { Triple(it.day, it.uid, it.blocks) }
        assertEquals(listOf(Triple(0, 1, 2), Triple(1, 1, 1), Triple(1, 2, 1)), rows)
        assertEquals(listOf(Triple(1, 2, 1)), store.blocksByDayAndUid(days, uid = 2).map { Triple(it.day, it.uid, it.blocks) })
    }

    private companion object {
        const val PEEK = """{"method":"POST","path":"/sa","form":[{"name":"imei","value":"86***********23"},{"name":"note","value":"<b>"}],"kind":"sensors_analytics"}"""
        const val PEEK_OLD = """{"method":"POST","path":"/old"}"""
    }
}

/**
 * The app's [Store] for this test's application: Robolectric gives every test a new application (and files
 * directory) but keeps statics, so the singleton of an earlier test is dropped first.
 */
internal fun freshStore(app: Application): Store {
    val field = Store::class.java.getDeclaredField("instance").apply { isAccessible = true }
    (field.get(null) as Store?)?.close()
    field.set(null, null)
    return Store.get(app)
}
