package app.hushwall.ui

import app.hushwall.data.AppEntry
import app.hushwall.data.Store
import org.json.JSONObject
import java.io.Writer
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone

/**
 * The block log as CSV or JSON (one object per entry), streamed from the database. `repeats` is how many identical
 * blocks the entry stands for (the engine folds a flood into one event), so the blocks in a file are its sum.
 */
internal object Export {
    private val HEADER = listOf("time", "uid", "package", "app", "protocol", "destination", "host", "reason", "rule_list", "rule_line", "rule", "peek", "repeats")

    /** Writes every stored entry; returns how many. */
    fun write(store: Store, w: Writer, json: Boolean, app: (Int) -> AppEntry): Int {
        val iso = SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'", Locale.US)
        iso.timeZone = TimeZone.getTimeZone("UTC")
        var n = 0
        if (json) w.write("[\n") else w.write(HEADER.joinToString(",") + "\r\n")
        store.forEachEntry { e ->
            val a = app(e.uid)
            val fields = listOf(
                iso.format(Date(e.timeMillis)), e.uid.toString(), a.packageName ?: "", a.label, e.protocol, e.destination,
                e.host ?: "", e.reason, e.ruleList ?: "", e.ruleLine.toString(), e.ruleText ?: "", e.peekJson ?: "",
                e.repeats.toString(),
            )
            if (json) {
                val o = JSONObject()
                HEADER.forEachIndexed { i, k -> o.put(k, fields[i]) }
                o.put("uid", e.uid)
                o.put("rule_line", e.ruleLine)
                o.put("repeats", e.repeats)
                if (e.peekJson != null) o.put("peek", try { JSONObject(e.peekJson) } catch (x: Exception) { e.peekJson })
                w.write(if (n == 0) "  " else ",\n  ")
                w.write(o.toString())
            } else {
                w.write(fields.joinToString(",") { csv(it) })
                w.write("\r\n")
            }
            n++
        }
        if (json) w.write("\n]\n")
        return n
    }

    /** RFC 4180 quoting; a leading =, +, - or @ is prefixed with ' so spreadsheets do not run it as a formula. */
    fun csv(value: String): String {
        var v = value
        if (v.isNotEmpty() && v[0] in "=+-@" && v.toLongOrNull() == null) v = "'$v"
        return if (v.any { it == ',' || it == '"' || it == '\n' || it == '\r' }) "\"" + v.replace("\"", "\"\"") + "\"" else v
    }
}
