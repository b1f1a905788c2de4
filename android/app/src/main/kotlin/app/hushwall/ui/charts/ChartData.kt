package app.hushwall.ui.charts

import app.hushwall.data.DayBlocks
import java.util.Calendar
import java.util.TimeZone

/** One coloured part of a stacked bar chart: a name and a value per day; [isOther] for "all the rest". */
class Series(val label: String, val values: IntArray, val isOther: Boolean = false) {
    val total: Int get() = values.sum()
}

/** Blocks per day, oldest day first (`dayStarts` are local midnights), split into [series] that stack to each day's total. */
class DailyStack(val dayStarts: LongArray, val series: List<Series>) {
    val days: Int get() = dayStarts.size
    val total: Int get() = series.sumOf { it.total }

    fun dayTotal(day: Int): Int = series.sumOf { it.values[day] }

    /** The day with most blocks (the latest of equal ones), or -1 when there are none. */
    val busiestDay: Int
        get() {
            var best = -1
            var most = 0
            for (d in 0 until days) {
                val n = dayTotal(d)
                if (n > 0 && n >= most) {
                    best = d
                    most = n
                }
            }
            return best
        }
}

/** The charts' data, from the store's rows: pure, so it is tested on the JVM. */
object ChartData {
    /** Days shown: the log keeps 30. */
    const val DAYS = 30
    /** Apps with their own colour on Home's chart; the rest are "other". */
    const val TOP_APPS = 4
    /** Hosts on an app's page. */
    const val TOP_HOSTS = 10

    /** The local midnights starting the [days] days that end today, then tomorrow's midnight ([days] + 1 values). */
    fun dayBoundaries(now: Long, days: Int = DAYS, zone: TimeZone = TimeZone.getDefault()): LongArray {
        val cal = Calendar.getInstance(zone)
        cal.timeInMillis = now
        cal.set(Calendar.HOUR_OF_DAY, 0)
        cal.set(Calendar.MINUTE, 0)
        cal.set(Calendar.SECOND, 0)
        cal.set(Calendar.MILLISECOND, 0)
        cal.add(Calendar.DAY_OF_YEAR, -(days - 1))
        val out = LongArray(days + 1)
        for (i in 0..days) {
            out[i] = cal.timeInMillis
            cal.add(Calendar.DAY_OF_YEAR, 1)
        }
        return out
    }

    /**
     * Stacks per-day, per-UID blocks over the days of [boundaries] into the [top] UIDs with most blocks in the whole
     * period (ties: the lower UID) and one [otherLabel] series for the rest (left out when empty). Days without rows
     * are zero; rows outside the period are ignored.
     */
    fun stackByApp(rows: List<DayBlocks>, boundaries: LongArray, top: Int, label: (Int) -> String, otherLabel: String): DailyStack {
        val days = (boundaries.size - 1).coerceAtLeast(0)
        val inPeriod = rows.filter { it.day in 0 until days }
        val totals = HashMap<Int, Long>()
        for (r in inPeriod) totals[r.uid] = (totals[r.uid] ?: 0L) + r.blocks
        val topUids = totals.entries
            .sortedWith(compareByDescending<Map.Entry<Int, Long>> { it.value }.thenBy { it.key })
            .take(top)
            .map { it.key }
        val values = topUids.associateWith { IntArray(days) }
        val other = IntArray(days)
        for (r in inPeriod) {
            val v = values[r.uid] ?: other
            v[r.day] += r.blocks
        }
        val series = topUids.map { Series(label(it), values.getValue(it)) }
        return DailyStack(boundaries.copyOf(days), if (other.any { it > 0 }) series + Series(otherLabel, other, isOther = true) else series)
    }

    /** The top of an axis from 0 that holds [max]: 1, 2 or 5 × a power of ten (at least 1). */
    fun axisMax(max: Int): Int {
        var step = 1L
        while (true) {
            for (m in intArrayOf(1, 2, 5)) if (step * m >= max) return (step * m).coerceAtMost(Int.MAX_VALUE.toLong()).toInt()
            step *= 10
        }
    }
}
