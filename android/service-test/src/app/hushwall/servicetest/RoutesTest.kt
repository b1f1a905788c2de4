package app.hushwall.servicetest

import app.hushwall.vpn.Prefix
import app.hushwall.vpn.Routes
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Test
import java.math.BigInteger

/** The complement routes the VPN uses before Android 13 (no `excludeRoute`) when "Allow LAN devices" is on. */
class RoutesTest {
    private fun size(p: Prefix, bits: Int) = BigInteger.ONE.shiftLeft(bits - p.length)
    private fun start(p: Prefix) = BigInteger(1, p.address)
    private fun overlaps(a: Prefix, b: Prefix, bits: Int) =
        start(a) < start(b) + size(b, bits) && start(b) < start(a) + size(a, bits)

    /** Complement and exclusions tile the whole space: no gap, no overlap. */
    private fun assertTiles(excluded: List<Prefix>, ipv6: Boolean) {
        val bits = if (ipv6) 128 else 32
        val routes = Routes.complement(excluded, ipv6)
        val own = excluded.filter { it.ipv6 == ipv6 }
        for (r in routes) for (e in own) assertFalse("$r overlaps $e", overlaps(r, e, bits))
        for (i in routes.indices) for (j in i + 1 until routes.size) assertFalse(overlaps(routes[i], routes[j], bits))
        val total = (routes + own).fold(BigInteger.ZERO) { acc, p -> acc + size(p, bits) }
        assertEquals(BigInteger.ONE.shiftLeft(bits), total)
    }

    @Test
    fun `nothing excluded is the default route`() {
        assertEquals(listOf(Prefix.parse("0.0.0.0/0")), Routes.complement(emptyList(), ipv6 = false))
        assertEquals(listOf(Prefix.parse("::/0")), Routes.complement(emptyList(), ipv6 = true))
    }

    @Test
    fun `multicast, broadcast and a home subnet are left out of IPv4`() {
        val excluded = Routes.LAN_ALWAYS + Prefix.parse("192.168.1.0/24")
        val routes = Routes.complement(excluded, ipv6 = false)
        assertTiles(excluded, ipv6 = false)
        // 224/4 costs 3 prefixes at the top (0/1, 128/2, 192/3 … ), the /24 and /32 one per bit.
        assert(routes.contains(Prefix.parse("0.0.0.0/1"))) { routes.toString() }
        assert(!routes.any { it.toString().startsWith("224.") }) { routes.toString() }
        assertEquals(Prefix.parse("240.0.0.0/5"), routes.first { start(it) >= start(Prefix.parse("240.0.0.0/4")) })
    }

    @Test
    fun `IPv6 subnets are left out and IPv4 ones ignored there`() {
        val excluded = listOf(Prefix.parse("fd12:3456:789a:1::/64"), Prefix.parse("10.0.0.0/8"))
        assertEquals(64, Routes.complement(excluded, ipv6 = true).size)
        assertTiles(excluded, ipv6 = true)
        assertTiles(excluded, ipv6 = false)
    }

    @Test
    fun `overlapping and host-bit prefixes`() {
        val wide = Prefix.parse("10.1.2.3/8")
        assertEquals("10.0.0.0/8", wide.toString())
        val inside = Prefix.parse("10.200.0.0/16")
        assertEquals(Routes.complement(listOf(wide), ipv6 = false), Routes.complement(listOf(wide, inside), ipv6 = false))
        assertTiles(listOf(Prefix.parse("0.0.0.0/32")), ipv6 = false)
    }
}
