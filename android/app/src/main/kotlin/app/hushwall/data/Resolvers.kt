package app.hushwall.data

import java.net.Inet6Address
import java.net.InetAddress

/**
 * DNS resolver addresses as the engine takes them (`IP:PORT`, IPv6 as `[addr]:port`): the user's fallback list
 * (Settings) and the default network's own resolvers. Only numeric literals are accepted: nothing here ever does
 * a name lookup.
 */
object Resolvers {
    /** The port a resolver without one gets. */
    const val DNS_PORT = 53

    /**
     * Tried after the network's own resolvers and the user's fallbacks: Cloudflare's public resolver, which does
     * not filter or rewrite answers (Quad9's 9.9.9.9 blocks names by its own lists, so a block or a failure
     * there would look like ours), the same default as the engine's (README "Network changes and DNS").
     */
    val PUBLIC_DEFAULT = listOf("1.1.1.1:53", "[2606:4700:4700::1111]:53")

    /** `IP:PORT` for a resolver address the framework reports (port 53); null for a zoned (link-local) one. */
    fun of(address: InetAddress): String? {
        val host = address.hostAddress ?: return null
        if (host.contains('%')) return null
        return if (address is Inet6Address) "[$host]:$DNS_PORT" else "$host:$DNS_PORT"
    }

    /**
     * Parses the user's list (one per line, or separated by commas/spaces): each `IP`, `IP:PORT`, `IPv6` or
     * `[IPv6]:PORT`. Returns the normalised list, or the first entry that is not one (as [Invalid]).
     */
    fun parse(text: String): Result {
        val out = ArrayList<String>()
        for (item in text.split(',', ' ', '\n', '\t', ';').map { it.trim() }.filter { it.isNotEmpty() }) {
            out.add(parseOne(item) ?: return Invalid(item))
        }
        return Valid(out)
    }

    /** What [parse] found. */
    sealed class Result

    /** Every entry was an address; [list] is normalised. */
    data class Valid(val list: List<String>) : Result()

    /** [entry] is not an `IP[:PORT]`. */
    data class Invalid(val entry: String) : Result()

    private fun parseOne(item: String): String? {
        val (host, port) = when {
            item.startsWith("[") -> {
                val end = item.indexOf(']')
                if (end < 0) return null
                val rest = item.substring(end + 1)
                val port = if (rest.isEmpty()) DNS_PORT else if (rest.startsWith(":")) rest.substring(1).toIntOrNull() ?: return null else return null
                item.substring(1, end) to port
            }
            item.count { it == ':' } == 1 -> item.substringBefore(':') to (item.substringAfter(':').toIntOrNull() ?: return null)
            else -> item to DNS_PORT
        }
        if (port !in 1..65535) return null
        val address = literal(host) ?: return null
        return if (address is Inet6Address) "[${address.hostAddress}]:$port" else "${address.hostAddress}:$port"
    }

    /** A numeric IPv4 (dotted quad) or IPv6 literal, else null; never a lookup. */
    private fun literal(host: String): InetAddress? {
        if (host.contains(':')) {
            if (host.contains('%') || !host.all { it.isDigit() || it in 'a'..'f' || it in 'A'..'F' || it == ':' || it == '.' }) return null
        } else {
            val parts = host.split('.')
            if (parts.size != 4 || parts.any { p -> p.isEmpty() || p.length > 3 || !p.all { it.isDigit() } || p.toInt() > 255 }) return null
        }
        return try {
            InetAddress.getByName(host)
        } catch (e: java.net.UnknownHostException) {
            null
        } catch (e: IllegalArgumentException) {
            null
        }
    }
}
