package app.hushwall.servicetest

import android.app.ForegroundServiceStartNotAllowedException
import android.app.Notification
import android.net.ConnectivityManager
import android.net.Network
import android.net.VpnService
import android.os.ParcelFileDescriptor
import app.hushwall.hosttest.TestNative
import org.robolectric.annotation.Implementation
import org.robolectric.annotation.Implements
import org.robolectric.annotation.RealObject
import org.robolectric.shadows.ShadowConnectivityManager
import org.robolectric.shadows.ShadowParcelFileDescriptor
import org.robolectric.shadows.ShadowVpnService
import org.robolectric.shadow.api.Shadow
import java.io.File
import java.io.FileDescriptor
import java.util.concurrent.TimeUnit

/** The mark run.sh routes around the tun (what `VpnService.protect` achieves on a phone). */
const val MARK = 0x6877

/**
 * What the VPN framework does on a phone, done with Linux: each `establish()` creates a new tun interface (hwt1,
 * hwt2, … as Android creates tun0, tun1 …) with the addresses and default routes the app asked for, in this JVM's
 * network namespace (run.sh puts it in the phone namespace).
 */
object TunFactory {
    @Volatile var failEstablish = false
    @Volatile var lastName: String? = null
    /** The Builder's routes at each establish (excluded ones are `RTN_THROW`), newest last. */
    val configs = java.util.concurrent.CopyOnWriteArrayList<List<android.net.RouteInfo>>()
    private var next = 0

    @Synchronized
    fun establish(routes: List<android.net.RouteInfo>): ParcelFileDescriptor? {
        configs.add(routes)
        if (failEstablish) return null
        val name = "hwt${++next}"
        val fd = TestNative.openTun(name)
        sh("ip", "addr", "add", "10.111.222.1/32", "dev", name)
        sh("ip", "-6", "addr", "add", "fd00:6877:6c6c::1/128", "dev", name, "nodad")
        sh("ip", "link", "set", name, "up")
        sh("ip", "route", "replace", "default", "dev", name)
        sh("ip", "-6", "route", "replace", "default", "dev", name)
        lastName = name
        val pfd = ParcelFileDescriptor(FileDescriptor())
        Shadow.extract<TunPfdShadow>(pfd).tunFd = fd
        return pfd
    }

    /** Makes the running engine's tun fail under it (as a dying interface would). */
    fun killCurrent() {
        val name = lastName ?: error("no tun")
        sh("ip", "link", "del", name)
    }

    fun exists(name: String): Boolean = File("/sys/class/net/$name").exists()

    fun sh(vararg command: String) {
        val p = ProcessBuilder(*command).redirectErrorStream(true).start()
        check(p.waitFor(10, TimeUnit.SECONDS)) { "${command.joinToString(" ")} timed out" }
        val out = p.inputStream.bufferedReader().readText()
        check(p.exitValue() == 0) { "${command.joinToString(" ")}: $out" }
    }
}

/** `Builder.establish()` → [TunFactory]. The rest of the Builder (addresses, routes, excluded apps) is Android's. */
@Implements(VpnService.Builder::class)
class TunBuilderShadow {
    @RealObject lateinit var builder: VpnService.Builder

    /** Android asks its package manager service (absent here); the app's package manager says the same. */
    @Implementation
    fun addDisallowedApplication(packageName: String): VpnService.Builder {
        org.robolectric.RuntimeEnvironment.getApplication().packageManager.getApplicationInfo(packageName, 0)
        val config = config()
        @Suppress("UNCHECKED_CAST")
        val field = config.javaClass.getField("disallowedApplications")
        val list = (field.get(config) as MutableList<String>?) ?: ArrayList<String>().also { field.set(config, it) }
        list.add(packageName)
        return builder
    }

    private fun config(): Any {
        val field = VpnService.Builder::class.java.getDeclaredField("mConfig")
        field.isAccessible = true
        return field.get(builder)
    }

    @Implementation
    fun establish(): ParcelFileDescriptor? {
        val field = VpnService.Builder::class.java.getDeclaredField("mRoutes")
        field.isAccessible = true
        @Suppress("UNCHECKED_CAST")
        return TunFactory.establish(ArrayList(field.get(builder) as List<android.net.RouteInfo>))
    }
}

/** A ParcelFileDescriptor holding a real tun fd (Robolectric's own shadow stands files in with RandomAccessFile). */
@Implements(ParcelFileDescriptor::class)
class TunPfdShadow : ShadowParcelFileDescriptor() {
    @Volatile var tunFd = -1

    @Implementation
    override fun getFd(): Int = if (tunFd >= 0) tunFd else super.getFd()

    @Implementation
    override fun close() {
        if (tunFd >= 0) {
            TestNative.closeFd(tunFd)
            tunFd = -1
        } else {
            super.close()
        }
    }
}

/**
 * The VpnService's platform calls: `protect(fd)` = SO_MARK, `setUnderlyingNetworks` recorded, and a switch that
 * makes `startForeground` throw as Android 12+ does for a background start (the sticky restart after a kill).
 */
@Implements(VpnService::class)
class HostVpnServiceShadow : ShadowVpnService() {
    @Implementation
    fun protect(fd: Int): Boolean = TestNative.markSocket(fd, MARK)

    @Implementation
    fun setUnderlyingNetworks(networks: Array<Network>?): Boolean {
        underlying.add(networks?.toList())
        return true
    }

    @Implementation
    override fun startForeground(id: Int, notification: Notification) {
        refuse()
        super.startForeground(id, notification)
    }

    @Implementation
    override fun startForeground(id: Int, notification: Notification, type: Int) {
        refuse()
        super.startForeground(id, notification, type)
    }

    private fun refuse() {
        if (refuseForeground) {
            throw ForegroundServiceStartNotAllowedException("startForegroundService() not allowed due to mAllowStartForeground false")
        }
    }

    companion object {
        @Volatile @JvmStatic var refuseForeground = false
        @JvmStatic val underlying = java.util.concurrent.CopyOnWriteArrayList<List<Network>?>()
    }
}

/** `getConnectionOwnerUid`: every flow belongs to [ownerUid] (Android answers this for the active VPN). */
@Implements(ConnectivityManager::class)
class OwnerUidShadow : ShadowConnectivityManager() {
    @Implementation
    fun getConnectionOwnerUid(protocol: Int, local: java.net.InetSocketAddress, remote: java.net.InetSocketAddress): Int = ownerUid

    companion object {
        @Volatile @JvmStatic var ownerUid = -1
    }
}
