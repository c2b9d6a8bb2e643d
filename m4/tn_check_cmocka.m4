# TN_CHECK_CMOCKA: cmocka (libcmocka-dev)
AC_DEFUN([TN_CHECK_CMOCKA], [TN_PKG_REQUIRE([CMOCKA], [cmocka], [cmocka], [libcmocka-dev])])
