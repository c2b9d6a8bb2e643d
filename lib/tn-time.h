/*++
 * NAME
 *	tn-time 3h
 * SUMMARY
 *	monotonic clock and deadlines
 * DESCRIPTION
 *	Every wait in tenantmail is bounded by a deadline: an absolute
 *	point on the monotonic clock, in milliseconds. Layers below pass
 *	the deadline down and shrink their own timeouts to what is left.
 *--*/
#ifndef TN_TIME_H
#define TN_TIME_H

#include <stdint.h>
#include <time.h>

typedef int64_t tn_msec_t;

/* Monotonic milliseconds (CLOCK_MONOTONIC). */
tn_msec_t tn_time_now_ms(void);
/* Monotonic microseconds, for latency measurements. */
int64_t tn_time_now_us(void);
/* Wall clock seconds (for records and logs). */
int64_t tn_time_wall(void);
/* Milliseconds left until deadline (0 if passed). */
tn_msec_t tn_time_left_ms(tn_msec_t deadline);
/* Absolute CLOCK_REALTIME timespec for pthread_cond_timedwait. */
void tn_time_deadline_timespec(tn_msec_t deadline, struct timespec *ts_r);

#endif
