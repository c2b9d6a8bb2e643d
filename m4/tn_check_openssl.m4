# TN_CHECK_OPENSSL: OpenSSL 3 (libssl-dev)
AC_DEFUN([TN_CHECK_OPENSSL], [TN_PKG_REQUIRE([OPENSSL], [libssl libcrypto >= 3.0], [OpenSSL 3], [libssl-dev])])
