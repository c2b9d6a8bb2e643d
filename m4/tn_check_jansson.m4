# TN_CHECK_JANSSON: jansson (libjansson-dev)
AC_DEFUN([TN_CHECK_JANSSON], [TN_PKG_REQUIRE([JANSSON], [jansson], [jansson], [libjansson-dev])])
