package app.hushwall.engine

/**
 * What the engine needs from the platform, implemented by the `VpnService`. Called on the engine thread
 * (attached to the JVM once, as a daemon): [protect] once per upstream socket, [uidOf] once per event whose
 * flow is not in the engine's cache. Never once per packet. Keep both fast and non-blocking; an exception
 * thrown here is logged and counts as `false` / unknown.
 */
interface Callbacks {
    /**
     * Keeps socket [fd] out of the tunnel before it connects: `VpnService.protect(fd)`. Return false if that
     * fails; the engine then fails the connection rather than let it loop into the tunnel.
     */
    fun protect(fd: Int): Boolean

    /**
     * The UID of the app owning the flow, or -1 if unknown. [protocol] is [Engine.IPPROTO_TCP] or
     * [Engine.IPPROTO_UDP]; addresses are 4 or 16 raw bytes; src is the phone side. On Android 10+:
     * `connectivityManager.getConnectionOwnerUid(protocol, InetSocketAddress(InetAddress.getByAddress(srcAddr),
     * srcPort), InetSocketAddress(InetAddress.getByAddress(dstAddr), dstPort))`. On Android 9 configure
     * [UidSource.PROC_NET] instead and this is not called.
     */
    fun uidOf(protocol: Int, srcAddr: ByteArray, srcPort: Int, dstAddr: ByteArray, dstPort: Int): Int
}
