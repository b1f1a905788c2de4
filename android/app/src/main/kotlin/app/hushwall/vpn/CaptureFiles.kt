package app.hushwall.vpn

import android.content.Context
import java.io.File

/**
 * The packet capture files (`files/captures/`): one per engine start, so that a re-established tunnel (a bypass
 * change, a new LAN subnet, an engine restart), whose new engine starts before the old one stops, never truncates
 * the file the old engine is still writing. The service removes the older files once their engine has stopped;
 * the newest is the one exported. Each is capped natively (`CAPTURE_MAX_BYTES`, 64 MiB).
 */
internal object CaptureFiles {
    private const val PREFIX = "capture-"
    private const val SUFFIX = ".pcapng"
    private var lastStamp = 0L

    fun dir(context: Context): File = File(context.filesDir, "captures")

    /** A new file name for the next engine, newer than every existing one (names sort by start time). */
    @Synchronized
    fun next(context: Context): File {
        val d = dir(context)
        d.mkdirs()
        // Versions before per-engine files wrote here.
        File(context.filesDir, "capture.pcapng").delete()
        val newest = all(context).lastOrNull()?.let { stamp(it) } ?: 0L
        lastStamp = maxOf(System.currentTimeMillis(), lastStamp + 1, newest + 1)
        return File(d, PREFIX + lastStamp.toString().padStart(15, '0') + SUFFIX)
    }

    /** The newest capture, or null. */
    fun latest(context: Context): File? = all(context).lastOrNull()

    /** Deletes every capture file but [keep] (call only when no engine but [keep]'s writes to them). */
    fun removeAllBut(context: Context, keep: File?) {
        for (f in all(context)) if (f != keep) f.delete()
    }

    /** Oldest first. */
    fun all(context: Context): List<File> =
        dir(context).listFiles { f -> f.name.startsWith(PREFIX) && f.name.endsWith(SUFFIX) }.orEmpty().sortedBy { it.name }

    private fun stamp(f: File): Long = f.name.removePrefix(PREFIX).removeSuffix(SUFFIX).toLongOrNull() ?: 0L
}
