# TN_CHECK_LIBEVENT: libevent 2.1 with its pthreads glue (libevent-dev)
AC_DEFUN([TN_CHECK_LIBEVENT], [TN_PKG_REQUIRE([LIBEVENT], [libevent >= 2.1 libevent_pthreads], [libevent 2.1], [libevent-dev])])
