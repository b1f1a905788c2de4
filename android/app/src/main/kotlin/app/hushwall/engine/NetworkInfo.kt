package app.hushwall.engine

/**
 * What the app knows about the network under the VPN (the default network's `LinkProperties`), for
 * [Engine.networkChanged]. Crosses JNI as JSON (see `android/native/src/config.rs`, `parse_network`).
 */
data class NetworkInfo(
    /** IPv4 has a default route upstream: new IPv4 connections can be forwarded. */
    val ipv4: Boolean,
    /** IPv6 has a default route upstream; false on IPv4-only Wi-Fi, so IPv6 connections are refused at once. */
    val ipv6: Boolean,
    /** The network's own resolvers (`LinkProperties.getDnsServers()`, as `InetAddress.getHostAddress()`). */
    val dnsServers: List<String> = emptyList(),
    /** The Private DNS host name the user set (`LinkProperties.getPrivateDnsServerName()`), or null. */
    val privateDns: String? = null,
    /** The network's MTU (`LinkProperties.getMtu()`); 0 when not known. */
    val mtu: Int = 0,
) {
    internal fun toJson(): String {
        val out = StringBuilder(128)
        out.append("{\"ipv4\":").append(ipv4).append(",\"ipv6\":").append(ipv6).append(",\"dnsServers\":[")
        dnsServers.forEachIndexed { i, server ->
            if (i > 0) out.append(',')
            out.appendJson(server)
        }
        out.append("],\"privateDns\":")
        if (privateDns == null) out.append("null") else out.appendJson(privateDns)
        out.append(",\"mtu\":").append(mtu)
        return out.append('}').toString()
    }
}
