package app.hushwall.screenshots

import app.hushwall.data.DayBlocks
import app.hushwall.ui.charts.ChartData
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import java.util.Calendar
import java.util.TimeZone

/** The charts' aggregation (ui/charts/ChartData.kt): days, stacking, top apps and "other". Plain JVM. */
class ChartDataTest {
    private val zone = TimeZone.getTimeZone("Europe/Berlin")
    private val boundaries = LongArray(8) { it * DAY }

    @Test
    fun daysAreLocalMidnightsEvenAcrossDaylightSaving() {
        // 25 Oct 2026 is 25 hours long in Berlin (summer time ends).
        val now = Calendar.getInstance(zone).apply { set(2026, Calendar.OCTOBER, 27, 15, 30) }.timeInMillis
        val days = ChartData.dayBoundaries(now, 30, zone)
        assertEquals(31, days.size)
        for (d in days) {
            val c = Calendar.getInstance(zone).apply { timeInMillis = d }
            assertEquals(0, c.get(Calendar.HOUR_OF_DAY) + c.get(Calendar.MINUTE) + c.get(Calendar.SECOND) + c.get(Calendar.MILLISECOND))
        }
        assertTrue("today is the last day", now >= days[29] && now < days[30])
        val lengths = (0 until 30).map { (days[it + 1] - days[it]) / 3_600_000L }
        assertEquals(1, lengths.count { it == 25L })
        assertEquals(29, lengths.count { it == 24L })
    }

    @Test
    fun aDayWithoutBlocksIsZero() {
        val rows = listOf(DayBlocks(0, 1, 3), DayBlocks(2, 1, 5), DayBlocks(6, 2, 1))
        val stack = ChartData.stackByApp(rows, boundaries, 4, { "app $it" }, "other")
        assertEquals(7, stack.days)
        assertArrayEquals(intArrayOf(3, 0, 5, 0, 0, 0, 0), stack.series[0].values)
        for (d in listOf(1, 3, 4, 5)) assertEquals(0, stack.dayTotal(d))
        assertEquals(9, stack.total)
        assertEquals(2, stack.busiestDay)
    }

    @Test
    fun topAppsThenOtherStackToTheDayTotal() {
        // Six apps: 100 … 105 with totals 60, 50, 40, 30 (top four), 20 and 10 (other).
        val rows = ArrayList<DayBlocks>()
        val totals = mapOf(100 to 60, 101 to 50, 102 to 40, 103 to 30, 104 to 20, 105 to 10)
        for ((uid, total) in totals) {
            rows.add(DayBlocks(1, uid, total / 2))
            rows.add(DayBlocks(4, uid, total - total / 2))
        }
        rows.add(DayBlocks(-1, 105, 1000)) // outside the period: ignored
        rows.add(DayBlocks(7, 104, 1000))
        val stack = ChartData.stackByApp(rows, boundaries, 4, { "app $it" }, "other")
        assertEquals(listOf("app 100", "app 101", "app 102", "app 103", "other"), stack.series.map { it.label })
        assertEquals(listOf(60, 50, 40, 30, 30), stack.series.map { it.total })
        assertTrue(stack.series.last().isOther)
        assertFalse(stack.series.first().isOther)
        for (d in 0 until stack.days) {
            val expected = rows.filter { it.day == d }.sumOf { it.blocks }
            assertEquals("day $d", expected, stack.series.sumOf { it.values[d] })
            assertEquals("day $d", expected, stack.dayTotal(d))
        }
        assertEquals(210, stack.total)
    }

    @Test
    fun noOtherWhenFewAppsAndTiesGoToTheLowerUid() {
        val rows = listOf(DayBlocks(0, 7, 5), DayBlocks(1, 3, 5), DayBlocks(2, 9, 6))
        val stack = ChartData.stackByApp(rows, boundaries, 2, { "app $it" }, "other")
        assertEquals(listOf("app 9", "app 3", "other"), stack.series.map { it.label })
        val few = ChartData.stackByApp(rows, boundaries, 4, { "app $it" }, "other")
        assertEquals(listOf("app 9", "app 3", "app 7"), few.series.map { it.label })
        val none = ChartData.stackByApp(emptyList(), boundaries, 4, { "app $it" }, "other")
        assertTrue(none.series.isEmpty())
        assertEquals(-1, none.busiestDay)
    }

    @Test
    fun axisTopsAreRound() {
        assertEquals(listOf(1, 1, 2, 5, 5, 10, 20, 50, 100, 200), listOf(0, 1, 2, 3, 5, 6, 11, 21, 51, 101).map { ChartData.axisMax(it) })
    }

    private companion object {
        const val DAY = 86_400_000L
    }
}
