package app.hushwall.vpn

import android.content.Context
import app.hushwall.data.Apps
import app.hushwall.data.Store
import app.hushwall.engine.Engine

/** The kind of network the phone's traffic goes out on now (per-app rules differ for Wi-Fi and mobile data). */
enum class NetType { WIFI, MOBILE, OTHER }

/** Turns the per-app rules into what the VPN needs: blocked UIDs for a network type, and bypassed packages. */
object AppRules {

    /**
     * UIDs whose traffic is refused on [net]. On a network that is neither Wi-Fi nor mobile (Ethernet, none)
     * only apps blocked on both count, so "block all traffic" always holds.
     */
    fun blockedUids(context: Context, net: NetType): IntArray {
        val apps = Apps(context)
        val uids = java.util.TreeSet<Int>()
        for (rule in Store.get(context).rules().values) {
            if (rule.bypass) continue
            val blocked = when (net) {
                NetType.WIFI -> rule.blockWifi
                NetType.MOBILE -> rule.blockMobile
                NetType.OTHER -> rule.blockWifi && rule.blockMobile
            }
            if (blocked) apps.uidOf(rule.packageName)?.let { uids.add(it) }
        }
        return uids.toIntArray()
    }

    /** Packages the tunnel leaves alone (`VpnService.Builder.addDisallowedApplication`). */
    fun bypassed(context: Context): List<String> =
        Store.get(context).rules().values.filter { it.bypass }.map { it.packageName }.sorted()

    /**
     * Hands the blocked set to the engine: flows and DNS queries of these UIDs are refused with reason
     * `app_blocked`, from now on, replacing the previous set.
     */
    fun apply(engine: Engine, uids: IntArray) {
        engine.setBlockedUids(uids)
    }
}
