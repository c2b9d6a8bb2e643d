#!/bin/sh
# quota-warning.sh -- a warning mail to the user when a Dovecot quota root
# crosses a threshold: run by Dovecot's "script" service for quota_warning
# (the mailbox's root) and quota2_warning (the tenant's pool, backend
# "tenant"). docs/dovecot.md shows the settings.
#
#   service quota-warning {
#     executable = script /usr/local/bin/quota-warning.sh
#     user = vmail
#     unix_listener quota-warning { user = vmail }
#   }
#   plugin {
#     quota_warning = storage=95%% quota-warning mailbox 95 %u
#     quota2_warning = storage=95%% quota-warning pool 95 %u
#   }
#
# Arguments: [-c DOVECOT_CONF] SCOPE (mailbox | pool) PERCENT USER; the
# script service runs it with an empty environment, so a configuration
# other than /etc/dovecot/dovecot.conf is given on the executable line
# (executable = script /usr/local/bin/quota-warning.sh -c FILE). The mail
# is delivered with dovecot-lda into USER's INBOX, quotas not enforced
# for it (a warning must reach a full mailbox); it runs as the service's
# user, which must be able to use auth-userdb (unix_listener auth-userdb
# { user = vmail }) and write Dovecot's log. The sender is
# postmaster@<the user's domain>.
set -eu

conf=/etc/dovecot/dovecot.conf
if [ "${1:-}" = "-c" ]; then
	conf=${2:?configuration file}
	shift 2
fi
scope=${1:?scope}
percent=${2:?percent}
user=${3:?user}
domain=${user##*@}
from=postmaster@$domain
lda=/usr/lib/dovecot/dovecot-lda

case "$scope" in
mailbox) what="Your mailbox" ;;
pool) what="The mail storage shared by your organisation" ;;
*) echo "quota-warning.sh: unknown scope '$scope'" >&2; exit 64 ;;
esac
case "$percent" in
''|*[!0-9]*) echo "quota-warning.sh: bad percent '$percent'" >&2; exit 64 ;;
esac

"$lda" -c "$conf" -d "$user" -f "$from" \
	-o "plugin/quota=count:User quota:noenforcing" \
	-o "plugin/quota2=tenant:Tenant pool:noenforcing" <<MAIL
From: $from
To: $user
Subject: $what is $percent% full
Auto-Submitted: auto-generated
Content-Type: text/plain; charset=us-ascii

$what is $percent% full. When it is full, new mail to you is refused
and kept by the sender's server for a while, then returned.

Delete mail you no longer need (and empty the Trash), or ask your
administrator for more space.
MAIL
