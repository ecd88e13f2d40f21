#!/usr/bin/env bash
# Render the environment-dependent bits of the Asterisk config, then run Asterisk in the
# foreground.
#   AST_NODE_NAME   node name (User-Agent, dialplan ${NODE_NAME}); default: hostname
#   KAMAILIO_ADDR   Kamailio's SIP ip:port; INVITEs from exactly there are trusted
#   DB_HOST DB_PORT DB_NAME DB_USER DB_PASSWORD   shared realtime database
#   AMI_USER AMI_SECRET AMI_PERMIT   the AMI account regmirror audits with (manager.conf)
set -euo pipefail
: "${AST_NODE_NAME:=$(hostname)}"
: "${KAMAILIO_ADDR:=10.77.0.20:5060}"
: "${DB_HOST:=mariadb}" "${DB_PORT:=3306}" "${DB_NAME:=regmirror}"
: "${DB_USER:=asterisk}" "${DB_PASSWORD:=asterisk-demo}"
: "${AMI_USER:=regmirror}" "${AMI_SECRET:=regmirror-ami-demo}" "${AMI_PERMIT:=10.77.0.0/255.255.255.0}"
export AST_NODE_NAME

etc=/etc/asterisk
cat > "$etc/pjsip_node.conf" <<CONF
user_agent = Asterisk ($AST_NODE_NAME)
CONF
cat > "$etc/pjsip_kamailio.conf" <<CONF
[kamailio]
type = aor
contact = sip:$KAMAILIO_ADDR

[kamailio]
type = identify
endpoint = kamailio
match = $KAMAILIO_ADDR
CONF
(umask 077; cat > "$etc/res_odbc_credentials.conf" <<CONF
username => $DB_USER
password => $DB_PASSWORD
CONF
)
# PJSIPShowContacts is a `system` read; DBDel (removing a deleted user's contact) a `system` write.
(umask 077; cat > "$etc/manager_users.conf" <<CONF
[$AMI_USER]
secret = $AMI_SECRET
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
permit = $AMI_PERMIT
read = system
write = system
CONF
)
sed -i -e "s/^SERVER = .*/SERVER = $DB_HOST/" -e "s/^PORT = .*/PORT = $DB_PORT/" \
       -e "s/^DATABASE = .*/DATABASE = $DB_NAME/" /etc/odbc.ini
chown asterisk:asterisk "$etc"/*.conf

# Debian's package does not ship the run directory; without it `asterisk -rx` cannot connect.
mkdir -p /var/run/asterisk
chown asterisk:asterisk /var/run/asterisk

exec /usr/sbin/asterisk -f -n -U asterisk -G asterisk "$@"
