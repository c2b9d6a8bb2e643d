# TN_CHECK_CURL: libcurl (libcurl4-openssl-dev)
AC_DEFUN([TN_CHECK_CURL], [TN_PKG_REQUIRE([CURL], [libcurl], [libcurl], [libcurl4-openssl-dev])])
