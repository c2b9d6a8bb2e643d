# TN_CHECK_CRYPT: libcrypt (libxcrypt, libcrypt-dev): crypt_r for SHA512-CRYPT password hashes
AC_DEFUN([TN_CHECK_CRYPT], [TN_PKG_REQUIRE([CRYPT], [libcrypt], [libcrypt], [libcrypt-dev])])
