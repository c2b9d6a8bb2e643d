## lmtp-router/: tn-lmtp-router (LMTP router issue). Its unit tests, man
## pages, docs and integration tests are listed here too, so that this
## fragment is the only build file the router's work touches.
# (lmtp-router/README.md: docs/local.mk)
