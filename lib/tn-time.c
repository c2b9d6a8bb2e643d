/*++
 * NAME
 *	tn-time 3
 * SUMMARY
 *	monotonic clock and deadlines (see tn-time.h)
 *--*/
#include "tn-time.h"

tn_msec_t tn_time_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (tn_msec_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tn_time_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t tn_time_wall(void)
{
	return (int64_t)time(NULL);
}

tn_msec_t tn_time_left_ms(tn_msec_t deadline)
{
	tn_msec_t left = deadline - tn_time_now_ms();

	return left > 0 ? left : 0;
}

void tn_time_deadline_timespec(tn_msec_t deadline, struct timespec *ts_r)
{
	tn_msec_t left = tn_time_left_ms(deadline);

	clock_gettime(CLOCK_REALTIME, ts_r);
	ts_r->tv_sec += left / 1000;
	ts_r->tv_nsec += (left % 1000) * 1000000;
	if (ts_r->tv_nsec >= 1000000000) {
		ts_r->tv_sec++;
		ts_r->tv_nsec -= 1000000000;
	}
}
