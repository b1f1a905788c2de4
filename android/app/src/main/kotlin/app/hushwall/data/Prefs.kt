package app.hushwall.data

import android.content.Context
import android.content.SharedPreferences
import app.hushwall.engine.Profile

/**
 * Small settings in framework `SharedPreferences` (internal storage; written with `commit()`, which writes a
 * temporary file and renames it over the old one: atomic).
 */
class Prefs(context: Context) {
    private val sp: SharedPreferences =
        context.applicationContext.getSharedPreferences("settings", Context.MODE_PRIVATE)

    /** The user wants the VPN on (set by Start, cleared by Stop): what start-on-boot restores. */
    var vpnWanted: Boolean
        get() = sp.getBoolean("vpn_wanted", false)
        set(v) { sp.edit().putBoolean("vpn_wanted", v).commit() }

    var startOnBoot: Boolean
        get() = sp.getBoolean("start_on_boot", false)
        set(v) { sp.edit().putBoolean("start_on_boot", v).commit() }

    /** Record the tunnel's packets to [captureFile] as pcapng (for Wireshark); applied at the next VPN start. */
    var capture: Boolean
        get() = sp.getBoolean("capture", false)
        set(v) { sp.edit().putBoolean("capture", v).commit() }

    /** Payload peek ("what did it try to send?"): the engine reads refused plain-HTTP requests and the log keeps
     * their redacted summary; applied at the next start of the VPN. Off by default (issue 8). */
    var peek: Boolean
        get() = sp.getBoolean("peek", false)
        set(v) { sp.edit().putBoolean("peek", v).commit() }

    /** "Allow LAN devices": multicast, broadcast and the local subnets stay outside the VPN (default on). */
    var allowLan: Boolean
        get() = sp.getBoolean("allow_lan", true)
        set(v) { sp.edit().putBoolean("allow_lan", v).commit() }

    /**
     * The user's DNS fallbacks (`IP:PORT`, checked by [Resolvers.parse]): tried after the network's own resolvers,
     * before [Resolvers.PUBLIC_DEFAULT]. Applied at the next VPN start.
     */
    var dnsFallbacks: List<String>
        get() = (sp.getString("dns_fallbacks", "") ?: "").split('\n').filter { it.isNotEmpty() }
        set(v) { sp.edit().putString("dns_fallbacks", v.joinToString("\n")).commit() }

    var profile: Profile
        get() = if (sp.getString("profile", "balanced") == "strict") Profile.STRICT else Profile.BALANCED
        set(v) { sp.edit().putString("profile", if (v == Profile.STRICT) "strict" else "balanced").commit() }

    /**
     * Block known public DNS-over-HTTPS/TLS resolvers (the engine's `doh-resolvers.txt`) in the balanced profile
     * (strict always does). Off by default; the running engine gets it with the other list settings.
     */
    var blockDoh: Boolean
        get() = sp.getBoolean("block_doh", false)
        set(v) { sp.edit().putBoolean("block_doh", v).commit() }

    /** Extra block-list URLs (https), in the user's order. */
    var listUrls: List<String>
        get() = (sp.getString("list_urls", "") ?: "").split('\n').map { it.trim() }.filter { it.isNotEmpty() }
        set(v) { sp.edit().putString("list_urls", v.joinToString("\n")).commit() }

    /** The last list update: when, whether all lists came through, and what it said. */
    var lastUpdateMillis: Long
        get() = sp.getLong("update_time", 0)
        set(v) { sp.edit().putLong("update_time", v).commit() }

    var lastUpdateOk: Boolean
        get() = sp.getBoolean("update_ok", true)
        set(v) { sp.edit().putBoolean("update_ok", v).commit() }

    var lastUpdateMessage: String
        get() = sp.getString("update_message", "") ?: ""
        set(v) { sp.edit().putString("update_message", v).commit() }

    /** The last engine start problem shown to the user (empty: none). */
    var lastError: String
        get() = sp.getString("last_error", "") ?: ""
        set(v) { sp.edit().putString("last_error", v).commit() }
}
