/* A minimal passdb driver "tntest" used by test_dovecot_harness.py to prove
   that an auth module outside /usr/lib/dovecot/modules/auth is loaded
   through tndovecot's private mount namespace: password "tntest" only. */
#include "auth-common.h"
#include "passdb.h"

void authdb_tntest_init(void);
void authdb_tntest_deinit(void);
extern const char *authdb_tntest_plugin_version;
const char *authdb_tntest_plugin_version = DOVECOT_ABI_VERSION;

static void tntest_verify_plain(struct auth_request *request,
				const char *password,
				verify_plain_callback_t *callback)
{
	e_info(authdb_event(request), "tntest driver asked");
	callback(strcmp(password, "tntest") == 0 ? PASSDB_RESULT_OK :
		 PASSDB_RESULT_PASSWORD_MISMATCH, request);
}

static struct passdb_module_interface passdb_tntest = {
	.name = "tntest",
	.verify_plain = tntest_verify_plain,
};

void authdb_tntest_init(void)
{
	passdb_register_module(&passdb_tntest);
}

void authdb_tntest_deinit(void)
{
	passdb_unregister_module(&passdb_tntest);
}
