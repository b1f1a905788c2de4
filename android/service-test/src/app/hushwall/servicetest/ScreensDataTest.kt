package app.hushwall.servicetest

import android.content.Context
import android.os.Looper
import android.widget.TextView
import app.hushwall.R
import app.hushwall.data.Resolvers
import app.hushwall.data.Store
import app.hushwall.engine.Action
import app.hushwall.engine.BlockEvent
import app.hushwall.engine.Protocol
import app.hushwall.engine.Rule
import app.hushwall.ui.LogScreen
import app.hushwall.ui.MainActivity
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import org.robolectric.annotation.Config
import java.net.InetSocketAddress

/**
 * The app's storage and screens without the VPN (Robolectric on Android 14): folded blocks (`repeats`) count as
 * what they stand for, the log shows "×N", Settings counts the log off the main thread, DNS fallbacks are checked.
 */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34])
class ScreensDataTest {
    private val ctx: Context get() = RuntimeEnvironment.getApplication()

    @Before
    fun clear() {
        Store.get(ctx).clearLog()
    }

    private fun block(host: String, uid: Int, repeats: Long) = BlockEvent(
        timeMillis = System.currentTimeMillis(), action = Action.BLOCK, protocol = Protocol.DNS,
        src = InetSocketAddress("10.111.222.1", 40000), dst = InetSocketAddress("10.111.222.53", 53), host = host,
        reason = "dns_query", rule = Rule("builtin:xiaomi-telemetry.txt", 12, "||miui.com^"), uid = uid, repeats = repeats,
    )

    @Test
    fun `an event with repeats N counts as N blocks in every count, and the log shows xN`() {
        val store = Store.get(ctx)
        store.insert(listOf(block("tracking.intl.miui.com", 10123, 37), block("data.mistat.xiaomi.com", 10123, 1), block("ads.example", 10200, 2)), keepPeek = false)
        val today = Store.startOfToday()
        assertEquals(40, store.countSince(today))
        assertEquals(40, store.countAll())
        assertEquals(listOf(10123 to 38, 10200 to 2), store.countsByUid(today).map { it.key to it.count })
        assertEquals("tracking.intl.miui.com" to 37, store.topHosts(today, 1).single().let { it.key to it.count })
        val entries = store.recent(10)
        val folded = entries.single { it.host == "tracking.intl.miui.com" }
        assertEquals(37L, folded.repeats)
        assertEquals("tracking.intl.miui.com  ×37", LogScreen.hostLine(folded))
        assertEquals("data.mistat.xiaomi.com", LogScreen.hostLine(entries.single { it.repeats == 1L }))
    }

    @Test
    fun `Settings counts the stored log on the data thread, not the main thread`() {
        Store.get(ctx).insert(listOf(block("tracking.intl.miui.com", 10123, 5), block("ads.example", 10200, 1)), keepPeek = false)
        val activity = Robolectric.buildActivity(MainActivity::class.java).setup().get()
        val data = shadowOf(activity.dataLooper)
        data.idle()
        shadowOf(Looper.getMainLooper()).idle()
        data.pause()
        activity.showScreen(5)
        val stored = activity.findViewById<TextView>(R.id.settings_stored)
        // Nothing counted on the main thread: the text waits for the data thread.
        assertEquals("", stored.text.toString())
        data.unPause()
        data.idle()
        shadowOf(Looper.getMainLooper()).idle()
        assertEquals(ctx.getString(R.string.settings_stored, 6), stored.text.toString())
        activity.finish()
    }

    @Test
    fun `DNS fallbacks - addresses with or without a port are accepted, anything else is refused`() {
        assertEquals(
            Resolvers.Valid(listOf("192.168.1.1:53", "9.9.9.10:5353", "[2001:db8:0:0:0:0:0:53]:53", "[2001:db8:0:0:0:0:0:1]:853")),
            Resolvers.parse("192.168.1.1\n9.9.9.10:5353, 2001:db8::53  [2001:db8::1]:853\n"),
        )
        assertEquals(Resolvers.Valid(emptyList()), Resolvers.parse("  \n"))
        for (bad in listOf("dns.google", "1.2.3", "1.2.3.256", "1.2.3.4:0", "1.2.3.4:70000", "[::1", "[::1]x", "fe80::1%wlan0", "1.2.3.4:x")) {
            assertEquals(bad, Resolvers.Invalid(bad), Resolvers.parse(bad))
        }
        assertTrue(Resolvers.PUBLIC_DEFAULT.none { it.startsWith("9.9.9.9") })
    }
}
