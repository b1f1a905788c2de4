package app.hushwall.vpn

import java.math.BigInteger
import java.net.InetAddress

/** An IP prefix: [address] (4 or 16 bytes, host bits zero) and [length] in bits. */
class Prefix(address: ByteArray, val length: Int) {
    /** The network address, host bits cleared. */
    val address: ByteArray = mask(address, length)
    val ipv6: Boolean get() = address.size == 16

    init {
        require(address.size == 4 || address.size == 16) { "address of ${address.size} bytes" }
        require(length in 0..address.size * 8) { "prefix length $length" }
    }

    /** The address as Android's `Builder.addRoute` takes it. */
    val host: String get() = InetAddress.getByAddress(address).hostAddress ?: ""

    override fun equals(other: Any?): Boolean =
        other is Prefix && other.length == length && other.address.contentEquals(address)

    override fun hashCode(): Int = address.contentHashCode() * 31 + length

    override fun toString(): String = "$host/$length"

    companion object {
        /** Parses `a.b.c.d/n` or `x::y/n`. */
        fun parse(text: String): Prefix {
            val slash = text.indexOf('/')
            require(slash > 0) { "no prefix length in $text" }
            return Prefix(InetAddress.getByName(text.substring(0, slash)).address, text.substring(slash + 1).toInt())
        }

        private fun mask(address: ByteArray, length: Int): ByteArray {
            val out = address.copyOf()
            for (i in out.indices) {
                val bits = (length - i * 8).coerceIn(0, 8)
                out[i] = (out[i].toInt() and (0xff shl (8 - bits))).toByte()
            }
            return out
        }
    }
}

/**
 * Route arithmetic for the "Allow LAN devices" setting: Android 13+ can exclude prefixes from a VPN
 * (`Builder.excludeRoute`); before that the VPN must route the complement instead.
 */
object Routes {
    /** Multicast, limited broadcast: LAN discovery (mDNS, SSDP) and casting. */
    val LAN_ALWAYS: List<Prefix> = listOf(Prefix.parse("224.0.0.0/4"), Prefix.parse("255.255.255.255/32"))

    /**
     * The smallest set of prefixes that covers all of IPv4 (or IPv6 with [ipv6]) except [excluded] (prefixes of
     * the other family are ignored). Sorted by address; at most 32 (128) prefixes per excluded prefix.
     */
    fun complement(excluded: List<Prefix>, ipv6: Boolean): List<Prefix> {
        val bits = if (ipv6) 128 else 32
        val ex = excluded.filter { it.ipv6 == ipv6 }
        val out = ArrayList<Prefix>()
        fun walk(base: BigInteger, length: Int) {
            val size = BigInteger.ONE.shiftLeft(bits - length)
            val end = base + size
            val overlapping = ex.filter { e ->
                val eBase = BigInteger(1, e.address)
                val eEnd = eBase + BigInteger.ONE.shiftLeft(bits - e.length)
                eBase < end && base < eEnd
            }
            when {
                overlapping.isEmpty() -> out.add(Prefix(toBytes(base, bits / 8), length))
                overlapping.any { it.length <= length } -> Unit // wholly excluded
                else -> {
                    walk(base, length + 1)
                    walk(base + size.shiftRight(1), length + 1)
                }
            }
        }
        walk(BigInteger.ZERO, 0)
        return out
    }

    private fun toBytes(value: BigInteger, size: Int): ByteArray {
        val raw = value.toByteArray()
        val out = ByteArray(size)
        val n = minOf(raw.size, size)
        System.arraycopy(raw, raw.size - n, out, size - n, n)
        return out
    }
}
