# TN_CHECK_MICROHTTPD: libmicrohttpd (libmicrohttpd-dev)
AC_DEFUN([TN_CHECK_MICROHTTPD], [TN_PKG_REQUIRE([MICROHTTPD], [libmicrohttpd], [libmicrohttpd], [libmicrohttpd-dev])])
