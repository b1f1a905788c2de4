package app.hushwall.servicetest

import android.content.Context
import android.database.sqlite.SQLiteDatabase
import app.hushwall.data.AppEntry
import app.hushwall.data.AppRule
import app.hushwall.data.Store
import app.hushwall.engine.Action
import app.hushwall.engine.BlockEvent
import app.hushwall.engine.Protocol
import app.hushwall.engine.Rule
import app.hushwall.ui.Export
import org.json.JSONArray
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.annotation.Config
import java.io.StringWriter
import java.net.InetSocketAddress

/**
 * The event store's schema upgrade and the log export (Robolectric on Android 14, framework SQLite): a store
 * written by schema v1 (before `repeats`) opens with nothing lost, and an export carries each entry's `repeats`.
 */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34])
class StoreTest {
    private val ctx: Context get() = RuntimeEnvironment.getApplication()

    /** Writes `databases/hushwall.db` exactly as the schema v1 app (before `repeats`) created and filled it. */
    private fun writeV1Store() {
        val file = ctx.getDatabasePath(Store.FILE_NAME)
        file.parentFile?.mkdirs()
        val db = SQLiteDatabase.openOrCreateDatabase(file, null)
        db.enableWriteAheadLogging()
        db.execSQL(
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, uid INTEGER NOT NULL, " +
                "protocol TEXT NOT NULL, dst TEXT NOT NULL, host TEXT, reason TEXT NOT NULL, rule_list TEXT, " +
                "rule_line INTEGER NOT NULL DEFAULT 0, rule_text TEXT, peek TEXT)",
        )
        db.execSQL("CREATE INDEX events_time ON events(time)")
        db.execSQL("CREATE INDEX events_uid_time ON events(uid, time)")
        db.execSQL(
            "CREATE TABLE app_rules (package TEXT PRIMARY KEY, block_wifi INTEGER NOT NULL, " +
                "block_mobile INTEGER NOT NULL, bypass INTEGER NOT NULL)",
        )
        db.execSQL(
            "INSERT INTO events (time, uid, protocol, dst, host, reason, rule_list, rule_line, rule_text, peek) VALUES " +
                "(?, 10123, 'DNS', '10.111.222.53:53', 'tracking.intl.miui.com', 'dns_query', 'builtin:xiaomi-telemetry.txt', 12, '||miui.com^', NULL), " +
                "(?, 10200, 'TCP', '[2001:db8::7]:443', NULL, 'ip_cidr', NULL, 0, NULL, NULL), " +
                "(?, 10123, 'TCP', '203.0.113.9:443', 'sdk.sensors.example', 'tls_sni', 'extra:1', 3, 'sensors.example', '{\"kind\":\"sensors\"}')",
            arrayOf<Any>(T0, T0 + 1000, T0 + 2000),
        )
        db.execSQL("INSERT INTO app_rules VALUES ('com.example.tracker', 1, 0, 0), ('com.example.bank', 0, 0, 1)")
        db.version = 1
        db.close()
    }

    @Test
    fun `a v1 store opens with every entry and rule kept and each old entry counted once`() {
        writeV1Store()
        val store = Store(ctx)
        try {
            val entries = store.recent(10).sortedBy { it.timeMillis }
            assertEquals(3, entries.size)
            val dns = entries[0]
            assertEquals(listOf(T0, 10123, "DNS", "10.111.222.53:53", "tracking.intl.miui.com", "dns_query"), listOf(dns.timeMillis, dns.uid, dns.protocol, dns.destination, dns.host, dns.reason))
            assertEquals(listOf("builtin:xiaomi-telemetry.txt", 12, "||miui.com^"), listOf(dns.ruleList, dns.ruleLine, dns.ruleText))
            assertNull(dns.peekJson)
            assertEquals("[2001:db8::7]:443", entries[1].destination)
            assertNull(entries[1].host)
            assertNull(entries[1].ruleList)
            assertEquals("{\"kind\":\"sensors\"}", entries[2].peekJson)
            // The new column's default: an entry from before folding stands for one block.
            assertEquals(listOf(1L, 1L, 1L), entries.map { it.repeats })
            assertEquals(3, store.countAll())
            assertEquals(listOf(10123 to 2, 10200 to 1), store.countsByUid(0).map { it.key to it.count })
            assertEquals(
                mapOf(
                    "com.example.tracker" to AppRule("com.example.tracker", blockWifi = true),
                    "com.example.bank" to AppRule("com.example.bank", bypass = true),
                ),
                store.rules(),
            )
            // The upgraded store takes new (folded) entries.
            store.insert(listOf(block(T0 + 3000, repeats = 5)), keepPeek = false)
            assertEquals(8, store.countAll())
            assertEquals(listOf(10123 to 7, 10200 to 1), store.countsByUid(0).map { it.key to it.count })
        } finally {
            store.close()
        }
    }

    @Test
    fun `an upgraded v1 store has the schema a fresh install creates`() {
        writeV1Store()
        val upgraded = Store(ctx).let { s -> try { schema(s.readableDatabase) } finally { s.close() } }
        assertTrue(ctx.deleteDatabase(Store.FILE_NAME))
        val fresh = Store(ctx).let { s -> try { schema(s.readableDatabase) } finally { s.close() } }
        assertTrue(fresh.toString(), fresh.any { it.startsWith("events.repeats INTEGER notnull=1 default=1") })
        assertEquals(fresh, upgraded)
    }

    /** The schema as lines: the version, each table's columns (type, NOT NULL, default, key) and the indexes. */
    private fun schema(db: SQLiteDatabase): List<String> {
        val out = arrayListOf("version ${db.version}")
        for (table in listOf("events", "app_rules")) {
            db.rawQuery("PRAGMA table_info($table)", null).use { c ->
                while (c.moveToNext()) out.add("$table.${c.getString(1)} ${c.getString(2)} notnull=${c.getInt(3)} default=${c.getString(4)} pk=${c.getInt(5)}")
            }
        }
        db.rawQuery("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name", null).use { c ->
            while (c.moveToNext()) out.add("index ${c.getString(0)} on ${c.getString(1)}: ${c.getString(2)}")
        }
        return out
    }

    @Test
    fun `the CSV and JSON exports carry each entry's repeats, so they count what Home counts`() {
        ctx.deleteDatabase(Store.FILE_NAME)
        val store = Store(ctx)
        try {
            store.insert(listOf(block(T0, repeats = 37), block(T0 + 1000, repeats = 1, host = "ads.example", uid = 10200)), keepPeek = false)
            val app = { uid: Int -> AppEntry(uid, "com.example.u$uid", "App $uid", system = false) }

            val csv = StringWriter().also { w -> assertEquals(2, Export.write(store, w, json = false, app = app)) }.toString()
            val rows = csv.trimEnd().split("\r\n").map { it.split(",") }
            val column = rows[0].indexOf("repeats")
            assertTrue(rows[0].toString(), column >= 0)
            assertEquals(listOf("37", "1"), rows.drop(1).map { it[column] })

            val json = JSONArray(StringWriter().also { w -> Export.write(store, w, json = true, app = app) }.toString())
            assertEquals(2, json.length())
            assertEquals(listOf(37L, 1L), (0 until json.length()).map { json.getJSONObject(it).getLong("repeats") })
            assertEquals("tracking.intl.miui.com", json.getJSONObject(0).getString("host"))
            assertEquals(store.countAll().toLong(), (0 until json.length()).sumOf { json.getJSONObject(it).getLong("repeats") })
        } finally {
            store.close()
        }
    }

    private fun block(time: Long, repeats: Long, host: String = "tracking.intl.miui.com", uid: Int = 10123) = BlockEvent(
        timeMillis = time, action = Action.BLOCK, protocol = Protocol.DNS,
        src = InetSocketAddress("10.111.222.1", 40000), dst = InetSocketAddress("10.111.222.53", 53), host = host,
        reason = "dns_query", rule = Rule("builtin:xiaomi-telemetry.txt", 12, "||miui.com^"), uid = uid, repeats = repeats,
    )

    companion object {
        private const val T0 = 1_764_800_000_000L
    }
}
