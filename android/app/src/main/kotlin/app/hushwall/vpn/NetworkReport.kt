package app.hushwall.vpn

import android.net.LinkProperties
import android.os.Build
import app.hushwall.engine.NetworkInfo
import java.net.Inet6Address

/**
 * What the engine needs to know about the default (physical) network, from its [LinkProperties]: which families
 * have a default route, its resolvers, Private DNS and MTU (see [app.hushwall.engine.Engine.networkChanged]).
 *
 * IPv6 counts as routed with an IPv6 default route and a global IPv6 address. IPv4 counts as routed with an IPv4
 * default route, and also on an IPv6-only network with NAT64 (464XLAT: the CLAT interface carries IPv4, but its
 * routes are on a stacked link these properties do not list); before Android 11 NAT64 cannot be seen, so IPv4 is
 * then never reported missing (a wrong "no route" would break every IPv4 connection; a wrong "route" only keeps
 * today's behaviour).
 */
internal fun networkInfoOf(lp: LinkProperties): NetworkInfo {
    fun hasDefaultRoute(v6: Boolean) = lp.routes.any { it.isDefaultRoute && (it.destination.address is Inet6Address) == v6 }
    val globalV6 = lp.linkAddresses.any { it.address.let { a -> a is Inet6Address && !a.isLinkLocalAddress && !a.isLoopbackAddress } }
    val nat64Known = Build.VERSION.SDK_INT >= Build.VERSION_CODES.R
    val ipv4 = hasDefaultRoute(false) || !nat64Known || lp.nat64Prefix != null
    val mtu = if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.Q) lp.mtu else 0
    return NetworkInfo(
        ipv4 = ipv4,
        ipv6 = hasDefaultRoute(true) && globalV6,
        dnsServers = lp.dnsServers.mapNotNull { it.hostAddress },
        privateDns = lp.privateDnsServerName,
        mtu = mtu,
    )
}
