package app.hushwall.data

import android.Manifest
import android.content.Context
import android.content.pm.ApplicationInfo
import android.content.pm.PackageInfo
import android.content.pm.PackageManager
import android.graphics.drawable.Drawable
import android.os.Process

/** One app (or shared UID) as the screens show it. */
data class AppEntry(val uid: Int, val packageName: String?, val label: String, val system: Boolean)

/**
 * UID → app name and icon, from the package manager (cached; the screens ask for the same few often). Thread-safe:
 * the screens' data thread and the export thread use it too.
 */
class Apps(context: Context) {
    private val pm: PackageManager = context.applicationContext.packageManager
    private val labels = HashMap<Int, AppEntry>()
    private val icons = HashMap<Int, Drawable?>()

    fun entry(uid: Int): AppEntry = synchronized(labels) { labels[uid] } ?: lookup(uid).also { synchronized(labels) { labels[uid] = it } }

    fun icon(uid: Int): Drawable? = synchronized(icons) {
        icons.getOrPut(uid) {
            val pkg = entry(uid).packageName
            if (pkg == null) null else try {
                pm.getApplicationIcon(pkg)
            } catch (e: PackageManager.NameNotFoundException) {
                null
            }
        }
    } ?: pm.defaultActivityIcon

    /** Installed apps that may use the network (hold INTERNET), one entry per UID. */
    fun networkApps(): List<AppEntry> {
        @Suppress("DEPRECATION")
        val packages: List<PackageInfo> = pm.getInstalledPackages(PackageManager.GET_PERMISSIONS)
        val byUid = LinkedHashMap<Int, AppEntry>()
        for (p in packages) {
            val info = p.applicationInfo ?: continue
            if (p.requestedPermissions?.contains(Manifest.permission.INTERNET) != true) continue
            if (!byUid.containsKey(info.uid)) byUid[info.uid] = entry(info.uid)
        }
        return byUid.values.toList()
    }

    /** The UID an installed package runs as, or null if it is not installed. */
    fun uidOf(packageName: String): Int? = try {
        pm.getApplicationInfo(packageName, 0).uid
    } catch (e: PackageManager.NameNotFoundException) {
        null
    }

    private fun lookup(uid: Int): AppEntry {
        when (uid) {
            -1 -> return AppEntry(uid, null, "Unknown app", false)
            Process.ROOT_UID -> return AppEntry(uid, null, "Root (system daemons)", true)
            Process.SYSTEM_UID -> return AppEntry(uid, "android", "Android system", true)
            1051 -> return AppEntry(uid, null, "DNS resolver (netd)", true)
        }
        val packages = pm.getPackagesForUid(uid)
        if (packages.isNullOrEmpty()) return AppEntry(uid, null, "UID $uid", false)
        val pkg = packages.sorted().first()
        return try {
            val info = pm.getApplicationInfo(pkg, 0)
            val label = pm.getApplicationLabel(info).toString()
            val system = info.flags and ApplicationInfo.FLAG_SYSTEM != 0
            AppEntry(uid, pkg, if (packages.size > 1) "$label (+${packages.size - 1} shared)" else label, system)
        } catch (e: PackageManager.NameNotFoundException) {
            AppEntry(uid, pkg, pkg, false)
        }
    }
}
