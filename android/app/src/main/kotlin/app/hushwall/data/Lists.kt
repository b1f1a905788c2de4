package app.hushwall.data

import android.content.Context
import app.hushwall.engine.ListRole
import app.hushwall.engine.ListSpec
import app.hushwall.engine.PolicyConfig
import java.io.File
import java.io.IOException
import java.net.HttpURLConnection
import java.net.URL
import java.security.MessageDigest
import javax.net.ssl.HttpsURLConnection

/**
 * The user's extra block lists: downloaded by the app (which is excluded from its own VPN, so these requests go
 * straight out) into `files/lists/`, one file per URL, and handed to the engine as [ListSpec.File]s. A download
 * replaces its file only when it completed and the engine accepted the result; on any error the last good copy
 * stays and the error is shown.
 */
class Lists(context: Context) {
    private val dir = File(context.applicationContext.filesDir, "lists")
    private val prefs = Prefs(context)

    /** The file holding [url]'s last good copy (it may not exist yet). */
    fun fileFor(url: String): File {
        val digest = MessageDigest.getInstance("SHA-256").digest(url.toByteArray(Charsets.UTF_8))
        val name = digest.take(8).joinToString("") { String.format("%02x", it.toInt() and 0xff) }
        return File(dir, "$name.txt")
    }

    /** The policy to run: the chosen profile (with the DoH resolvers if asked) plus every extra list that has a good copy. */
    fun policy(): PolicyConfig {
        val specs = prefs.listUrls.mapNotNull { url ->
            val file = fileFor(url)
            if (file.isFile) ListSpec.File(file.path, ListRole.BLOCK, displayName(url)) else null
        }
        return PolicyConfig(prefs.profile, specs, blockDoh = prefs.blockDoh)
    }

    /** Result of one [update]: per URL, null for success or the error message. */
    class UpdateResult(val perUrl: Map<String, String?>) {
        val ok: Boolean get() = perUrl.values.all { it == null }
    }

    /**
     * Downloads every list URL (blocking: call it off the main thread). Each good download goes to a temporary
     * file; [accept] is asked (with the policy that would result) whether the engine takes it — if it throws, the
     * old file stays. Records the result for the Lists screen.
     */
    fun update(accept: (PolicyConfig) -> Unit): UpdateResult {
        dir.mkdirs()
        val results = LinkedHashMap<String, String?>()
        for (url in prefs.listUrls) {
            results[url] = try {
                val tmp = File(dir, fileFor(url).name + ".tmp")
                download(url, tmp)
                val target = fileFor(url)
                val backup = File(dir, target.name + ".old")
                if (target.exists() && !target.renameTo(backup)) throw IOException("cannot keep the old copy")
                if (!tmp.renameTo(target)) throw IOException("cannot replace ${target.name}")
                try {
                    accept(policy())
                    backup.delete()
                    null
                } catch (e: Exception) {
                    target.delete()
                    if (backup.exists()) backup.renameTo(target)
                    "rejected by the engine: ${e.message}"
                }
            } catch (e: Exception) {
                e.message ?: e.javaClass.simpleName
            }
        }
        // Files of URLs the user removed.
        val keep = prefs.listUrls.map { fileFor(it).name }.toSet()
        dir.listFiles()?.forEach { if (it.name !in keep) it.delete() }
        val result = UpdateResult(results)
        prefs.lastUpdateMillis = System.currentTimeMillis()
        prefs.lastUpdateOk = result.ok
        prefs.lastUpdateMessage = if (results.isEmpty()) "No extra lists: the built-in profile is used." else
            results.entries.joinToString("\n") { (url, err) -> if (err == null) "✓ ${displayName(url)}" else "✗ ${displayName(url)}: $err" }
        return result
    }

    private fun download(url: String, to: File) {
        val u = URL(url)
        if (u.protocol != "https") throw IOException("only https:// URLs are fetched")
        val conn = u.openConnection() as HttpsURLConnection
        conn.connectTimeout = TIMEOUT_MS
        conn.readTimeout = TIMEOUT_MS
        conn.instanceFollowRedirects = true
        conn.setRequestProperty("User-Agent", "Hushwall")
        try {
            val code = conn.responseCode
            if (code != HttpURLConnection.HTTP_OK) throw IOException("HTTP $code")
            conn.inputStream.use { input ->
                to.outputStream().use { out ->
                    val buf = ByteArray(16 * 1024)
                    var total = 0L
                    while (true) {
                        val n = input.read(buf)
                        if (n < 0) break
                        total += n
                        if (total > MAX_BYTES) throw IOException("larger than ${MAX_BYTES / (1024 * 1024)} MiB")
                        out.write(buf, 0, n)
                    }
                    out.fd.sync()
                }
            }
        } catch (e: Exception) {
            to.delete()
            throw e
        } finally {
            conn.disconnect()
        }
    }

    companion object {
        private const val TIMEOUT_MS = 20_000
        private const val MAX_BYTES = 8L * 1024 * 1024

        /** What events and the screen call a list: its host and file name. */
        fun displayName(url: String): String = try {
            val u = URL(url)
            u.host + u.path.substringAfterLast('/', "").let { if (it.isEmpty()) "" else "/$it" }
        } catch (e: Exception) {
            url
        }
    }
}
