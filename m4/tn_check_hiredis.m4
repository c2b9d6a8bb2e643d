# TN_CHECK_HIREDIS: hiredis (libhiredis-dev)
AC_DEFUN([TN_CHECK_HIREDIS], [TN_PKG_REQUIRE([HIREDIS], [hiredis], [hiredis], [libhiredis-dev])])
