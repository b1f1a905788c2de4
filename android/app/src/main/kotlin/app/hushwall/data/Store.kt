package app.hushwall.data

import android.content.ContentValues
import android.content.Context
import android.database.sqlite.SQLiteDatabase
import android.database.sqlite.SQLiteOpenHelper
import app.hushwall.engine.BlockEvent

/** One stored block, as the log shows it. */
data class LogEntry(
    val id: Long,
    val timeMillis: Long,
    val uid: Int,
    val protocol: String,
    val destination: String,
    val host: String?,
    val reason: String,
    val ruleList: String?,
    val ruleLine: Int,
    val ruleText: String?,
    val peekJson: String?,
    /** Identical blocks this entry stands for (the engine folds floods; see `BlockEvent.repeats`). */
    val repeats: Long = 1,
)

/** What the user decided for one app (keyed by package name: UIDs change on reinstall). */
data class AppRule(
    val packageName: String,
    val blockWifi: Boolean = false,
    val blockMobile: Boolean = false,
    val bypass: Boolean = false,
) {
    val isDefault: Boolean get() = !blockWifi && !blockMobile && !bypass
}

/** A count per key (host or UID). */
data class Count<K>(val key: K, val count: Int)

/** Blocks of one UID on one day (index into the day boundaries the query was given). */
data class DayBlocks(val day: Int, val uid: Int, val blocks: Int)

/**
 * The block log and the per-app rules, in framework SQLite in the app's internal storage (`databases/`, never
 * under `Android/data`, which MIUI's storage cleaner empties). Every write is one transaction, so a crash leaves
 * either the old or the new state. The log keeps [RETENTION_MILLIS]; [prune] drops older rows and their peeks.
 * The app uses the one instance from [get]; the constructor is internal for the tests, which open a store file
 * written by an older schema.
 */
class Store internal constructor(context: Context) :
    SQLiteOpenHelper(context.applicationContext, FILE_NAME, null, VERSION) {

    override fun onCreate(db: SQLiteDatabase) {
        db.execSQL(
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, uid INTEGER NOT NULL, " +
                "protocol TEXT NOT NULL, dst TEXT NOT NULL, host TEXT, reason TEXT NOT NULL, rule_list TEXT, " +
                "rule_line INTEGER NOT NULL DEFAULT 0, rule_text TEXT, peek TEXT, repeats INTEGER NOT NULL DEFAULT 1)",
        )
        db.execSQL("CREATE INDEX events_time ON events(time)")
        db.execSQL("CREATE INDEX events_uid_time ON events(uid, time)")
        db.execSQL(
            "CREATE TABLE app_rules (package TEXT PRIMARY KEY, block_wifi INTEGER NOT NULL, " +
                "block_mobile INTEGER NOT NULL, bypass INTEGER NOT NULL)",
        )
    }

    override fun onUpgrade(db: SQLiteDatabase, oldVersion: Int, newVersion: Int) {
        // 2: folded blocks keep their count; every counting query sums it (an entry with repeats N is N blocks).
        if (oldVersion < 2) db.execSQL("ALTER TABLE events ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1")
    }

    override fun onConfigure(db: SQLiteDatabase) {
        // WAL: the reader thread writes while the UI reads, without either waiting on the other.
        db.enableWriteAheadLogging()
    }

    /** Stores a batch in one transaction. Without [keepPeek] the payload summaries are dropped before storage. */
    fun insert(events: List<BlockEvent>, keepPeek: Boolean) {
        if (events.isEmpty()) return
        val db = writableDatabase
        db.beginTransaction()
        try {
            val values = ContentValues(10)
            for (e in events) {
                values.clear()
                values.put("time", e.timeMillis)
                values.put("uid", e.uid)
                values.put("protocol", e.protocol.name)
                values.put("dst", formatAddress(e.dst.address?.hostAddress, e.dst.port))
                values.put("host", e.host)
                values.put("reason", e.reason)
                values.put("rule_list", e.rule?.list)
                values.put("rule_line", e.rule?.line ?: 0)
                values.put("rule_text", e.rule?.text)
                values.put("peek", if (keepPeek) e.peekJson else null)
                values.put("repeats", e.repeats)
                db.insertOrThrow("events", null, values)
            }
            db.setTransactionSuccessful()
        } finally {
            db.endTransaction()
        }
    }

    /** Drops entries older than the retention period; returns how many went. */
    fun prune(now: Long = System.currentTimeMillis()): Int =
        writableDatabase.delete("events", "time < ?", arrayOf((now - RETENTION_MILLIS).toString()))

    /** Deletes the whole log (rules stay). */
    fun clearLog() {
        writableDatabase.delete("events", null, null)
    }

    /** Blocks since [since] (an entry with repeats N counts N), as in every count below. */
    fun countSince(since: Long): Int = readableDatabase.rawQuery(
        "SELECT COALESCE(SUM(repeats), 0) FROM events WHERE time >= ?", arrayOf(since.toString()),
    ).use { c -> if (c.moveToFirst()) c.getInt(0) else 0 }

    fun countAll(): Int = readableDatabase.rawQuery("SELECT COALESCE(SUM(repeats), 0) FROM events", null)
        .use { c -> if (c.moveToFirst()) c.getInt(0) else 0 }

    fun topHosts(since: Long, limit: Int): List<Count<String>> = readableDatabase.rawQuery(
        "SELECT COALESCE(host, dst) AS h, SUM(repeats) AS n FROM events WHERE time >= ? GROUP BY h ORDER BY n DESC, h LIMIT ?",
        arrayOf(since.toString(), limit.toString()),
    ).use { c ->
        val out = ArrayList<Count<String>>()
        while (c.moveToNext()) out.add(Count(c.getString(0), c.getInt(1)))
        out
    }

    /** Blocks per UID since [since], most first. */
    fun countsByUid(since: Long, limit: Int = Int.MAX_VALUE): List<Count<Int>> = readableDatabase.rawQuery(
        "SELECT uid, SUM(repeats) AS n FROM events WHERE time >= ? GROUP BY uid ORDER BY n DESC, uid LIMIT ?",
        arrayOf(since.toString(), limit.toString()),
    ).use { c ->
        val out = ArrayList<Count<Int>>()
        while (c.moveToNext()) out.add(Count(c.getInt(0), c.getInt(1)))
        out
    }

    /**
     * Blocks per day and UID: day i is `boundaries[i] <= time < boundaries[i + 1]` (local midnights, so days of 23
     * or 25 hours count right); only [uid]'s when given. Days without blocks have no row.
     */
    fun blocksByDayAndUid(boundaries: LongArray, uid: Int? = null): List<DayBlocks> {
        if (boundaries.size < 2) return emptyList()
        val day = StringBuilder("CASE")
        for (i in 1 until boundaries.size) day.append(" WHEN time < ").append(boundaries[i]).append(" THEN ").append(i - 1)
        day.append(" END")
        val (where, args) = since(boundaries.first(), uid)
        return readableDatabase.rawQuery(
            "SELECT $day AS d, uid, $BLOCKS FROM events WHERE $where AND time < ? GROUP BY d, uid",
            args + boundaries.last().toString(),
        ).use { c ->
            val out = ArrayList<DayBlocks>()
            while (c.moveToNext()) out.add(DayBlocks(c.getInt(0), c.getInt(1), c.getInt(2)))
            out
        }
    }

    /** Blocked hosts (the destination where no name was seen) since [since], most blocks first; only [uid]'s when given. */
    fun hostCounts(since: Long, limit: Int, uid: Int? = null): List<Count<String>> = countsOf("COALESCE(host, dst)", since, limit, uid)

    /** Blocks per reason code since [since], most first; only [uid]'s when given. */
    fun reasonCounts(since: Long, uid: Int? = null): List<Count<String>> = countsOf("reason", since, Int.MAX_VALUE, uid)

    /** Blocks per UID since [since], most first; only [uid]'s when given. */
    fun uidCounts(since: Long, limit: Int, uid: Int? = null): List<Count<Int>> =
        countsOf("uid", since, limit, uid).map { Count(it.key.toInt(), it.count) }

    /** The newest [limit] entries with a payload peek since [since]; only [uid]'s when given. */
    fun recentPeeks(since: Long, limit: Int, uid: Int? = null): List<LogEntry> {
        val (where, args) = since(since, uid)
        return readableDatabase.rawQuery(
            "SELECT $COLUMNS FROM events WHERE $where AND peek IS NOT NULL ORDER BY time DESC, id DESC LIMIT ?",
            args + limit.toString(),
        ).use { c ->
            val out = ArrayList<LogEntry>()
            while (c.moveToNext()) out.add(entry(c))
            out
        }
    }

    private fun countsOf(key: String, since: Long, limit: Int, uid: Int?): List<Count<String>> {
        val (where, args) = since(since, uid)
        return readableDatabase.rawQuery(
            "SELECT $key AS k, $BLOCKS AS n FROM events WHERE $where GROUP BY k ORDER BY n DESC, k LIMIT ?",
            args + limit.toString(),
        ).use { c ->
            val out = ArrayList<Count<String>>()
            while (c.moveToNext()) out.add(Count(c.getString(0), c.getInt(1)))
            out
        }
    }

    /** `time >= since` and, when given, `uid = uid`, with its arguments. */
    private fun since(since: Long, uid: Int?): Pair<String, Array<String>> =
        if (uid == null) "time >= ?" to arrayOf(since.toString()) else "time >= ? AND uid = ?" to arrayOf(since.toString(), uid.toString())

    /** The newest [limit] entries, optionally of one UID. */
    fun recent(limit: Int, uid: Int? = null): List<LogEntry> {
        val where = if (uid != null) "WHERE uid = ?" else ""
        val args = if (uid != null) arrayOf(uid.toString(), limit.toString()) else arrayOf(limit.toString())
        return readableDatabase.rawQuery("SELECT $COLUMNS FROM events $where ORDER BY time DESC, id DESC LIMIT ?", args)
            .use { c ->
                val out = ArrayList<LogEntry>()
                while (c.moveToNext()) out.add(entry(c))
                out
            }
    }

    /** Every entry, oldest first, for export (streamed: [block] sees one entry at a time). */
    fun forEachEntry(block: (LogEntry) -> Unit) {
        readableDatabase.rawQuery("SELECT $COLUMNS FROM events ORDER BY time, id", null).use { c ->
            while (c.moveToNext()) block(entry(c))
        }
    }

    fun rules(): Map<String, AppRule> = readableDatabase.rawQuery(
        "SELECT package, block_wifi, block_mobile, bypass FROM app_rules", null,
    ).use { c ->
        val out = HashMap<String, AppRule>()
        while (c.moveToNext()) {
            out[c.getString(0)] = AppRule(c.getString(0), c.getInt(1) != 0, c.getInt(2) != 0, c.getInt(3) != 0)
        }
        out
    }

    /** Saves [rule] (a rule back at the defaults is deleted). */
    fun setRule(rule: AppRule) {
        val db = writableDatabase
        if (rule.isDefault) {
            db.delete("app_rules", "package = ?", arrayOf(rule.packageName))
            return
        }
        val values = ContentValues(4)
        values.put("package", rule.packageName)
        values.put("block_wifi", if (rule.blockWifi) 1 else 0)
        values.put("block_mobile", if (rule.blockMobile) 1 else 0)
        values.put("bypass", if (rule.bypass) 1 else 0)
        db.insertWithOnConflict("app_rules", null, values, SQLiteDatabase.CONFLICT_REPLACE)
    }

    private fun entry(c: android.database.Cursor) = LogEntry(
        id = c.getLong(0), timeMillis = c.getLong(1), uid = c.getInt(2), protocol = c.getString(3),
        destination = c.getString(4), host = c.getString(5), reason = c.getString(6), ruleList = c.getString(7),
        ruleLine = c.getInt(8), ruleText = c.getString(9), peekJson = c.getString(10), repeats = c.getLong(11),
    )

    companion object {
        const val FILE_NAME = "hushwall.db"
        private const val VERSION = 2
        const val RETENTION_MILLIS = 30L * 24 * 60 * 60 * 1000
        private const val COLUMNS = "id, time, uid, protocol, dst, host, reason, rule_list, rule_line, rule_text, peek, repeats"
        /** How many blocks a group of rows stands for in the aggregate queries: a folded event counts `repeats` times. */
        private const val BLOCKS = "SUM(repeats)"

        @Volatile private var instance: Store? = null

        fun get(context: Context): Store =
            instance ?: synchronized(this) { instance ?: Store(context).also { instance = it } }

        fun formatAddress(host: String?, port: Int): String {
            val h = host ?: "?"
            return if (h.contains(':')) "[$h]:$port" else "$h:$port"
        }

        /** Midnight today in the phone's time zone. */
        fun startOfToday(now: Long = System.currentTimeMillis()): Long {
            val cal = java.util.Calendar.getInstance()
            cal.timeInMillis = now
            cal.set(java.util.Calendar.HOUR_OF_DAY, 0)
            cal.set(java.util.Calendar.MINUTE, 0)
            cal.set(java.util.Calendar.SECOND, 0)
            cal.set(java.util.Calendar.MILLISECOND, 0)
            return cal.timeInMillis
        }
    }
}
